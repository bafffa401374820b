//! Each agent kind gets its data; the same data gives the same context and
//! fingerprint, changed data another.

use chrono::{Duration, Utc};
use kasama::ContextProvider;
use kasama::agent::prompt::canonical_json;
use kasama::prelude::*;
use serde_json::{Value, json};

use crate::common::fixtures::{new_assessment, new_goal, new_learning_path};
use crate::{Repo, fingerprint, practice, question, session, user};

pub(crate) async fn each_agent_gets_its_data(repo: Repo) {
    let a = user(&repo, "Alex").await;
    let ua = Actor::User(a);
    let listen = practice(&repo, "Active listening", "communication").await;
    let thanks = practice(&repo, "Gratitude journal", "appreciation").await;
    let hour_ago = Some(Utc::now() - Duration::hours(1));
    let older = repo
        .create_assessment(
            ua,
            new_assessment(
                a,
                "love_language",
                "Love languages",
                Some(Utc::now() - Duration::hours(2)),
            ),
        )
        .await
        .unwrap();
    let latest = repo
        .create_assessment(
            ua,
            new_assessment(a, "attachment_style", "Attachment", hour_ago),
        )
        .await
        .unwrap();
    repo.answer_assessment(
        ua,
        latest.id,
        vec![
            NewAnswer {
                question_id: "q2".into(),
                answer: json!(3),
                score: None,
            },
            NewAnswer {
                question_id: "q1".into(),
                answer: json!("secure"),
                score: Some(80),
            },
        ],
    )
    .await
    .unwrap();
    repo.answer_assessment(
        ua,
        older.id,
        vec![NewAnswer {
            question_id: "words".into(),
            answer: json!("yes"),
            score: None,
        }],
    )
    .await
    .unwrap();
    let goal = repo
        .create_goal(
            ua,
            NewGoal {
                milestones: vec!["Pick a place".into()],
                ..new_goal(a, "Weekly date night")
            },
        )
        .await
        .unwrap();
    let done = repo.create_goal(ua, new_goal(a, "Old goal")).await.unwrap();
    repo.set_goal_progress(ua, done.id, 100).await.unwrap();
    repo.set_goal_progress(ua, goal.id, 40).await.unwrap();
    let path = repo
        .create_learning_path(ua, new_learning_path(a, vec![listen.id, thanks.id]))
        .await
        .unwrap();
    repo.advance_learning_path(ua, path.id, 1).await.unwrap();
    repo.log_progress(ua, session(a, listen.id, 20, Some("went well".into())))
        .await
        .unwrap();
    let today = Utc::now().date_naive().to_string();
    let cp = ContextProvider::new(repo.clone());
    let q = question("How am I doing?");

    // The assessment analyst: the latest assessment, its answers by question id.
    let ctx = cp
        .context_for(a, AgentType::AssessmentAnalyst, &q)
        .await
        .unwrap();
    assert_eq!(
        ctx,
        json!({"assessment": {
            "assessment_type": "attachment_style",
            "title": "Attachment",
            "completed": false,
            "score": null,
            "insights": null,
            "answers": [
                {"question_id": "q1", "answer": "secure", "score": 80},
                {"question_id": "q2", "answer": 3, "score": null},
            ],
        }})
    );
    // ... or the one the input names.
    let named = json!({"question": "And this one?", "assessment_id": older.id.to_string()});
    let ctx = cp
        .context_for(a, AgentType::AssessmentAnalyst, &named)
        .await
        .unwrap();
    assert_eq!(ctx["assessment"]["title"], "Love languages");
    assert_eq!(
        ctx["assessment"]["answers"],
        json!([{"question_id": "words", "answer": "yes", "score": null}])
    );

    // The progress tracker: statistics and active goals only.
    let ctx = cp
        .context_for(a, AgentType::ProgressTracker, &q)
        .await
        .unwrap();
    let stats = &ctx["statistics"];
    assert_eq!(stats["days"], 30);
    assert_eq!(stats["total_sessions"], 1);
    assert_eq!(stats["total_practices"], 1);
    assert_eq!(stats["session_minutes"], 20);
    assert_eq!(stats["average_rating"], 4.0);
    assert_eq!(stats["current_streak_days"], 1);
    assert_eq!(
        stats["top_categories"],
        json!([{"category": "communication", "count": 1}])
    );
    assert!(stats.get("from").is_none() && stats.get("to").is_none());
    assert_eq!(
        ctx["active_goals"],
        json!([{
            "title": "Weekly date night",
            "description": "",
            "category": "c",
            "target_date": null,
            "progress": 40,
            "milestones": [{"title": "Pick a place", "completed": false}],
        }])
    );
    assert_eq!(ctx.as_object().unwrap().len(), 2);

    // The learning coach: the current path with what comes next, recent sessions.
    let ctx = cp
        .context_for(a, AgentType::LearningCoach, &q)
        .await
        .unwrap();
    assert_eq!(
        ctx,
        json!({
            "learning_path": {
                "title": "L",
                "description": "",
                "steps": 2,
                "current_step": 1,
                "progress": 50,
                "next_practices": [{
                    "title": "Gratitude journal",
                    "category": "appreciation",
                    "difficulty": "beginner",
                    "duration_minutes": 15,
                }],
            },
            "recent_progress": [{
                "date": today,
                "practice": "Active listening",
                "duration_minutes": 20,
                "completed": true,
                "rating": 4,
                "notes": "went well",
            }],
        })
    );

    // The insight generator: statistics and recent progress.
    let ctx = cp
        .context_for(a, AgentType::InsightGenerator, &q)
        .await
        .unwrap();
    let keys: Vec<&String> = ctx.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["recent_progress", "statistics"]);
    assert_eq!(ctx["statistics"]["total_sessions"], 1);
    assert_eq!(ctx["recent_progress"][0]["practice"], "Active listening");

    // The communication advisor: the profile fields that matter, never the email.
    let ctx = cp
        .context_for(a, AgentType::CommunicationAdvisor, &q)
        .await
        .unwrap();
    assert_eq!(
        ctx["profile"],
        json!({"display_name": "Alex", "preferences": {"relationship_status": "married", "partner_name": "Sam"}})
    );
    assert_eq!(ctx["active_goals"][0]["title"], "Weekly date night");
    let text = canonical_json(&ctx);
    assert!(
        !text.contains("example.com") && !text.contains("dark"),
        "{text}"
    );

    // A user with no data gets empty, not missing, parts.
    let b = user(&repo, "Bo").await;
    assert_eq!(
        cp.context_for(b, AgentType::AssessmentAnalyst, &q)
            .await
            .unwrap(),
        json!({"assessment": null})
    );
    assert_eq!(
        cp.context_for(b, AgentType::LearningCoach, &q)
            .await
            .unwrap(),
        json!({"learning_path": null, "recent_progress": []})
    );
}

