//! `ContextProvider`: each agent kind gets the user's own data, read as the user;
//! the same data gives the same context (and request fingerprint), changed data
//! another; the budget is kept deterministically; another user's ids are refused;
//! the history keeps the newest turns that fit. On memory, through the cache, and
//! on PostgreSQL as the least-privilege application role.

mod common;

use std::sync::Arc;

use chrono::{Duration, Utc};
use kasama::ContextProvider;
use kasama::agent::prompt::canonical_json;
use kasama::agent::{ChatMessage, Role, estimate_tokens};
use kasama::prelude::*;
use serde_json::{Value, json};

use common::fixtures::{new_assessment, new_goal, new_learning_path};

type Repo = Arc<dyn Repository>;
const S: Actor = Actor::Service;

macro_rules! on_every_repository {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(std::sync::Arc::new(kasama::InMemoryRepository::new())).await;
                }
            )*
        }
        /// Through the read-through cache: a write must show in the next context.
        mod cached {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(std::sync::Arc::new(kasama::CachedRepository::new(
                        kasama::InMemoryRepository::new(),
                        kasama::MemoryCache::new(),
                        std::time::Duration::from_secs(300),
                    )))
                    .await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crate::common::pg().await else { return };
                    super::$name(std::sync::Arc::new(db.repo.clone())).await;
                    db.finish().await;
                }
            )*
        }
    };
}

on_every_repository!(
    each_agent_gets_its_data,
    changed_data_changes_the_context_and_the_fingerprint,
    truncation_is_deterministic_and_within_budget,
    another_users_ids_are_refused,
    history_keeps_the_newest_turns_that_fit,
);

/// A user with a profile whose preferences hold a relationship status, a partner's
/// name and an unrelated setting.
async fn user(repo: &Repo, name: &str) -> UserId {
    let id = UserId::new();
    let mut p = NewProfile::new(id, format!("{name}-{id}@example.com"), name);
    p.preferences =
        json!({"relationship_status": "married", "partner_name": "Sam", "theme": "dark"});
    repo.create_profile(S, p).await.unwrap();
    id
}

async fn practice(repo: &Repo, title: &str, category: &str) -> Practice {
    repo.create_practice(
        S,
        NewPractice {
            title: title.into(),
            description: format!("{title}, for couples"),
            category: category.into(),
            difficulty: DifficultyLevel::Beginner,
            tags: vec![],
            duration_minutes: 15,
        },
    )
    .await
    .unwrap()
}

fn session(user: UserId, p: PracticeId, minutes: i32, notes: Option<String>) -> NewProgress {
    NewProgress {
        rating: Some(4),
        notes,
        ..NewProgress::practice(user, p, minutes)
    }
}

fn fingerprint(user: UserId, agent: AgentType, input: &Value, ctx: &Value) -> String {
    AiRequest::new(user, agent, input.clone())
        .with_context(ctx.clone())
        .fingerprint()
}

fn question(q: &str) -> Value {
    json!({ "question": q })
}

