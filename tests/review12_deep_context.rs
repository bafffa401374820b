//! The user's own data, valid when it was stored, must not make their agent requests
//! invalid: an assessment answer nested as deep as the repository accepts (128
//! levels) sits a few levels deeper inside the assessment analyst's context, which
//! `AiRequest::validate` then refused — every analysis of that assessment was a 400.

use std::sync::Arc;

use kasama::domain::validate::MAX_JSON_DEPTH;
use kasama::prelude::*;
use serde_json::{Value, json};

fn nested(depth: usize) -> Value {
    let mut v = json!("core");
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

#[tokio::test]
async fn an_answer_nested_as_deep_as_allowed_still_gives_a_valid_request() {
    let repo: Arc<dyn Repository> = Arc::new(InMemoryRepository::new());
    let u = UserId::new();
    repo.create_profile(Actor::Service, NewProfile::new(u, "a@example.com", "A"))
        .await
        .unwrap();
    let a = repo
        .create_assessment(
            Actor::User(u),
            NewAssessment {
                user_id: u,
                assessment_type: "communication".into(),
                title: "How we talk".into(),
                created_at: None,
            },
        )
        .await
        .unwrap();
    let deep = nested(MAX_JSON_DEPTH);
    kasama::domain::validate::json("answer", &deep).expect("the repository accepts it");
    repo.answer_assessment(
        Actor::User(u),
        a.id,
        vec![
            NewAnswer {
                question_id: "q1".into(),
                answer: deep,
                score: Some(40),
            },
            NewAnswer {
                question_id: "q2".into(),
                answer: json!("often"),
                score: Some(70),
            },
        ],
    )
    .await
    .unwrap();

    let input = json!({"question": "What do my results say?"});
    let ctx = ContextProvider::new(repo.clone())
        .context_for(u, AgentType::AssessmentAnalyst, &input)
        .await
        .unwrap();
    let req = AiRequest::new(u, AgentType::AssessmentAnalyst, input).with_context(ctx.clone());
    req.validate()
        .expect("the user's own valid data makes a valid request");
    // What could be kept is: the other answer whole, the deep one cut and marked.
    assert_eq!(ctx["truncated"], true);
    let answers = ctx["assessment"]["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[1]["answer"], "often");
    assert_eq!(answers[0]["score"], 40);
    // Deterministic.
    let again = ContextProvider::new(repo)
        .context_for(u, AgentType::AssessmentAnalyst, &json!({"question": "x"}))
        .await
        .unwrap();
    assert_eq!(again, ctx);
}
