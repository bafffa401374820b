//! The token budget: a context cut deterministically, a history that keeps the
//! newest turns.

use chrono::{Duration, Utc};
use kasama::ContextProvider;
use kasama::agent::prompt::canonical_json;
use kasama::agent::{ChatMessage, Role, estimate_tokens};
use kasama::prelude::*;

use crate::{Repo, practice, question, session, user};

pub(crate) async fn truncation_is_deterministic_and_within_budget(repo: Repo) {
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

pub(crate) async fn history_keeps_the_newest_turns_that_fit(repo: Repo) {
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
                role: MessageRole::try_from(t.role).unwrap(),
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

/// A follow-up in one conversation is never keyed like the same words in another:
/// the history is part of the request's fingerprint, and the same conversation state
/// gives the same fingerprint.
pub(crate) async fn a_follow_up_is_keyed_by_its_conversation(repo: Repo) {
    let a = user(&repo, "Alex").await;
    let ua = Actor::User(a);
    let agent = AgentType::CommunicationAdvisor;
    let mut threads = Vec::new();
    for opener in [
        "How do I talk to my partner about money?",
        "How do I talk to my sister about our holidays?",
    ] {
        let c = repo
            .create_conversation(
                ua,
                NewConversation {
                    user_id: a,
                    agent,
                    title: opener.into(),
                },
            )
            .await
            .unwrap();
        for (role, content) in [
            (MessageRole::User, opener),
            (MessageRole::Assistant, "Start with how you feel."),
        ] {
            let m = NewConversationMessage {
                conversation_id: c.id,
                role,
                content: content.into(),
            };
            repo.add_message(ua, m).await.unwrap();
        }
        threads.push(c.id);
    }
    let cp = ContextProvider::new(repo.clone());
    let ctx = cp
        .context_for(a, agent, &question("and what about with my mother?"))
        .await
        .unwrap();
    let follow_up = |history: Vec<ChatMessage>| {
        AiRequest::new(a, agent, question("and what about with my mother?"))
            .with_context(ctx.clone())
            .with_history(history)
            .fingerprint()
    };
    let h0 = cp.history_for(a, threads[0], 500).await.unwrap();
    let h1 = cp.history_for(a, threads[1], 500).await.unwrap();
    assert_eq!(h0.len(), 2);
    assert_eq!(h0[0].role, Role::User);
    assert_ne!(follow_up(h0.clone()), follow_up(h1));
    assert_eq!(
        follow_up(h0),
        follow_up(cp.history_for(a, threads[0], 500).await.unwrap())
    );
    // A new turn in the thread is a new state, so a new key.
    let before = follow_up(cp.history_for(a, threads[0], 500).await.unwrap());
    let m = NewConversationMessage {
        conversation_id: threads[0],
        role: MessageRole::User,
        content: "It went badly.".into(),
    };
    repo.add_message(ua, m).await.unwrap();
    assert_ne!(
        before,
        follow_up(cp.history_for(a, threads[0], 500).await.unwrap())
    );
}