async fn each_agent_gets_its_data(repo: Repo) {
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

async fn changed_data_changes_the_context_and_the_fingerprint(repo: Repo) {
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

async fn truncation_is_deterministic_and_within_budget(repo: Repo) {
    let a = user(&repo, "Alex").await;
    let ua = Actor::User(a);
    let p = practice(&repo, "Active listening", "communication").await;
    // Ten sessions, one a minute apart, newest last, each with a long note.
    for i in 0..10 {
        let e = NewProgress {
            created_at: Some(Utc::now() - Duration::minutes(60 - i)),
            ..session(a, p.id, 10, Some(format!("note {i}: {}", "x".repeat(300))))
        };
        repo.log_progress(ua, e).await.unwrap();
    }
    let q = question("What should I practise next?");
    let agent = AgentType::LearningCoach;

    // The default budget holds all ten: nothing cut, no marker.
    let full = ContextProvider::new(repo.clone())
        .context_for(a, agent, &q)
        .await
        .unwrap();
    assert_eq!(full["recent_progress"].as_array().unwrap().len(), 10);
    assert!(full.get("truncated").is_none());
    assert_eq!(ContextProvider::new(repo.clone()).budget(), 1_500);

    for budget in [400, 200, 60] {
        let cp = ContextProvider::new(repo.clone()).token_budget(budget);
        let ctx = cp.context_for(a, agent, &q).await.unwrap();
        let tokens = estimate_tokens(&canonical_json(&ctx));
        assert!(tokens <= budget, "{budget}: {tokens} tokens: {ctx}");
        assert_eq!(ctx["truncated"], true, "{budget}");
        // The oldest go first: what is left starts with the newest session.
        let kept = ctx["recent_progress"].as_array().unwrap();
        assert!(!kept.is_empty() && kept.len() < 10, "{budget}: {kept:?}");
        assert!(
            kept[0]["notes"].as_str().unwrap().starts_with("note 9"),
            "{budget}: {}",
            kept[0]
        );
        // Deterministic: the same data, the same cut.
        assert_eq!(cp.context_for(a, agent, &q).await.unwrap(), ctx, "{budget}");
    }
    // The largest cut that fits: at 400 tokens, lists are cut but strings are whole.
    let ctx = ContextProvider::new(repo.clone())
        .token_budget(400)
        .context_for(a, agent, &q)
        .await
        .unwrap();
    let kept = ctx["recent_progress"].as_array().unwrap();
    assert!(
        kept.iter()
            .all(|e| !e["notes"].as_str().unwrap().ends_with('…'))
    );
    let mut one_more = ctx.clone();
    one_more["recent_progress"]
        .as_array_mut()
        .unwrap()
        .push(full["recent_progress"][kept.len()].clone());
    assert!(estimate_tokens(&canonical_json(&one_more)) > 400);
    // At 60 tokens, one session is left, its note shortened.
    let ctx = ContextProvider::new(repo.clone())
        .token_budget(60)
        .context_for(a, agent, &q)
        .await
        .unwrap();
    let note = ctx["recent_progress"][0]["notes"].as_str().unwrap();
    assert!(note.starts_with("note 9") && note.ends_with('…'), "{note}");
}

async fn another_users_ids_are_refused(repo: Repo) {
    let a = user(&repo, "Alex").await;
    let b = user(&repo, "Bo").await;
    let ua = Actor::User(a);
    let asmt = repo
        .create_assessment(
            ua,
            new_assessment(a, "attachment_style", "A's secret test", None),
        )
        .await
        .unwrap();
    repo.answer_assessment(
        ua,
        asmt.id,
        vec![NewAnswer {
            question_id: "q1".into(),
            answer: json!("a's secret answer"),
            score: None,
        }],
    )
    .await
    .unwrap();
    let conv = repo
        .create_conversation(
            ua,
            NewConversation {
                user_id: a,
                agent: AgentType::LearningCoach,
                title: "A".into(),
            },
        )
        .await
        .unwrap();
    repo.add_message(
        ua,
        NewConversationMessage {
            conversation_id: conv.id,
            role: Role::User,
            content: "a's secret turn".into(),
        },
    )
    .await
    .unwrap();
    let cp = ContextProvider::new(repo.clone());

    // b naming a's assessment: not found, and nothing of a's comes back.
    let sneaky = json!({"question": "What does it say?", "assessment_id": asmt.id.to_string()});
    let e = cp
        .context_for(b, AgentType::AssessmentAnalyst, &sneaky)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("secret"));
    // b's own context has none of a's data.
    let own = cp
        .context_for(
            b,
            AgentType::AssessmentAnalyst,
            &question("What does it say?"),
        )
        .await
        .unwrap();
    assert_eq!(own, json!({"assessment": null}));
    // b reading a's conversation history: not found.
    assert!(
        cp.history_for(b, conv.id, 1_000)
            .await
            .unwrap_err()
            .is_not_found()
    );
    // A malformed id is named.
    let bad = json!({"question": "?", "assessment_id": "not-a-uuid"});
    let e = cp
        .context_for(a, AgentType::AssessmentAnalyst, &bad)
        .await
        .unwrap_err();
    assert_eq!(e.invalid_field(), Some("assessment_id"));
    // a still reads it.
    let ctx = cp
        .context_for(a, AgentType::AssessmentAnalyst, &sneaky)
        .await
        .unwrap();
    assert_eq!(
        ctx["assessment"]["answers"][0]["answer"],
        "a's secret answer"
    );
    assert_eq!(cp.history_for(a, conv.id, 1_000).await.unwrap().len(), 1);
}

async fn history_keeps_the_newest_turns_that_fit(repo: Repo) {
    let a = user(&repo, "Alex").await;
    let ua = Actor::User(a);
    let conv = repo
        .create_conversation(
            ua,
            NewConversation {
                user_id: a,
                agent: AgentType::CommunicationAdvisor,
                title: "Mum".into(),
            },
        )
        .await
        .unwrap();
    // Six turns of 40 characters (10 tokens, 14 with the per-message overhead),
    // then a long one (100 tokens), then two more short ones.
    let mut turns: Vec<ChatMessage> = (0..6)
        .map(|i| {
            let role = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            ChatMessage::new(role, format!("turn {i} {}", "t".repeat(33)))
        })
        .collect();
    turns.push(ChatMessage::new(Role::User, "L".repeat(400)));
    turns.push(ChatMessage::new(
        Role::Assistant,
        format!("turn 7 {}", "t".repeat(33)),
    ));
    turns.push(ChatMessage::new(
        Role::User,
        format!("turn 8 {}", "t".repeat(33)),
    ));
    for t in &turns {
        assert_eq!(
            estimate_tokens(&t.content),
            if t.content.len() == 400 { 100 } else { 10 }
        );
        repo.add_message(
            ua,
            NewConversationMessage {
                conversation_id: conv.id,
                role: t.role,
                content: t.content.clone(),
            },
        )
        .await
        .unwrap();
    }
    let cp = ContextProvider::new(repo.clone());
    // Everything fits: all of it, oldest first, roles kept.
    assert_eq!(cp.history_for(a, conv.id, 10_000).await.unwrap(), turns);
    // 2 short turns cost 28: the newest two.
    assert_eq!(
        cp.history_for(a, conv.id, 28).await.unwrap(),
        turns[7..].to_vec()
    );
    assert_eq!(
        cp.history_for(a, conv.id, 41).await.unwrap(),
        turns[7..].to_vec()
    );
    assert_eq!(
        cp.history_for(a, conv.id, 14).await.unwrap(),
        turns[8..].to_vec()
    );
    assert!(cp.history_for(a, conv.id, 13).await.unwrap().is_empty());
    // The long turn fits at 28 + 104 = 132; an older short one does not jump the queue.
    assert_eq!(
        cp.history_for(a, conv.id, 132).await.unwrap(),
        turns[6..].to_vec()
    );
    assert_eq!(
        cp.history_for(a, conv.id, 145).await.unwrap(),
        turns[6..].to_vec()
    );
    assert_eq!(
        cp.history_for(a, conv.id, 146).await.unwrap(),
        turns[5..].to_vec()
    );
}
