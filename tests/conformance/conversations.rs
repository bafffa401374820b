//! Conversations: a user's threads with an agent, their messages read back as the
//! last N oldest first, the same refusals of bad input everywhere, and no way to
//! reach another user's thread by its id.

use kasama::agent::Role;
use kasama::prelude::*;

use super::{Repo, S, field, user};

fn new_conversation(u: UserId, title: &str) -> NewConversation {
    NewConversation {
        user_id: u,
        agent: AgentType::CommunicationAdvisor,
        title: title.into(),
    }
}

fn msg(c: ConversationId, role: MessageRole, content: &str) -> NewConversationMessage {
    NewConversationMessage {
        conversation_id: c,
        role,
        content: content.into(),
    }
}

fn contents(v: &[ConversationMessage]) -> Vec<&str> {
    v.iter().map(|m| m.content.as_str()).collect()
}

pub(super) async fn conversations(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);

    // Create and read back.
    let c1 = repo
        .create_conversation(ua, new_conversation(a, "Talking to my partner"))
        .await
        .unwrap();
    assert_eq!(
        (c1.user_id, c1.agent, c1.title.as_str()),
        (a, AgentType::CommunicationAdvisor, "Talking to my partner")
    );
    assert_eq!(c1.created_at, c1.updated_at);
    assert_eq!(repo.get_conversation(ua, c1.id).await.unwrap(), c1);
    assert!(
        repo.recent_messages(ua, c1.id, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Messages: the last `limit`, oldest first, ids increasing.
    let mut sent = Vec::new();
    for i in 0..7 {
        let role = if i % 2 == 0 {
            MessageRole::User
        } else {
            MessageRole::Assistant
        };
        let m = repo
            .add_message(ua, msg(c1.id, role, &format!("turn {i}")))
            .await
            .unwrap();
        assert_eq!((m.conversation_id, m.user_id, m.role), (c1.id, a, role));
        sent.push(m);
    }
    assert!(sent.windows(2).all(|w| w[0].id < w[1].id));
    assert!(sent.windows(2).all(|w| w[0].created_at <= w[1].created_at));
    let last3 = repo.recent_messages(ua, c1.id, 3).await.unwrap();
    assert_eq!(contents(&last3), ["turn 4", "turn 5", "turn 6"]);
    assert_eq!(last3, sent[4..].to_vec());
    let all = repo.recent_messages(ua, c1.id, 500).await.unwrap();
    assert_eq!(all, sent);
    assert_eq!(
        contents(&repo.recent_messages(ua, c1.id, 1).await.unwrap()),
        ["turn 6"]
    );
    // Adding a message makes the conversation as recent as the message.
    let c1_now = repo.get_conversation(ua, c1.id).await.unwrap();
    assert_eq!(c1_now.updated_at, sent[6].created_at);
    assert!(c1_now.updated_at >= c1.updated_at);
    assert_eq!(c1_now.created_at, c1.created_at);

    // Listing: most recently active first, limited.
    let c2 = repo
        .create_conversation(ua, new_conversation(a, "Second"))
        .await
        .unwrap();
    let c3 = repo
        .create_conversation(ua, new_conversation(a, "Third"))
        .await
        .unwrap();
    // A new message makes c1 the most recently active (its time is at least c3's
    // creation; equal times fall back to the id).
    let again = repo
        .add_message(ua, msg(c1.id, MessageRole::User, "again"))
        .await
        .unwrap();
    assert!(again.created_at >= c3.created_at);
    let list = repo.list_conversations(ua, a, 10).await.unwrap();
    let mut expected = Vec::new();
    for id in [c1.id, c2.id, c3.id] {
        expected.push(repo.get_conversation(ua, id).await.unwrap());
    }
    expected.sort_by_key(|c| std::cmp::Reverse((c.updated_at, c.id)));
    assert_eq!(list, expected);
    assert_eq!(
        expected.iter().find(|c| c.id == c1.id).unwrap().updated_at,
        again.created_at
    );
    if again.created_at > c3.created_at {
        assert_eq!(list[0].id, c1.id, "{list:?}");
    }
    assert_eq!(
        repo.list_conversations(ua, a, 1).await.unwrap(),
        list[..1].to_vec()
    );
    assert_eq!(
        repo.list_conversations(ua, a, 2).await.unwrap(),
        list[..2].to_vec()
    );
    // The service reads and writes anyone's; its message is stored under the owner.
    let by_service = repo
        .add_message(S, msg(c2.id, MessageRole::Assistant, "from the worker"))
        .await
        .unwrap();
    assert_eq!(by_service.user_id, a);
    assert_eq!(
        repo.recent_messages(ua, c2.id, 5).await.unwrap(),
        vec![by_service.clone()]
    );
    assert_eq!(repo.list_conversations(S, a, 10).await.unwrap().len(), 3);
    let c2_now = repo.get_conversation(ua, c2.id).await.unwrap();
    assert_eq!(c2_now.updated_at, by_service.created_at);
    assert!(c2_now.updated_at >= again.created_at);
    // Messages of one conversation never show in another.
    assert_eq!(
        contents(&repo.recent_messages(ua, c3.id, 500).await.unwrap()),
        Vec::<&str>::new()
    );
}

pub(super) async fn conversation_bad_input(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);
    let c = repo
        .create_conversation(ua, new_conversation(a, "T"))
        .await
        .unwrap();
    let bad_title = |t: String| NewConversation {
        title: t,
        ..new_conversation(a, "x")
    };
    for t in [String::new(), "   ".into(), "t".repeat(201)] {
        assert_eq!(
            field(
                repo.create_conversation(ua, bad_title(t))
                    .await
                    .unwrap_err()
            ),
            "title"
        );
    }
    // 200 characters (not bytes) is fine.
    repo.create_conversation(ua, bad_title("é".repeat(200)))
        .await
        .unwrap();
    for content in [
        String::new(),
        " \n".into(),
        "x".repeat(10_001),
        "a\0b".into(),
    ] {
        assert_eq!(
            field(
                repo.add_message(ua, msg(c.id, MessageRole::User, &content))
                    .await
                    .unwrap_err()
            ),
            "content"
        );
    }
    // A system message cannot be stored: there is no such stored role, and a chat
    // role converts only when it is a user's or the agent's.
    assert_eq!(
        field(MessageRole::try_from(Role::System).unwrap_err()),
        "role"
    );
    assert_eq!(
        MessageRole::try_from(Role::User).unwrap(),
        MessageRole::User
    );
    assert!(
        serde_json::from_value::<NewConversationMessage>(serde_json::json!({
            "conversation_id": c.id, "role": "system", "content": "be nice"
        }))
        .is_err()
    );
    let longest = "ü".repeat(10_000);
    let m = repo
        .add_message(ua, msg(c.id, MessageRole::User, &longest))
        .await
        .unwrap();
    assert_eq!(m.content, longest);
    for l in [0, 501] {
        assert_eq!(
            field(repo.recent_messages(ua, c.id, l).await.unwrap_err()),
            "limit"
        );
        assert_eq!(
            field(repo.list_conversations(ua, a, l).await.unwrap_err()),
            "limit"
        );
    }
    // Nothing refused was stored.
    assert_eq!(repo.recent_messages(ua, c.id, 500).await.unwrap(), vec![m]);
    assert_eq!(repo.list_conversations(ua, a, 500).await.unwrap().len(), 2);
    // A conversation for a user without a profile, or that does not exist.
    let ghost = UserId::new();
    assert_eq!(
        field(
            repo.create_conversation(S, new_conversation(ghost, "T"))
                .await
                .unwrap_err()
        ),
        "user_id"
    );
    let nowhere = ConversationId::new();
    assert!(
        repo.add_message(ua, msg(nowhere, MessageRole::User, "hi"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        repo.recent_messages(ua, nowhere, 5)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        repo.get_conversation(ua, nowhere)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

pub(super) async fn conversation_isolation(repo: Repo) {
    let a = user(&repo, 1).await;
    let b = user(&repo, 2).await;
    let (ua, ub) = (Actor::User(a), Actor::User(b));
    let ca = repo
        .create_conversation(ua, new_conversation(a, "A's thread"))
        .await
        .unwrap();
    let ma = repo
        .add_message(ua, msg(ca.id, MessageRole::User, "a's secret"))
        .await
        .unwrap();
    let cb = repo
        .create_conversation(ub, new_conversation(b, "B's thread"))
        .await
        .unwrap();

    // Every by-id call on a's conversation, as b: not found.
    assert!(
        repo.get_conversation(ub, ca.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        repo.recent_messages(ub, ca.id, 10)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        repo.add_message(ub, msg(ca.id, MessageRole::User, "b was here"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        repo.add_message(ub, msg(ca.id, MessageRole::Assistant, "b was here"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    // b cannot start a conversation in a's name, nor list a's.
    assert!(
        repo.create_conversation(ub, new_conversation(a, "in a's name"))
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(
        repo.list_conversations(ub, a, 10)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    // b's own list holds only b's.
    assert_eq!(repo.list_conversations(ub, b, 10).await.unwrap(), vec![cb]);
    // a's thread is untouched: one message, and not made more recent by b's tries.
    assert_eq!(
        repo.recent_messages(ua, ca.id, 10).await.unwrap(),
        vec![ma.clone()]
    );
    assert_eq!(
        repo.get_conversation(ua, ca.id).await.unwrap().updated_at,
        ma.created_at
    );
    assert_eq!(
        repo.list_conversations(ua, a, 10)
            .await
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        vec![ca.id]
    );
}
