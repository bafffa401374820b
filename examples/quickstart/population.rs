//! The app's data before the day starts: a catalogue of practices, users across the
//! three tiers, and each user's first steps (an assessment, a goal, a few sessions).

use std::collections::BTreeMap;
use std::sync::Arc;

use kasama::prelude::*;

use crate::rng::Rng;

type BoxError = Box<dyn std::error::Error>;

/// Six practices, created by the service; their ids.
pub(crate) async fn catalogue(repo: &Arc<dyn Repository>) -> Result<Vec<PracticeId>, BoxError> {
    let mut practices = Vec::new();
    for (i, (title, cat, d)) in [
        (
            "Active listening",
            "communication",
            DifficultyLevel::Beginner,
        ),
        (
            "Breathing together",
            "mindfulness",
            DifficultyLevel::Beginner,
        ),
        (
            "Appreciation ritual",
            "gratitude",
            DifficultyLevel::Beginner,
        ),
        (
            "Fair fighting rules",
            "conflict",
            DifficultyLevel::Intermediate,
        ),
        (
            "Weekly check-in",
            "communication",
            DifficultyLevel::Intermediate,
        ),
        ("Repair attempts", "conflict", DifficultyLevel::Advanced),
    ]
    .into_iter()
    .enumerate()
    {
        practices.push(
            repo.create_practice(
                Actor::Service,
                NewPractice {
                    title: title.into(),
                    description: format!("{title}: a {cat} practice for couples"),
                    category: cat.into(),
                    difficulty: d,
                    tags: vec![cat.into()],
                    duration_minutes: 10 + 5 * i as i32,
                },
            )
            .await?
            .id,
        );
    }
    Ok(practices)
}

/// The users and their tiers.
pub(crate) type Users = Vec<(UserId, SubscriptionTier)>;

/// `n` users with profiles: 70 % free, 25 % premium, 5 % enterprise. Their ids are
/// seeded in memory (the simulated backends draw from the request's content, user
/// included); fresh ones on PostgreSQL (`fresh_ids`), where earlier runs' users remain.
/// Also how many users each tier has.
pub(crate) async fn users(
    repo: &Arc<dyn Repository>,
    rng: &mut Rng,
    n: usize,
    fresh_ids: bool,
) -> Result<(Users, BTreeMap<&'static str, usize>), BoxError> {
    let mut users = Vec::new();
    let mut by_tier: BTreeMap<&'static str, usize> = BTreeMap::new();
    for i in 0..n {
        let tier = match rng.below(100) {
            0..70 => SubscriptionTier::Free,
            70..95 => SubscriptionTier::Premium,
            _ => SubscriptionTier::Enterprise,
        };
        let seeded = UserId(uuid::Uuid::from_u64_pair(rng.next(), rng.next()));
        let id = if fresh_ids { UserId::new() } else { seeded };
        let mut p = NewProfile::new(id, format!("user{i}-{id}@example.com"), format!("User {i}"));
        p.subscription_tier = tier;
        repo.create_profile(Actor::Service, p).await?;
        *by_tier.entry(tier.as_str()).or_default() += 1;
        users.push((id, tier));
    }
    Ok((users, by_tier))
}

/// Each user takes the attachment-style assessment, sets a goal and logs one to three
/// practice sessions.
pub(crate) async fn first_steps(
    repo: &Arc<dyn Repository>,
    rng: &mut Rng,
    users: &Users,
    practices: &[PracticeId],
) -> Result<(), BoxError> {
    for (u, _) in users {
        let me = Actor::User(*u);
        let asmt = repo
            .create_assessment(
                me,
                NewAssessment {
                    user_id: *u,
                    assessment_type: "attachment_style".into(),
                    title: "Attachment style".into(),
                    created_at: None,
                },
            )
            .await?;
        let answers = (0..5)
            .map(|q| NewAnswer {
                question_id: format!("q{q}"),
                answer: serde_json::json!(q),
                score: Some(20 * q),
            })
            .collect();
        repo.answer_assessment(me, asmt.id, answers).await?;
        repo.complete_assessment(
            me,
            asmt.id,
            40 + rng.below(60) as i32,
            serde_json::json!({"style": "secure"}),
        )
        .await?;
        repo.create_goal(
            me,
            NewGoal {
                user_id: *u,
                title: "Weekly check-ins".into(),
                description: String::new(),
                category: "communication".into(),
                target_date: None,
                milestones: vec!["first".into()],
            },
        )
        .await?;
        for _ in 0..1 + rng.below(3) {
            let mut e = NewProgress::practice(
                *u,
                practices[rng.below(practices.len())],
                5 + rng.below(25) as i32,
            );
            e.rating = Some(1 + rng.below(5) as i16);
            e.mood_before = Some(3 + rng.below(4) as i16);
            e.mood_after = Some(5 + rng.below(5) as i16);
            repo.log_progress(me, e).await?;
        }
    }
    Ok(())
}
