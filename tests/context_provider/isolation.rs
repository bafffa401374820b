//! Another user's ids are refused, and none of their data comes back.

use kasama::ContextProvider;
use kasama::prelude::*;
use serde_json::json;

use crate::common::fixtures::new_assessment;
use crate::{Repo, question, user};

pub(crate) async fn another_users_ids_are_refused(repo: Repo) {
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
            role: MessageRole::User,
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
