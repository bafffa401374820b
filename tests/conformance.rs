//! One behaviour suite, run against every `Repository`: the in-memory store and
//! PostgreSQL (a fresh database per test, as the non-owner application role).
//! Each check asserts the exact value a user would see, so both implementations
//! must agree to pass.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use kasama::prelude::*;
use kasama::realtime::{ChangeEvent, ChangeOp, ChangeTable, hydrate};
use serde_json::json;

type Repo = Arc<dyn Repository>;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(std::sync::Arc::new(kasama::InMemoryRepository::new())).await;
                }
            )*
        }
        /// The same behaviour through the read-through cache: caching must not change
        /// what any call returns.
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

conformance!(
    profiles,
    assessments,
    practices,
    goals,
    progress_and_paths,
    notifications,
    interactions,
    statistics,
    recommendations,
    cost_analysis,
    system_health,
    bad_input,
    isolation,
    erase,
);

/// Defence in depth: the isolation suite again, on a role for which row-level
/// security does not apply (`BYPASSRLS`, with the explicit opt-out). The repository's
/// own filters must keep users apart on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_holds_where_rls_does_not_apply() {
    let Some(db) = common::pg().await else { return };
    let repo = db.bypass_repo();
    // First prove RLS is off for this role: scoped as nobody, it still sees a row.
    let a = user(&(Arc::new(repo.clone()) as Repo), 7).await;
    let raw = common::connect(
        &db.app_config()
            .url
            .replace(common::APP_LOGIN, common::BYPASS_LOGIN),
    )
    .await
    .unwrap();
    raw.batch_execute("SELECT set_config('app.user_id', '', false)")
        .await
        .unwrap();
    let seen: i64 = raw
        .query_one("SELECT count(*) FROM profiles WHERE id = $1", &[&a.0])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 1, "the bypass role must really bypass RLS");
    isolation(Arc::new(repo)).await;
    db.finish().await;
}

const S: Actor = Actor::Service;

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

async fn user(repo: &Repo, n: u32) -> UserId {
    let id = UserId::new();
    repo.create_profile(
        S,
        NewProfile::new(id, format!("user{n}-{id}@example.com"), format!("User {n}")),
    )
    .await
    .unwrap();
    id
}