pub(crate) async fn changed_data_changes_the_context_and_the_fingerprint(repo: Repo) {
    let a = user(&repo, "Alex").await;
    let b = user(&repo, "Bo").await;
    let ua = Actor::User(a);
    let p = practice(&repo, "Active listening", "communication").await;
    let asmt = repo
        .create_assessment(
            ua,
            new_assessment(a, "attachment_style", "Attachment", None),
        )
        .await
        .unwrap();
    let goal = repo
        .create_goal(ua, new_goal(a, "Date night"))
        .await
        .unwrap();
    let cp = ContextProvider::new(repo.clone());
    let q = question("What do my results say about how I communicate?");
    let agents = [
        AgentType::AssessmentAnalyst,
        AgentType::ProgressTracker,
        AgentType::LearningCoach,
        AgentType::InsightGenerator,
        AgentType::CommunicationAdvisor,
    ];
    let mut before = Vec::new();
    for agent in agents {
        let c1 = cp.context_for(a, agent, &q).await.unwrap();
        let c2 = cp.context_for(a, agent, &q).await.unwrap();
        // Unchanged data: the identical context, so the identical fingerprint.
        assert_eq!(c1, c2, "{agent}");
        assert_eq!(canonical_json(&c1), canonical_json(&c2));
        assert_eq!(
            fingerprint(a, agent, &q, &c1),
            fingerprint(a, agent, &q, &c2)
        );
        before.push(c1);
    }
    let changed = |agent: AgentType, old: &Value, new: &Value| {
        assert_ne!(old, new, "{agent}: the context must change");
        assert_ne!(
            fingerprint(a, agent, &q, old),
            fingerprint(a, agent, &q, new),
            "{agent}: the fingerprint must change"
        );
    };

    // Another user's activity changes nothing of a's.
    repo.log_progress(Actor::User(b), session(b, p.id, 30, None))
        .await
        .unwrap();
    for (agent, old) in agents.iter().zip(&before) {
        assert_eq!(
            &cp.context_for(a, *agent, &q).await.unwrap(),
            old,
            "{agent}"
        );
    }

    // Answering the assessment changes the analyst's context.
    repo.answer_assessment(
        ua,
        asmt.id,
        vec![NewAnswer {
            question_id: "q1".into(),
            answer: json!(12),
            score: Some(12),
        }],
    )
    .await
    .unwrap();
    let after = cp
        .context_for(a, AgentType::AssessmentAnalyst, &q)
        .await
        .unwrap();
    changed(AgentType::AssessmentAnalyst, &before[0], &after);
    // ... and a different answer changes it again (the cache's measured bug: 12 vs 97).
    repo.answer_assessment(
        ua,
        asmt.id,
        vec![NewAnswer {
            question_id: "q1".into(),
            answer: json!(97),
            score: Some(97),
        }],
    )
    .await
    .unwrap();
    let again = cp
        .context_for(a, AgentType::AssessmentAnalyst, &q)
        .await
        .unwrap();
    changed(AgentType::AssessmentAnalyst, &after, &again);

    // Completing the goal changes the progress tracker's and the advisor's.
    repo.set_goal_progress(ua, goal.id, 100).await.unwrap();
    let pt = cp
        .context_for(a, AgentType::ProgressTracker, &q)
        .await
        .unwrap();
    changed(AgentType::ProgressTracker, &before[1], &pt);
    assert_eq!(pt["active_goals"], json!([]));
    let ca = cp
        .context_for(a, AgentType::CommunicationAdvisor, &q)
        .await
        .unwrap();
    changed(AgentType::CommunicationAdvisor, &before[4], &ca);

    // Logging progress changes the coach's, the insight generator's and the tracker's.
    repo.log_progress(ua, session(a, p.id, 15, None))
        .await
        .unwrap();
    let lc = cp
        .context_for(a, AgentType::LearningCoach, &q)
        .await
        .unwrap();
    changed(AgentType::LearningCoach, &before[2], &lc);
    let ig = cp
        .context_for(a, AgentType::InsightGenerator, &q)
        .await
        .unwrap();
    changed(AgentType::InsightGenerator, &before[3], &ig);
    let pt2 = cp
        .context_for(a, AgentType::ProgressTracker, &q)
        .await
        .unwrap();
    changed(AgentType::ProgressTracker, &pt, &pt2);
    assert_eq!(pt2["statistics"]["total_sessions"], 1);
}
