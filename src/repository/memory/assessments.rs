//! Assessments and their answers.

use serde_json::Value;

use super::{InMemoryRepository, micros, newest_first, not_found, now, page};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::feed::{ChangeOp as Op, ChangeTable as T};
use crate::repository::checks;

pub(super) fn create_assessment(
    repo: &InMemoryRepository,
    actor: Actor,
    new: NewAssessment,
) -> Result<Assessment> {
    new.validate()?;
    actor.check_write(new.user_id)?;
    let mut s = repo.write();
    s.require_profile(new.user_id)?;
    let t = now();
    let a = Assessment {
        id: AssessmentId::new(),
        user_id: new.user_id,
        assessment_type: new.assessment_type,
        title: new.title,
        completed: false,
        completed_at: None,
        score: None,
        insights: Value::Null,
        created_at: new.created_at.map_or(t, micros),
        updated_at: t,
    };
    s.assessments.insert(a.id, a.clone());
    repo.emit(T::Assessments, Op::Insert, a.id.0, a.user_id);
    Ok(a)
}

pub(super) fn get_assessment(
    repo: &InMemoryRepository,
    actor: Actor,
    id: AssessmentId,
) -> Result<Assessment> {
    let s = repo.read();
    match s.assessments.get(&id) {
        Some(a) if actor.may_access(a.user_id) => Ok(a.clone()),
        _ => Err(not_found("assessment")),
    }
}

pub(super) fn answer_assessment(
    repo: &InMemoryRepository,
    actor: Actor,
    id: AssessmentId,
    answers: Vec<NewAnswer>,
) -> Result<Vec<AssessmentAnswer>> {
    checks::answers(&answers)?;
    let mut s = repo.write();
    let a = s.assessment_mut(actor, id)?;
    if a.completed {
        return Err(Error::invalid("assessment", "already completed"));
    }
    let user = a.user_id;
    let t = now();
    let stored = s.answers.entry(id).or_default();
    let mut out = Vec::with_capacity(answers.len());
    for n in answers {
        let row = AssessmentAnswer {
            id: AnswerId::new(),
            assessment_id: id,
            user_id: user,
            question_id: n.question_id,
            answer: n.answer,
            score: n.score,
            created_at: t,
        };
        match stored.iter_mut().find(|x| x.question_id == row.question_id) {
            Some(old) => {
                old.answer = row.answer.clone();
                old.score = row.score;
                old.created_at = t;
                out.push(old.clone());
            }
            None => {
                stored.push(row.clone());
                out.push(row);
            }
        }
    }
    Ok(out)
}

pub(super) fn list_answers(
    repo: &InMemoryRepository,
    actor: Actor,
    id: AssessmentId,
) -> Result<Vec<AssessmentAnswer>> {
    let s = repo.read();
    match s.assessments.get(&id) {
        Some(a) if actor.may_access(a.user_id) => {}
        _ => return Err(not_found("assessment")),
    }
    let mut v = s.answers.get(&id).cloned().unwrap_or_default();
    v.sort_by(|a, b| a.question_id.cmp(&b.question_id));
    Ok(v)
}

pub(super) fn complete_assessment(
    repo: &InMemoryRepository,
    actor: Actor,
    id: AssessmentId,
    score: i32,
    insights: Value,
) -> Result<Assessment> {
    checks::complete_score(score, &insights)?;
    let mut s = repo.write();
    let a = s.assessment_mut(actor, id)?;
    if a.completed {
        return Err(Error::invalid("assessment", "already completed"));
    }
    let t = now();
    a.completed = true;
    a.completed_at = Some(t);
    a.score = Some(score);
    a.insights = insights;
    a.updated_at = t;
    let a = a.clone();
    repo.emit(T::Assessments, Op::Update, a.id.0, a.user_id);
    Ok(a)
}

pub(super) fn list_assessments(
    repo: &InMemoryRepository,
    actor: Actor,
    user: UserId,
    f: &AssessmentFilter,
    p: Page,
) -> Result<Vec<Assessment>> {
    p.validate()?;
    checks::list_owner(actor, user)?;
    if let Some(t) = &f.assessment_type {
        crate::domain::assessment_type(t)?;
    }
    let s = repo.read();
    let mut v: Vec<Assessment> = s
        .assessments
        .values()
        .filter(|a| a.user_id == user)
        .filter(|a| {
            f.assessment_type
                .as_ref()
                .is_none_or(|t| *t == a.assessment_type)
        })
        .filter(|a| f.completed.is_none_or(|c| c == a.completed))
        .filter(|a| f.from.is_none_or(|t| a.created_at >= t))
        .filter(|a| f.to.is_none_or(|t| a.created_at < t))
        .cloned()
        .collect();
    newest_first(&mut v, |a| (a.created_at, a.id.0));
    Ok(page(v.into_iter(), p))
}