fn field(e: Error) -> String {
    match e {
        Error::InvalidInput { field, .. } => field.into_owned(),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

async fn practice(
    repo: &Repo,
    title: &str,
    category: &str,
    d: DifficultyLevel,
    tags: &[&str],
) -> Practice {
    repo.create_practice(
        S,
        NewPractice {
            title: title.into(),
            description: format!("{title}: a practice for couples"),
            category: category.into(),
            difficulty: d,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            duration_minutes: 15,
        },
    )
    .await
    .unwrap()
}

fn entry(user: UserId, p: PracticeId, t: DateTime<Utc>, minutes: i32, done: bool) -> NewProgress {
    NewProgress {
        user_id: user,
        practice_id: Some(p),
        goal_id: None,
        learning_path_id: None,
        duration_minutes: minutes,
        rating: None,
        mood_before: None,
        mood_after: None,
        notes: None,
        completed: done,
        completed_at: done.then_some(t),
        created_at: Some(t),
    }
}

fn interaction(
    user: UserId,
    agent: AgentType,
    cost: i64,
    t: Option<DateTime<Utc>>,
) -> NewAiInteraction {
    NewAiInteraction {
        id: None,
        user_id: user,
        agent_type: agent,
        model: "gpt-4o-mini".into(),
        input: json!({"q": "How do I listen better?"}),
        output: json!({"a": "Reflect back what you heard."}),
        input_tokens: 100,
        output_tokens: 50,
        cost_nanos: cost,
        saved_nanos: 0,
        latency_ms: 100,
        cache_hit: false,
        success: true,
        created_at: t,
    }
}

async fn profiles(repo: Repo) {
    let a = UserId::new();
    let b = UserId::new();
    let ua = Actor::User(a);
    let p = repo
        .create_profile(ua, NewProfile::new(a, "Ana@Example.com", "Ana"))
        .await
        .unwrap();
    assert_eq!(p.id, a);
    assert_eq!(p.subscription_tier, SubscriptionTier::Free);
    assert_eq!(repo.get_profile(ua, a).await.unwrap(), p);

    // Another user's profile: not creatable by a, not visible to a.
    assert!(
        repo.create_profile(ua, NewProfile::new(b, "b@example.com", "B"))
            .await
            .unwrap_err()
            .is_forbidden()
    );
    repo.create_profile(S, NewProfile::new(b, "b@example.com", "B"))
        .await
        .unwrap();
    assert!(repo.get_profile(ua, b).await.unwrap_err().is_not_found());

    // A user cannot buy a tier by writing it.
    let mut premium = NewProfile::new(UserId::new(), "c@example.com", "C");
    premium.subscription_tier = SubscriptionTier::Premium;
    assert!(
        repo.create_profile(Actor::User(premium.id), premium.clone())
            .await
            .unwrap_err()
            .is_forbidden()
    );
    let up = ProfileUpdate {
        subscription_tier: Some(SubscriptionTier::Premium),
        ..Default::default()
    };
    assert!(
        repo.update_profile(ua, a, up.clone())
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert_eq!(
        repo.update_profile(S, a, up)
            .await
            .unwrap()
            .subscription_tier,
        SubscriptionTier::Premium
    );

    // Conflicts: same id, same email in another case.
    let e = repo
        .create_profile(S, NewProfile::new(a, "x@example.com", "X"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    let e = repo
        .create_profile(
            S,
            NewProfile::new(UserId::new(), "ana@EXAMPLE.com", "Other"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    assert!(
        !e.to_string().contains("ana@"),
        "no other user's data in errors: {e}"
    );

    let updated = repo
        .update_profile(
            ua,
            a,
            ProfileUpdate {
                display_name: Some("Ana Maria".into()),
                preferences: Some(json!({"theme": "dark"})),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.display_name, "Ana Maria");
    assert_eq!(updated.preferences, json!({"theme": "dark"}));
    assert_eq!(updated.email, "Ana@Example.com");
    assert!(updated.updated_at >= p.updated_at);
    let e = repo
        .update_profile(
            ua,
            a,
            ProfileUpdate {
                email: Some("B@example.com".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    assert!(
        repo.update_profile(
            ua,
            b,
            ProfileUpdate {
                display_name: Some("Hijack".into()),
                ..Default::default()
            }
        )
        .await
        .unwrap_err()
        .is_not_found()
    );
    assert_eq!(repo.get_profile(S, b).await.unwrap().display_name, "B");
}

async fn assessments(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);
    let year_ago = at(2025, 11, 20, 9);
    let old = repo
        .create_assessment(
            ua,
            NewAssessment {
                user_id: a,
                assessment_type: "love_language".into(),
                title: "Love languages".into(),
                created_at: Some(year_ago),
            },
        )
        .await
        .unwrap();
    assert_eq!(old.created_at, year_ago);
    let cur = repo
        .create_assessment(
            ua,
            NewAssessment {
                user_id: a,
                assessment_type: "attachment_style".into(),
                title: "Attachment".into(),
                created_at: None,
            },
        )
        .await
        .unwrap();
    assert!(!cur.completed);
    assert_eq!(cur.completed_at, None);

    let answers = repo
        .answer_assessment(
            ua,
            cur.id,
            vec![
                NewAnswer {
                    question_id: "q2".into(),
                    answer: json!("often"),
                    score: Some(40),
                },
                NewAnswer {
                    question_id: "q1".into(),
                    answer: json!({"choice": 3}),
                    score: None,
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        answers
            .iter()
            .map(|x| x.question_id.as_str())
            .collect::<Vec<_>>(),
        ["q2", "q1"]
    );
    assert!(
        answers
            .iter()
            .all(|x| x.user_id == a && x.assessment_id == cur.id)
    );
    // Answering again replaces.
    let again = repo
        .answer_assessment(
            ua,
            cur.id,
            vec![NewAnswer {
                question_id: "q2".into(),
                answer: json!("rarely"),
                score: Some(80),
            }],
        )
        .await
        .unwrap();
    assert_eq!(again[0].id, answers[0].id);
    let listed = repo.list_answers(ua, cur.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].question_id, "q1");
    assert_eq!(listed[1].answer, json!("rarely"));
    assert_eq!(listed[1].score, Some(80));
    assert_eq!(repo.list_answers(ua, old.id).await.unwrap(), vec![]);

    let done = repo
        .complete_assessment(ua, cur.id, 72, json!({"style": "secure"}))
        .await
        .unwrap();
    assert!(done.completed);
    assert!(done.completed_at.is_some());
    assert_eq!(done.score, Some(72));
    assert_eq!(done.insights, json!({"style": "secure"}));
    assert_eq!(repo.get_assessment(ua, cur.id).await.unwrap(), done);
    assert_eq!(
        field(
            repo.complete_assessment(ua, cur.id, 50, json!(null))
                .await
                .unwrap_err()
        ),
        "assessment"
    );
    let e = repo
        .answer_assessment(
            ua,
            cur.id,
            vec![NewAnswer {
                question_id: "q3".into(),
                answer: json!(1),
                score: None,
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(field(e), "assessment");
    assert!(
        repo.complete_assessment(ua, AssessmentId::new(), 50, json!(null))
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Filters and pagination.
    let all = repo
        .list_assessments(ua, a, &AssessmentFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|x| x.id).collect::<Vec<_>>(),
        [cur.id, old.id]
    );
    let by_type = AssessmentFilter {
        assessment_type: Some("love_language".into()),
        ..Default::default()
    };
    assert_eq!(
        repo.list_assessments(ua, a, &by_type, Page::default())
            .await
            .unwrap(),
        vec![old.clone()]
    );
    let open = AssessmentFilter {
        completed: Some(false),
        ..Default::default()
    };
    assert_eq!(
        repo.list_assessments(ua, a, &open, Page::default())
            .await
            .unwrap(),
        vec![old.clone()]
    );
    let recent = AssessmentFilter {
        from: Some(at(2026, 1, 1, 0)),
        ..Default::default()
    };
    assert_eq!(
        repo.list_assessments(ua, a, &recent, Page::default())
            .await
            .unwrap(),
        vec![done.clone()]
    );
    let before = AssessmentFilter {
        to: Some(at(2026, 1, 1, 0)),
        ..Default::default()
    };
    assert_eq!(
        repo.list_assessments(ua, a, &before, Page::default())
            .await
            .unwrap(),
        vec![old.clone()]
    );
    let p2 = repo
        .list_assessments(
            ua,
            a,
            &AssessmentFilter::default(),
            Page {
                limit: 1,
                offset: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(p2, vec![old.clone()]);
}

async fn practices(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);
    let breathe = practice(
        &repo,
        "Breathing together",
        "mindfulness",
        DifficultyLevel::Beginner,
        &["Calm", "breath"],
    )
    .await;
    let listen = practice(
        &repo,
        "Active listening",
        "communication",
        DifficultyLevel::Intermediate,
        &["listening"],
    )
    .await;
    let fight = practice(
        &repo,
        "Fair fighting rules",
        "conflict",
        DifficultyLevel::Advanced,
        &["conflict", "calm"],
    )
    .await;
    assert_eq!(breathe.tags, ["calm", "breath"]);
    assert!(
        repo.create_practice(
            ua,
            NewPractice {
                title: "x".into(),
                description: String::new(),
                category: "c".into(),
                difficulty: DifficultyLevel::Beginner,
                tags: vec![],
                duration_minutes: 5,
            }
        )
        .await
        .unwrap_err()
        .is_forbidden()
    );
    assert_eq!(repo.get_practice(ua, listen.id).await.unwrap(), listen);

    let ids = |v: Vec<Practice>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    // Stemmed full-text: "listen" finds "listening".
    assert_eq!(
        ids(repo
            .search_practices(ua, "listen", Page::default())
            .await
            .unwrap()),
        [listen.id]
    );
    // Tags are searched; title matches come first, then by title.
    assert_eq!(
        ids(repo
            .search_practices(ua, "calm", Page::default())
            .await
            .unwrap()),
        [breathe.id, fight.id]
    );
    assert_eq!(
        ids(repo
            .search_practices(ua, "FAIR FIGHT", Page::default())
            .await
            .unwrap()),
        [fight.id]
    );
    assert_eq!(
        ids(repo
            .search_practices(ua, "ing toge", Page::default())
            .await
            .unwrap()),
        [breathe.id]
    );
    assert_eq!(
        ids(repo
            .search_practices(ua, "100%_", Page::default())
            .await
            .unwrap()),
        []
    );
    assert_eq!(
        ids(repo
            .search_practices(ua, "couples", Page::first(2))
            .await
            .unwrap()),
        [listen.id, breathe.id]
    );

    let all = repo
        .list_practices(ua, &PracticeFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(ids(all), [listen.id, breathe.id, fight.id]);
    let f = PracticeFilter {
        category: Some("conflict".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(repo.list_practices(ua, &f, Page::default()).await.unwrap()),
        [fight.id]
    );
    let f = PracticeFilter {
        difficulty: Some(DifficultyLevel::Beginner),
        ..Default::default()
    };
    assert_eq!(
        ids(repo.list_practices(ua, &f, Page::default()).await.unwrap()),
        [breathe.id]
    );
    let f = PracticeFilter {
        tag: Some("CALM".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(repo.list_practices(ua, &f, Page::default()).await.unwrap()),
        [breathe.id, fight.id]
    );
    assert!(
        repo.get_practice(ua, PracticeId::new())
            .await
            .unwrap_err()
            .is_not_found()
    );
}

async fn goals(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);
    let g = repo
        .create_goal(
            ua,
            NewGoal {
                user_id: a,
                title: "Weekly check-ins".into(),
                description: "Talk every Sunday".into(),
                category: "communication".into(),
                target_date: NaiveDate::from_ymd_opt(2027, 1, 31),
                milestones: vec!["First talk".into(), "Four in a row".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(g.progress, 0);
    assert_eq!(g.milestones.len(), 2);
    assert!(!g.milestones[0].completed);

    let u = repo
        .update_goal(
            ua,
            g.id,
            GoalUpdate {
                title: Some("Sunday check-ins".into()),
                target_date: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.title, "Sunday check-ins");
    assert_eq!(u.target_date, None);
    assert_eq!(u.description, "Talk every Sunday");

    let m = repo.complete_milestone(ua, g.id, 1).await.unwrap();
    assert!(m.milestones[1].completed && m.milestones[1].completed_at.is_some());
    assert!(!m.milestones[0].completed);
    let m2 = repo.complete_milestone(ua, g.id, 1).await.unwrap();
    assert_eq!(
        m2.milestones, m.milestones,
        "completing twice changes nothing"
    );
    assert_eq!(
        field(repo.complete_milestone(ua, g.id, 2).await.unwrap_err()),
        "milestone"
    );

    let done = repo.set_goal_progress(ua, g.id, 100).await.unwrap();
    assert!(done.completed);
    assert!(done.completed_at.is_some());
    let done2 = repo.set_goal_progress(ua, g.id, 100).await.unwrap();
    assert_eq!(
        done2.completed_at, done.completed_at,
        "completion time is kept"
    );
    let reopened = repo.set_goal_progress(ua, g.id, 60).await.unwrap();
    assert!(!reopened.completed);
    assert_eq!(reopened.completed_at, None);
    assert_eq!(reopened.progress, 60);
    assert_eq!(
        field(repo.set_goal_progress(ua, g.id, 101).await.unwrap_err()),
        "progress"
    );

    assert_eq!(
        repo.list_goals(ua, a, Page::default()).await.unwrap(),
        vec![reopened.clone()]
    );

    // A goal-only progress entry goes with the goal; a practice entry keeps its practice.
    let p = practice(
        &repo,
        "Check-in",
        "communication",
        DifficultyLevel::Beginner,
        &[],
    )
    .await;
    let only_goal = NewProgress {
        practice_id: None,
        goal_id: Some(g.id),
        ..entry(a, p.id, at(2026, 2, 1, 8), 5, false)
    };
    repo.log_progress(ua, only_goal).await.unwrap();
    let both = NewProgress {
        goal_id: Some(g.id),
        ..entry(a, p.id, at(2026, 2, 2, 8), 5, false)
    };
    let both = repo.log_progress(ua, both).await.unwrap();
    repo.delete_goal(ua, g.id).await.unwrap();
    assert!(repo.get_goal(ua, g.id).await.unwrap_err().is_not_found());
    assert!(repo.delete_goal(ua, g.id).await.unwrap_err().is_not_found());
    let left = repo
        .list_progress(ua, a, None, Page::default())
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, both.id);
    assert_eq!(left[0].goal_id, None);
    assert_eq!(left[0].practice_id, Some(p.id));
}

async fn progress_and_paths(repo: Repo) {
    let a = user(&repo, 1).await;
    let b = user(&repo, 2).await;
    let ua = Actor::User(a);
    let p1 = practice(&repo, "One", "c", DifficultyLevel::Beginner, &[]).await;
    let p2 = practice(&repo, "Two", "c", DifficultyLevel::Beginner, &[]).await;
    let p3 = practice(&repo, "Three", "c", DifficultyLevel::Beginner, &[]).await;
    let gb = repo
        .create_goal(
            S,
            NewGoal {
                user_id: b,
                title: "B's".into(),
                description: String::new(),
                category: "c".into(),
                target_date: None,
                milestones: vec![],
            },
        )
        .await
        .unwrap();

    let mut e = entry(a, p1.id, at(2026, 3, 1, 10), 25, true);
    e.rating = Some(4);
    e.mood_before = Some(3);
    e.mood_after = Some(8);
    e.notes = Some("went well".into());
    let logged = repo.log_progress(ua, e).await.unwrap();
    assert_eq!(logged.created_at, at(2026, 3, 1, 10));
    assert_eq!(logged.completed_at, Some(at(2026, 3, 1, 10)));
    assert_eq!(logged.rating, Some(4));

    // References must exist and be the same user's.
    let bad = NewProgress {
        goal_id: Some(gb.id),
        ..entry(a, p1.id, at(2026, 3, 2, 10), 5, false)
    };
    assert_eq!(
        field(repo.log_progress(ua, bad).await.unwrap_err()),
        "goal_id"
    );
    let bad = entry(a, PracticeId::new(), at(2026, 3, 2, 10), 5, false);
    assert_eq!(
        field(repo.log_progress(ua, bad).await.unwrap_err()),
        "practice_id"
    );

    let path = repo
        .create_learning_path(
            ua,
            NewLearningPath {
                user_id: a,
                title: "Basics".into(),
                description: "Start here".into(),
                practice_ids: vec![p1.id, p2.id, p3.id],
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (path.current_step, path.progress, path.completed),
        (0, 0, false)
    );
    let e = repo
        .create_learning_path(
            ua,
            NewLearningPath {
                user_id: a,
                title: "X".into(),
                description: String::new(),
                practice_ids: vec![p1.id, PracticeId::new()],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(field(e), "practice_ids");
    let step2 = repo.advance_learning_path(ua, path.id, 2).await.unwrap();
    assert_eq!(
        (step2.current_step, step2.progress, step2.completed),
        (2, 66, false)
    );
    let end = repo.advance_learning_path(ua, path.id, 3).await.unwrap();
    assert_eq!(
        (end.current_step, end.progress, end.completed),
        (3, 100, true)
    );
    assert!(end.completed_at.is_some());
    assert_eq!(
        field(
            repo.advance_learning_path(ua, path.id, 4)
                .await
                .unwrap_err()
        ),
        "current_step"
    );
    assert_eq!(
        field(
            repo.advance_learning_path(ua, path.id, -1)
                .await
                .unwrap_err()
        ),
        "current_step"
    );
    let back = repo.advance_learning_path(ua, path.id, 1).await.unwrap();
    assert_eq!(
        (back.progress, back.completed, back.completed_at),
        (33, false, None)
    );
    assert_eq!(repo.get_learning_path(ua, path.id).await.unwrap(), back);
    assert_eq!(
        repo.list_learning_paths(ua, a, Page::default())
            .await
            .unwrap(),
        vec![back.clone()]
    );

    let on_path = NewProgress {
        practice_id: None,
        learning_path_id: Some(path.id),
        ..entry(a, p1.id, at(2026, 3, 5, 10), 10, false)
    };
    let on_path = repo.log_progress(ua, on_path).await.unwrap();
    let r = DateRange {
        from: at(2026, 3, 2, 0),
        to: at(2026, 4, 1, 0),
    };
    assert_eq!(
        repo.list_progress(ua, a, Some(r), Page::default())
            .await
            .unwrap(),
        vec![on_path.clone()]
    );
    assert_eq!(
        repo.list_progress(ua, a, None, Page::default())
            .await
            .unwrap(),
        vec![on_path, logged]
    );
}

async fn notifications(repo: Repo) {
    let a = user(&repo, 1).await;
    let b = user(&repo, 2).await;
    let ua = Actor::User(a);
    let mut ids = Vec::new();
    for (i, kind) in [
        NotificationType::Achievement,
        NotificationType::Reminder,
        NotificationType::Insight,
    ]
    .into_iter()
    .enumerate()
    {
        let n = repo
            .create_notification(
                S,
                NewNotification {
                    user_id: a,
                    kind,
                    priority: PriorityLevel::High,
                    title: format!("N{i}"),
                    body: "body".into(),
                    data: json!({"i": i}),
                },
            )
            .await
            .unwrap();
        ids.push(n.id);
    }
    let nb = repo
        .create_notification(
            S,
            NewNotification {
                user_id: b,
                kind: NotificationType::Social,
                priority: PriorityLevel::Low,
                title: "B".into(),
                body: String::new(),
                data: json!({}),
            },
        )
        .await
        .unwrap();
    let unread = repo
        .list_unread_notifications(ua, a, Page::default())
        .await
        .unwrap();
    assert_eq!(unread.len(), 3);
    // Another user's id in the list is ignored, duplicates count once.
    let n = repo
        .mark_notifications_read(ua, a, &[ids[0], ids[1], ids[1], nb.id])
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        repo.mark_notifications_read(ua, a, &[ids[0]])
            .await
            .unwrap(),
        0
    );
    let unread = repo
        .list_unread_notifications(ua, a, Page::default())
        .await
        .unwrap();
    assert_eq!(unread.iter().map(|n| n.id).collect::<Vec<_>>(), [ids[2]]);
    assert_eq!(unread[0].kind, NotificationType::Insight);
    assert_eq!(
        repo.list_unread_notifications(S, b, Page::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        repo.mark_notifications_read(ua, b, &[nb.id])
            .await
            .unwrap_err()
            .is_forbidden()
    );
}

async fn interactions(repo: Repo) {
    let a = user(&repo, 1).await;
    let b = user(&repo, 2).await;
    let ua = Actor::User(a);
    let one = repo
        .record_interaction(ua, interaction(a, AgentType::LearningCoach, 1234, None))
        .await
        .unwrap();
    assert_eq!(one.cost_nanos, 1234);
    assert_eq!(one.agent_type, AgentType::LearningCoach);
    assert!(
        repo.record_interaction(ua, interaction(b, AgentType::LearningCoach, 1, None))
            .await
            .unwrap_err()
            .is_forbidden()
    );

    let batch: Vec<NewAiInteraction> = (0..500)
        .map(|i| {
            interaction(
                if i % 2 == 0 { a } else { b },
                AgentType::ALL[i % 5],
                i as i64,
                None,
            )
        })
        .collect();
    assert_eq!(repo.record_interactions(S, &batch).await.unwrap(), 500);
    assert_eq!(repo.record_interactions(S, &[]).await.unwrap(), 0);
    assert_eq!(
        repo.list_interactions(
            ua,
            a,
            Page {
                limit: 500,
                offset: 0
            }
        )
        .await
        .unwrap()
        .len(),
        251
    );

    // A bad row refuses the whole batch, naming the row and field.
    let mut bad = batch[..5].to_vec();
    bad[3].model = String::new();
    assert_eq!(
        field(repo.record_interactions(S, &bad).await.unwrap_err()),
        "[3].model"
    );
    // A database-side refusal (duplicate key) also leaves nothing behind.
    let id = InteractionId::new();
    let t = at(2026, 6, 3, 12);
    let mut dup = vec![interaction(a, AgentType::ProgressTracker, 7, Some(t)); 3];
    dup[0].id = Some(InteractionId::new());
    dup[1].id = Some(id);
    dup[2].id = Some(id);
    let e = repo.record_interactions(S, &dup).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    let unknown_user = vec![
        interaction(a, AgentType::ProgressTracker, 7, Some(t)),
        interaction(UserId::new(), AgentType::ProgressTracker, 7, Some(t)),
    ];
    assert_eq!(
        field(
            repo.record_interactions(S, &unknown_user)
                .await
                .unwrap_err()
        ),
        "user_id"
    );
    let r = DateRange {
        from: at(2026, 6, 1, 0),
        to: at(2026, 7, 1, 0),
    };
    assert_eq!(
        repo.ai_cost_analysis(S, None, Some(r))
            .await
            .unwrap()
            .total_requests,
        0
    );

    let total: i64 = batch.iter().map(|b| b.cost_nanos).sum::<i64>() + 1234;
    let all = repo.ai_cost_analysis(S, None, None).await.unwrap();
    assert_eq!(all.total_requests, 501);
    assert_eq!(all.total_cost_nanos, total);
}

async fn statistics(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);
    let comm = practice(
        &repo,
        "Active listening",
        "communication",
        DifficultyLevel::Beginner,
        &[],
    )
    .await;
    let mind = practice(
        &repo,
        "Breathing together",
        "mindfulness",
        DifficultyLevel::Beginner,
        &[],
    )
    .await;
    let conf = practice(
        &repo,
        "Calm conflict",
        "conflict",
        DifficultyLevel::Intermediate,
        &[],
    )
    .await;
    let log = |mut e: NewProgress, rating: Option<i16>, mood: Option<(i16, i16)>| {
        e.rating = rating;
        if let Some((b, a)) = mood {
            e.mood_before = Some(b);
            e.mood_after = Some(a);
        }
        e
    };
    let entries = [
        log(
            entry(a, comm.id, at(2026, 1, 5, 12), 10, true),
            Some(4),
            Some((4, 7)),
        ),
        log(
            entry(a, comm.id, at(2026, 1, 6, 12), 20, true),
            Some(5),
            Some((5, 6)),
        ),
        log(entry(a, mind.id, at(2026, 1, 7, 12), 15, true), None, None),
        log(
            entry(a, conf.id, at(2026, 1, 7, 18), 5, false),
            Some(2),
            None,
        ),
        log(
            entry(a, mind.id, at(2026, 1, 12, 12), 30, true),
            Some(3),
            Some((6, 5)),
        ),
        log(entry(a, conf.id, at(2026, 1, 30, 12), 10, true), None, None),
        log(entry(a, comm.id, at(2026, 1, 31, 12), 10, true), None, None),
        // Outside [Jan 1, Feb 1):
        log(
            entry(a, comm.id, at(2025, 12, 31, 12), 60, true),
            Some(1),
            None,
        ),
        log(
            entry(a, comm.id, at(2026, 2, 1, 0), 60, true),
            Some(1),
            None,
        ),
    ];
    for e in entries {
        repo.log_progress(ua, e).await.unwrap();
    }
    let jan = DateRange {
        from: at(2026, 1, 1, 0),
        to: at(2026, 2, 1, 0),
    };
    let s = repo.user_statistics(ua, a, Some(jan)).await.unwrap();
    assert_eq!((s.from, s.to), (jan.from, jan.to));
    assert_eq!(s.total_sessions, 7);
    assert_eq!(s.total_practices, 6);
    assert!(
        (s.completion_rate - 6.0 / 7.0).abs() < 1e-12,
        "{}",
        s.completion_rate
    );
    assert_eq!(s.average_rating, Some(3.5));
    assert_eq!(s.session_minutes, 100);
    assert_eq!(s.longest_streak_days, 3);
    assert_eq!(s.current_streak_days, 2);
    let cats: Vec<(&str, i64)> = s
        .top_categories
        .iter()
        .map(|c| (c.category.as_str(), c.count))
        .collect();
    assert_eq!(
        cats,
        [("communication", 3), ("mindfulness", 2), ("conflict", 1)]
    );
    let d = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
    assert_eq!(
        s.weekly_trend,
        vec![
            WeekPoint {
                week_start: d(1, 5),
                sessions: 4,
                completed: 3,
                minutes: 50
            },
            WeekPoint {
                week_start: d(1, 12),
                sessions: 1,
                completed: 1,
                minutes: 30
            },
            WeekPoint {
                week_start: d(1, 26),
                sessions: 2,
                completed: 2,
                minutes: 20
            },
        ]
    );
    assert_eq!(s.mood_improvement, Some(1.0));
    assert!(
        (s.learning_velocity - 6.0 * 7.0 / 31.0).abs() < 1e-9,
        "{}",
        s.learning_velocity
    );

    // The streak survives a last day without activity (the day before counts).
    let early = DateRange {
        from: at(2026, 1, 1, 0),
        to: at(2026, 1, 14, 0),
    };
    let s = repo.user_statistics(ua, a, Some(early)).await.unwrap();
    assert_eq!((s.current_streak_days, s.longest_streak_days), (1, 3));
    let later = DateRange {
        from: at(2026, 1, 1, 0),
        to: at(2026, 1, 15, 0),
    };
    assert_eq!(
        repo.user_statistics(ua, a, Some(later))
            .await
            .unwrap()
            .current_streak_days,
        0
    );

    // The default range is the last 30 days: nothing there.
    let s = repo.user_statistics(ua, a, None).await.unwrap();
    assert_eq!(
        (
            s.total_sessions,
            s.completion_rate,
            s.average_rating,
            s.learning_velocity
        ),
        (0, 0.0, None, 0.0)
    );
    assert!((s.to - s.from - Duration::days(30)).num_seconds().abs() <= 1);
    assert!(s.weekly_trend.is_empty() && s.top_categories.is_empty());
}

async fn recommendations(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);
    let comm = practice(
        &repo,
        "Active listening",
        "communication",
        DifficultyLevel::Beginner,
        &[],
    )
    .await;
    let mind = practice(
        &repo,
        "Breathing together",
        "mindfulness",
        DifficultyLevel::Beginner,
        &[],
    )
    .await;
    let conf = practice(
        &repo,
        "Calm conflict",
        "conflict",
        DifficultyLevel::Intermediate,
        &[],
    )
    .await;
    let date = practice(
        &repo,
        "Date night",
        "intimacy",
        DifficultyLevel::Advanced,
        &[],
    )
    .await;
    let gift = practice(
        &repo,
        "Gratitude letters",
        "intimacy",
        DifficultyLevel::Beginner,
        &[],
    )
    .await;

    // No history: beginner level, no favourite category.
    let r = repo.learning_recommendations(ua, a, 2).await.unwrap();
    assert_eq!(
        r.iter()
            .map(|x| (x.practice_id, x.score))
            .collect::<Vec<_>>(),
        [(comm.id, 1), (mind.id, 1)]
    );
    assert_eq!(r[0].reason, "suits your beginner level");

    for (p, day) in [
        (comm.id, 1),
        (comm.id, 2),
        (comm.id, 3),
        (mind.id, 4),
        (mind.id, 5),
        (conf.id, 6),
    ] {
        repo.log_progress(ua, entry(a, p, at(2026, 1, day, 12), 10, true))
            .await
            .unwrap();
    }
    // Done within the last 30 days: left out.
    repo.log_progress(
        ua,
        entry(a, gift.id, Utc::now() - Duration::days(1), 10, true),
    )
    .await
    .unwrap();
    let r = repo.learning_recommendations(ua, a, 10).await.unwrap();
    let got: Vec<_> = r.iter().map(|x| (x.practice_id, x.score)).collect();
    assert_eq!(
        got,
        [(comm.id, 3), (mind.id, 3), (conf.id, 2), (date.id, 0)]
    );
    assert_eq!(
        r[0].reason,
        "in your favourite category communication, at your beginner level"
    );
    assert_eq!(r[2].reason, "in your favourite category conflict");
    assert_eq!(r[3].reason, "something new to try");
    assert_eq!(r[3].difficulty, DifficultyLevel::Advanced);
    assert_eq!(
        field(repo.learning_recommendations(ua, a, 0).await.unwrap_err()),
        "limit"
    );
}

async fn cost_analysis(repo: Repo) {
    let a = user(&repo, 1).await;
    let b = user(&repo, 2).await;
    let ua = Actor::User(a);
    let d2 = Some(at(2026, 3, 2, 9));
    let d3 = Some(at(2026, 3, 3, 9));
    let mut rows = vec![
        interaction(a, AgentType::LearningCoach, 1000, d2),
        interaction(a, AgentType::LearningCoach, 0, d2),
        interaction(a, AgentType::InsightGenerator, 3000, d3),
        interaction(a, AgentType::CommunicationAdvisor, 1000, d3),
        interaction(b, AgentType::LearningCoach, 5000, d3),
    ];
    rows[1].cache_hit = true;
    rows[1].saved_nanos = 1000;
    rows[1].latency_ms = 10;
    rows[1].input_tokens = 0;
    rows[1].output_tokens = 0;
    rows[2].latency_ms = 300;
    rows[2].success = false;
    rows[2].input_tokens = 200;
    rows[2].output_tokens = 100;
    rows[3].latency_ms = 200;
    repo.record_interactions(S, &rows).await.unwrap();
    let march = Some(DateRange {
        from: at(2026, 3, 1, 0),
        to: at(2026, 4, 1, 0),
    });

    let c = repo.ai_cost_analysis(ua, Some(a), march).await.unwrap();
    assert_eq!(c.user_id, Some(a));
    assert_eq!(
        (c.total_requests, c.successful_requests, c.cache_hits),
        (4, 3, 1)
    );
    assert_eq!(c.cache_hit_rate, 0.25);
    assert_eq!((c.total_cost_nanos, c.saved_nanos), (5000, 1000));
    assert_eq!((c.input_tokens, c.output_tokens), (400, 200));
    assert_eq!(c.average_latency_ms, Some(152.5));
    let agents: Vec<_> = c
        .per_agent
        .iter()
        .map(|x| {
            (
                x.agent_type,
                x.requests,
                x.cache_hits,
                x.cost_nanos,
                x.average_latency_ms,
            )
        })
        .collect();
    assert_eq!(
        agents,
        [
            (AgentType::InsightGenerator, 1, 0, 3000, 300.0),
            (AgentType::CommunicationAdvisor, 1, 0, 1000, 200.0),
            (AgentType::LearningCoach, 2, 1, 1000, 55.0),
        ]
    );
    let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    assert_eq!(
        c.daily_trend,
        vec![
            DailyCost {
                date: day(2),
                requests: 2,
                cost_nanos: 1000
            },
            DailyCost {
                date: day(3),
                requests: 2,
                cost_nanos: 4000
            },
        ]
    );
    assert_eq!(
        c.recommendations,
        [
            "Cache hit rate is 25%, below the 70% target: widen the semantic cache's scope for non-personal agents or lower its threshold.",
            "insight_generator accounts for 60% of AI cost: consider a cheaper model or shorter prompts for it.",
            "25% of AI requests failed: check backend health and circuit breakers.",
        ]
    );

    let all = repo.ai_cost_analysis(S, None, march).await.unwrap();
    assert_eq!(
        (all.user_id, all.total_requests, all.total_cost_nanos),
        (None, 5, 10000)
    );
    assert_eq!(all.per_agent[0].agent_type, AgentType::LearningCoach);
    assert_eq!(all.per_agent[0].cost_nanos, 6000);
    assert!(
        repo.ai_cost_analysis(ua, None, march)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(
        repo.ai_cost_analysis(ua, Some(b), march)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    let empty = repo.ai_cost_analysis(ua, Some(a), None).await.unwrap();
    assert_eq!(
        (
            empty.total_requests,
            empty.average_latency_ms,
            empty.recommendations.len()
        ),
        (0, None, 0)
    );
}

async fn system_health(repo: Repo) {
    let a = user(&repo, 1).await;
    let _b = user(&repo, 2).await;
    let mut failed = interaction(a, AgentType::LearningCoach, 10, None);
    failed.success = false;
    failed.latency_ms = 300;
    repo.record_interactions(
        S,
        &[interaction(a, AgentType::LearningCoach, 10, None), failed],
    )
    .await
    .unwrap();
    repo.record_interaction(
        S,
        interaction(
            a,
            AgentType::LearningCoach,
            10,
            Some(Utc::now() - Duration::hours(3)),
        ),
    )
    .await
    .unwrap();
    repo.create_notification(
        S,
        NewNotification {
            user_id: a,
            kind: NotificationType::System,
            priority: PriorityLevel::Low,
            title: "Hi".into(),
            body: String::new(),
            data: json!({}),
        },
    )
    .await
    .unwrap();
    let h = repo.system_health(S).await.unwrap();
    assert_eq!(h.profiles, 2);
    assert_eq!(h.active_users_24h, 1);
    assert_eq!(h.ai_requests_1h, 2);
    assert_eq!(h.ai_error_rate_1h, 0.5);
    assert_eq!(h.ai_average_latency_ms_1h, Some(200.0));
    assert_eq!(h.unread_notifications, 1);
    assert!(
        repo.system_health(Actor::User(a))
            .await
            .unwrap_err()
            .is_forbidden()
    );
}

async fn bad_input(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);
    let p = practice(&repo, "P", "c", DifficultyLevel::Beginner, &[]).await;
    let long = "x".repeat(10_001);
    let big = json!({"blob": "y".repeat(70_000)});

    for (email, _) in [
        ("no-at.example.com", 0),
        ("a@b", 0),
        ("", 0),
        ("a b@c.de", 0),
    ] {
        let e = repo
            .create_profile(S, NewProfile::new(UserId::new(), email, "N"))
            .await
            .unwrap_err();
        assert_eq!(field(e), "email", "{email:?}");
    }
    let mut np = NewProfile::new(UserId::new(), "ok@example.com", "N");
    np.preferences = big.clone();
    assert_eq!(
        field(repo.create_profile(S, np).await.unwrap_err()),
        "preferences"
    );
    assert_eq!(
        field(
            repo.create_profile(S, NewProfile::new(UserId::new(), "ok@example.com", " "))
                .await
                .unwrap_err()
        ),
        "display_name"
    );

    let asmt = repo
        .create_assessment(
            ua,
            NewAssessment {
                user_id: a,
                assessment_type: "x".into(),
                title: "T".into(),
                created_at: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        field(
            repo.complete_assessment(ua, asmt.id, 101, json!(null))
                .await
                .unwrap_err()
        ),
        "score"
    );
    assert_eq!(
        field(
            repo.complete_assessment(ua, asmt.id, -1, json!(null))
                .await
                .unwrap_err()
        ),
        "score"
    );
    let e = repo
        .create_assessment(
            ua,
            NewAssessment {
                user_id: a,
                assessment_type: "Bad Type".into(),
                title: "T".into(),
                created_at: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(field(e), "assessment_type");
    // A multi-row write with one bad row writes nothing.
    let answers = vec![
        NewAnswer {
            question_id: "q1".into(),
            answer: json!(1),
            score: Some(10),
        },
        NewAnswer {
            question_id: "q2".into(),
            answer: json!(2),
            score: Some(101),
        },
    ];
    assert_eq!(
        field(
            repo.answer_assessment(ua, asmt.id, answers)
                .await
                .unwrap_err()
        ),
        "score"
    );
    let dup = vec![
        NewAnswer {
            question_id: "q1".into(),
            answer: json!(1),
            score: None,
        },
        NewAnswer {
            question_id: "q1".into(),
            answer: json!(2),
            score: None,
        },
    ];
    assert_eq!(
        field(repo.answer_assessment(ua, asmt.id, dup).await.unwrap_err()),
        "question_id"
    );
    assert_eq!(
        field(
            repo.answer_assessment(ua, asmt.id, vec![])
                .await
                .unwrap_err()
        ),
        "answers"
    );
    assert_eq!(repo.list_answers(ua, asmt.id).await.unwrap(), vec![]);

    let base = entry(a, p.id, at(2026, 1, 1, 0), 10, true);
    let cases: Vec<(NewProgress, &str)> = vec![
        (
            NewProgress {
                rating: Some(6),
                ..base.clone()
            },
            "rating",
        ),
        (
            NewProgress {
                rating: Some(0),
                ..base.clone()
            },
            "rating",
        ),
        (
            NewProgress {
                mood_before: Some(0),
                ..base.clone()
            },
            "mood_before",
        ),
        (
            NewProgress {
                mood_after: Some(11),
                ..base.clone()
            },
            "mood_after",
        ),
        (
            NewProgress {
                duration_minutes: -1,
                ..base.clone()
            },
            "duration_minutes",
        ),
        (
            NewProgress {
                completed_at: None,
                ..base.clone()
            },
            "completed_at",
        ),
        (
            NewProgress {
                completed: false,
                ..base.clone()
            },
            "completed_at",
        ),
        (
            NewProgress {
                practice_id: None,
                ..base.clone()
            },
            "activity",
        ),
        (
            NewProgress {
                notes: Some(long.clone()),
                ..base.clone()
            },
            "notes",
        ),
        (
            NewProgress {
                notes: Some("nul\0byte".into()),
                ..base.clone()
            },
            "notes",
        ),
    ];
    for (e, f) in cases {
        assert_eq!(field(repo.log_progress(ua, e).await.unwrap_err()), f);
    }
    assert_eq!(
        repo.list_progress(ua, a, None, Page::default())
            .await
            .unwrap(),
        vec![]
    );

    let g = NewGoal {
        user_id: a,
        title: "G".into(),
        description: long.clone(),
        category: "c".into(),
        target_date: None,
        milestones: vec![],
    };
    assert_eq!(
        field(repo.create_goal(ua, g).await.unwrap_err()),
        "description"
    );
    let g = NewGoal {
        user_id: a,
        title: "G".into(),
        description: String::new(),
        category: "c".into(),
        target_date: None,
        milestones: vec![String::new()],
    };
    assert_eq!(
        field(repo.create_goal(ua, g).await.unwrap_err()),
        "milestones"
    );
    let n = NewNotification {
        user_id: a,
        kind: NotificationType::System,
        priority: PriorityLevel::Low,
        title: "T".into(),
        body: String::new(),
        data: big.clone(),
    };
    assert_eq!(
        field(repo.create_notification(ua, n).await.unwrap_err()),
        "data"
    );
    let n = NewNotification {
        user_id: a,
        kind: NotificationType::System,
        priority: PriorityLevel::Low,
        title: "T".into(),
        body: String::new(),
        data: json!({"s": "a\u{0}b"}),
    };
    assert_eq!(
        field(repo.create_notification(ua, n).await.unwrap_err()),
        "data"
    );
    let mut i = interaction(a, AgentType::LearningCoach, -1, None);
    assert_eq!(
        field(repo.record_interaction(ua, i.clone()).await.unwrap_err()),
        "[0].cost_nanos"
    );
    i.cost_nanos = 1;
    i.output = big;
    assert_eq!(
        field(repo.record_interaction(ua, i).await.unwrap_err()),
        "[0].output"
    );

    assert_eq!(
        field(
            repo.list_goals(
                ua,
                a,
                Page {
                    limit: 0,
                    offset: 0
                }
            )
            .await
            .unwrap_err()
        ),
        "limit"
    );
    assert_eq!(
        field(
            repo.list_goals(
                ua,
                a,
                Page {
                    limit: 501,
                    offset: 0
                }
            )
            .await
            .unwrap_err()
        ),
        "limit"
    );
    assert_eq!(
        field(
            repo.search_practices(ua, "  ", Page::default())
                .await
                .unwrap_err()
        ),
        "query"
    );
    let backwards = DateRange {
        from: at(2026, 2, 1, 0),
        to: at(2026, 1, 1, 0),
    };
    assert_eq!(
        field(
            repo.user_statistics(ua, a, Some(backwards))
                .await
                .unwrap_err()
        ),
        "range"
    );
    let e = repo
        .create_assessment(
            ua,
            NewAssessment {
                user_id: UserId::new(),
                assessment_type: "x".into(),
                title: "T".into(),
                created_at: None,
            },
        )
        .await
        .unwrap_err();
    assert!(e.is_forbidden(), "{e:?}");
    let e = repo
        .create_assessment(
            S,
            NewAssessment {
                user_id: UserId::new(),
                assessment_type: "x".into(),
                title: "T".into(),
                created_at: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(field(e), "user_id");
}

async fn isolation(repo: Repo) {
    let a = user(&repo, 1).await;
    let b = user(&repo, 2).await;
    let (ua, ub) = (Actor::User(a), Actor::User(b));
    let p = practice(&repo, "P", "c", DifficultyLevel::Beginner, &[]).await;
    let asmt = repo
        .create_assessment(
            ua,
            NewAssessment {
                user_id: a,
                assessment_type: "x".into(),
                title: "T".into(),
                created_at: None,
            },
        )
        .await
        .unwrap();
    let goal = repo
        .create_goal(
            ua,
            NewGoal {
                user_id: a,
                title: "G".into(),
                description: String::new(),
                category: "c".into(),
                target_date: None,
                milestones: vec!["m".into()],
            },
        )
        .await
        .unwrap();
    let path = repo
        .create_learning_path(
            ua,
            NewLearningPath {
                user_id: a,
                title: "L".into(),
                description: String::new(),
                practice_ids: vec![p.id],
            },
        )
        .await
        .unwrap();
    let note = repo
        .create_notification(
            ua,
            NewNotification {
                user_id: a,
                kind: NotificationType::Reminder,
                priority: PriorityLevel::Low,
                title: "N".into(),
                body: String::new(),
                data: json!({}),
            },
        )
        .await
        .unwrap();
    let logged = repo
        .log_progress(ua, entry(a, p.id, at(2026, 1, 1, 0), 5, true))
        .await
        .unwrap();
    repo.record_interaction(ua, interaction(a, AgentType::LearningCoach, 5, None))
        .await
        .unwrap();
    repo.answer_assessment(
        ua,
        asmt.id,
        vec![NewAnswer {
            question_id: "q0".into(),
            answer: json!("a's answer"),
            score: Some(3),
        }],
    )
    .await
    .unwrap();

    // b reads nothing of a's: single rows are "not found", lists are refused.
    assert!(
        repo.get_progress_entry(ub, logged.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        repo.get_notification(ub, note.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    // Hydrating a's change events as b yields nothing, for every table.
    for (table, id) in [
        (ChangeTable::Assessments, asmt.id.0),
        (ChangeTable::Goals, goal.id.0),
        (ChangeTable::LearningPaths, path.id.0),
        (ChangeTable::Notifications, note.id.0),
        (ChangeTable::Progress, logged.id.0),
    ] {
        let event = ChangeEvent {
            table,
            op: ChangeOp::Update,
            id,
            user_id: a,
            seq: 1,
            at: Utc::now(),
        };
        assert_eq!(
            hydrate(repo.as_ref(), ub, &event).await.unwrap(),
            None,
            "{table:?}"
        );
        assert!(
            hydrate(repo.as_ref(), ua, &event).await.unwrap().is_some(),
            "{table:?}"
        );
    }
    assert!(
        repo.ai_cost_analysis(ub, Some(a), None)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(repo.erase_user(ub, a).await.unwrap_err().is_forbidden());
    assert!(repo.get_profile(ub, a).await.unwrap_err().is_not_found());
    assert!(
        repo.get_assessment(ub, asmt.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        repo.list_answers(ub, asmt.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(repo.get_goal(ub, goal.id).await.unwrap_err().is_not_found());
    assert!(
        repo.get_learning_path(ub, path.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let pg = Page::default();
    assert!(
        repo.list_assessments(ub, a, &AssessmentFilter::default(), pg)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(repo.list_goals(ub, a, pg).await.unwrap_err().is_forbidden());
    assert!(
        repo.list_progress(ub, a, None, pg)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(
        repo.list_learning_paths(ub, a, pg)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(
        repo.list_unread_notifications(ub, a, pg)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(
        repo.list_interactions(ub, a, pg)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(
        repo.user_statistics(ub, a, None)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(
        repo.learning_recommendations(ub, a, 5)
            .await
            .unwrap_err()
            .is_forbidden()
    );

    // b changes nothing of a's.
    let nf = |r: Result<_>| assert!(r.unwrap_err().is_not_found());
    nf(repo
        .answer_assessment(
            ub,
            asmt.id,
            vec![NewAnswer {
                question_id: "q".into(),
                answer: json!(1),
                score: None,
            }],
        )
        .await
        .map(|_| ()));
    nf(repo
        .complete_assessment(ub, asmt.id, 1, json!(null))
        .await
        .map(|_| ()));
    nf(repo
        .update_goal(
            ub,
            goal.id,
            GoalUpdate {
                title: Some("mine".into()),
                ..Default::default()
            },
        )
        .await
        .map(|_| ()));
    nf(repo.set_goal_progress(ub, goal.id, 100).await.map(|_| ()));
    nf(repo.complete_milestone(ub, goal.id, 0).await.map(|_| ()));
    nf(repo.delete_goal(ub, goal.id).await);
    nf(repo.advance_learning_path(ub, path.id, 1).await.map(|_| ()));
    nf(repo
        .update_profile(
            ub,
            a,
            ProfileUpdate {
                display_name: Some("B was here".into()),
                ..Default::default()
            },
        )
        .await
        .map(|_| ()));
    assert!(
        repo.mark_notifications_read(ub, a, &[note.id])
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert_eq!(
        repo.mark_notifications_read(ub, b, &[note.id])
            .await
            .unwrap(),
        0
    );
    // ... nor writes rows in a's name, nor points at a's rows.
    assert!(
        repo.log_progress(ub, entry(a, p.id, at(2026, 1, 2, 0), 5, true))
            .await
            .unwrap_err()
            .is_forbidden()
    );
    let sneaky = NewProgress {
        goal_id: Some(goal.id),
        ..entry(b, p.id, at(2026, 1, 2, 0), 5, true)
    };
    assert_eq!(
        field(repo.log_progress(ub, sneaky).await.unwrap_err()),
        "goal_id"
    );

    // a's data is untouched.
    assert_eq!(
        repo.get_profile(ua, a).await.unwrap().display_name,
        "User 1"
    );
    assert_eq!(
        repo.list_answers(ua, asmt.id).await.unwrap()[0].answer,
        json!("a's answer")
    );
    assert_eq!(
        repo.get_progress_entry(ua, logged.id).await.unwrap(),
        logged
    );
    assert_eq!(repo.get_notification(ua, note.id).await.unwrap(), note);
    assert_eq!(repo.get_goal(ua, goal.id).await.unwrap(), goal);
    assert_eq!(repo.get_learning_path(ua, path.id).await.unwrap(), path);
    assert_eq!(repo.get_assessment(ua, asmt.id).await.unwrap(), asmt);
    assert_eq!(
        repo.list_unread_notifications(ua, a, pg)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(repo.list_progress(ua, a, None, pg).await.unwrap().len(), 1);
    assert_eq!(
        repo.ai_cost_analysis(ub, Some(b), None)
            .await
            .unwrap()
            .total_requests,
        0
    );
}

async fn erase(repo: Repo) {
    let a = user(&repo, 1).await;
    let b = user(&repo, 2).await;
    let p = practice(&repo, "P", "c", DifficultyLevel::Beginner, &[]).await;
    for u in [a, b] {
        let ua = Actor::User(u);
        for month in [1, 6] {
            let asmt = repo
                .create_assessment(
                    ua,
                    NewAssessment {
                        user_id: u,
                        assessment_type: "x".into(),
                        title: "T".into(),
                        created_at: Some(at(2026, month, 3, 0)),
                    },
                )
                .await
                .unwrap();
            repo.answer_assessment(
                ua,
                asmt.id,
                vec![
                    NewAnswer {
                        question_id: "q1".into(),
                        answer: json!(1),
                        score: None,
                    },
                    NewAnswer {
                        question_id: "q2".into(),
                        answer: json!(2),
                        score: None,
                    },
                ],
            )
            .await
            .unwrap();
        }
        let goal = repo
            .create_goal(
                ua,
                NewGoal {
                    user_id: u,
                    title: "G".into(),
                    description: String::new(),
                    category: "c".into(),
                    target_date: None,
                    milestones: vec![],
                },
            )
            .await
            .unwrap();
        repo.create_learning_path(
            ua,
            NewLearningPath {
                user_id: u,
                title: "L".into(),
                description: String::new(),
                practice_ids: vec![p.id],
            },
        )
        .await
        .unwrap();
        for d in 1..=3 {
            let e = NewProgress {
                goal_id: Some(goal.id),
                ..entry(u, p.id, at(2026, 1, d, 0), 5, true)
            };
            repo.log_progress(ua, e).await.unwrap();
        }
        repo.create_notification(
            ua,
            NewNotification {
                user_id: u,
                kind: NotificationType::Reminder,
                priority: PriorityLevel::Low,
                title: "N".into(),
                body: String::new(),
                data: json!({}),
            },
        )
        .await
        .unwrap();
        // Interactions in two different weeks (two partitions on PostgreSQL).
        let batch = [
            interaction(u, AgentType::LearningCoach, 5, Some(at(2026, 1, 5, 0))),
            interaction(u, AgentType::LearningCoach, 5, Some(at(2026, 3, 5, 0))),
        ];
        repo.record_interactions(ua, &batch).await.unwrap();
    }

    // Only the service erases.
    assert!(
        repo.erase_user(Actor::User(a), a)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    let report = repo.erase_user(S, a).await.unwrap();
    assert_eq!(
        report,
        ErasureReport {
            profiles: 1,
            assessments: 2,
            answers: 4,
            goals: 1,
            progress: 3,
            learning_paths: 1,
            notifications: 1,
            ai_interactions: 2,
        }
    );
    assert_eq!(report.total(), 15);
    // Nothing of a's is left, not even for the service.
    assert!(repo.get_profile(S, a).await.unwrap_err().is_not_found());
    let pg = Page::default();
    assert!(
        repo.list_assessments(S, a, &AssessmentFilter::default(), pg)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(repo.list_goals(S, a, pg).await.unwrap().is_empty());
    assert!(repo.list_progress(S, a, None, pg).await.unwrap().is_empty());
    assert!(repo.list_learning_paths(S, a, pg).await.unwrap().is_empty());
    assert!(
        repo.list_unread_notifications(S, a, pg)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(repo.list_interactions(S, a, pg).await.unwrap().is_empty());
    assert_eq!(
        repo.ai_cost_analysis(S, Some(a), None)
            .await
            .unwrap()
            .total_requests,
        0
    );
    // b keeps everything.
    let ub = Actor::User(b);
    assert_eq!(
        repo.list_assessments(ub, b, &AssessmentFilter::default(), pg)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(repo.list_progress(ub, b, None, pg).await.unwrap().len(), 3);
    assert_eq!(repo.list_interactions(ub, b, pg).await.unwrap().len(), 2);
    // a's email is free again; erasing twice is harmless.
    assert_eq!(
        repo.erase_user(S, a).await.unwrap(),
        ErasureReport::default()
    );
    repo.create_profile(
        S,
        NewProfile::new(a, format!("user1-{a}@example.com"), "Again"),
    )
    .await
    .unwrap();
}
