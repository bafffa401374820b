//! AI interactions: recording one or a batch, and listing them.

use kasama::prelude::*;

use super::{Repo, S, at, field, interaction, user};

pub(super) async fn interactions(repo: Repo) {
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
