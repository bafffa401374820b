//! Conversations on PostgreSQL, below the repository: raw SQL as the application role
//! sees and changes only the user's own threads, a message can only ever be stored
//! under its conversation's owner (even by the service), and the last-N read and the
//! per-user listing are served by their indexes.

mod common;

use kasama::prelude::*;
use tokio_postgres::error::SqlState;

const S: Actor = Actor::Service;

async fn thread_of(repo: &kasama::PgRepository, n: &str) -> (UserId, ConversationId) {
    let u = UserId::new();
    repo.create_profile(S, NewProfile::new(u, format!("{n}-{u}@example.com"), n))
        .await
        .unwrap();
    let c = repo
        .create_conversation(
            S,
            NewConversation {
                user_id: u,
                agent: AgentType::CommunicationAdvisor,
                title: format!("{n}'s thread"),
            },
        )
        .await
        .unwrap();
    repo.add_message(
        S,
        NewConversationMessage {
            conversation_id: c.id,
            role: MessageRole::User,
            content: format!("{n}'s secret"),
        },
    )
    .await
    .unwrap();
    (u, c.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_sql_as_app_role_reaches_only_own_conversations() {
    let Some(db) = common::pg().await else { return };
    let (a, ca) = thread_of(&db.repo, "a").await;
    let (b, cb) = thread_of(&db.repo, "b").await;
    let mut c = db.app().await;

    let tx = c.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('app.user_id', $1, true)",
        &[&a.to_string()],
    )
    .await
    .unwrap();
    for table in ["conversations", "conversation_messages"] {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{table}: a sees only a's row");
    }
    assert_eq!(
        tx.execute(
            "UPDATE conversations SET title = 'pwned' WHERE id = $1",
            &[&cb.0]
        )
        .await
        .unwrap(),
        0
    );
    assert_eq!(
        tx.execute(
            "DELETE FROM conversation_messages WHERE conversation_id = $1",
            &[&cb.0]
        )
        .await
        .unwrap(),
        0
    );
    tx.commit().await.unwrap();

    // A message under another user, as a user: refused by the policy.
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('app.user_id', $1, true)",
        &[&a.to_string()],
    )
    .await
    .unwrap();
    let e = tx
        .execute(
            "INSERT INTO conversation_messages (conversation_id, user_id, role, content)
             VALUES ($1, $2, 'user', 'planted')",
            &[&cb.0, &b.0],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    drop(tx);

    // Into another user's conversation under one's own id: the foreign key on
    // (conversation, owner) refuses it — and it does so even for the service.
    for (user_setting, service) in [(a.to_string(), ""), (String::new(), "on")] {
        let tx = c.transaction().await.unwrap();
        tx.execute(
            "SELECT set_config('app.user_id', $1, true), set_config('app.service', $2, true)",
            &[&user_setting, &service],
        )
        .await
        .unwrap();
        let e = tx
            .execute(
                "INSERT INTO conversation_messages (conversation_id, user_id, role, content)
                 VALUES ($1, $2, 'user', 'planted')",
                &[&cb.0, &a.0],
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(&SqlState::FOREIGN_KEY_VIOLATION), "{e}");
        drop(tx);
    }
    // Nor can a message be moved to another user afterwards.
    let tx = c.transaction().await.unwrap();
    tx.execute("SELECT set_config('app.service', 'on', true)", &[])
        .await
        .unwrap();
    let e = tx
        .execute(
            "UPDATE conversation_messages SET user_id = $2 WHERE conversation_id = $1",
            &[&ca.0, &b.0],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::FOREIGN_KEY_VIOLATION), "{e}");
    drop(tx);
    // A system message cannot be stored, whatever the client.
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('app.user_id', $1, true)",
        &[&a.to_string()],
    )
    .await
    .unwrap();
    let e = tx
        .execute(
            "INSERT INTO conversation_messages (conversation_id, user_id, role, content)
             VALUES ($1, $2, 'system', 'be nice')",
            &[&ca.0, &a.0],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::CHECK_VIOLATION), "{e}");
    drop(tx);

    // Everything is as it was.
    let msgs = db
        .repo
        .recent_messages(Actor::User(b), cb, 10)
        .await
        .unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].content, "b's secret");
    assert_eq!(
        db.repo
            .get_conversation(Actor::User(b), cb)
            .await
            .unwrap()
            .title,
        "b's thread"
    );
    assert_eq!(
        db.repo
            .recent_messages(Actor::User(a), ca, 10)
            .await
            .unwrap()[0]
            .user_id,
        a
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reads_use_their_indexes() {
    let Some(db) = common::pg().await else { return };
    let (a, ca) = thread_of(&db.repo, "a").await;
    let admin = db.admin().await;
    // Plans on a tiny table favour a scan: forbid scans (plain and bitmap), so the
    // plan shows whether an index can serve the query, in order, at all.
    admin
        .batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .await
        .unwrap();
    let plan = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let last_n = plan(
        admin
            .query(
                "EXPLAIN SELECT id FROM conversation_messages WHERE conversation_id = $1
                 ORDER BY created_at DESC, id DESC LIMIT 20",
                &[&ca.0],
            )
            .await
            .unwrap(),
    );
    assert!(
        last_n.contains("conversation_messages_recent_idx"),
        "{last_n}"
    );
    assert!(!last_n.contains("Sort"), "read in index order: {last_n}");
    let listing = plan(
        admin
            .query(
                "EXPLAIN SELECT id FROM conversations WHERE user_id = $1
                 ORDER BY updated_at DESC, id DESC LIMIT 20",
                &[&a.0],
            )
            .await
            .unwrap(),
    );
    assert!(
        listing.contains("conversations_user_updated_idx"),
        "{listing}"
    );
    assert!(!listing.contains("Sort"), "read in index order: {listing}");
    db.finish().await;
}
