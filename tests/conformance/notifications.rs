//! Notifications: creation, unread lists, marking read.

use kasama::prelude::*;
use serde_json::json;

use super::{Repo, S, user};

pub(super) async fn notifications(repo: Repo) {
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
