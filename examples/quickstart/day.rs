//! The day's AI requests: planned at seeded moments, then sent through the pipeline
//! each at its moment. The personal agents' requests carry the user's own data (a
//! `ContextProvider` reads it as the user); about a third of the communication
//! advisor's and the learning coach's are turns of a conversation — the user's message
//! stored, the answer streamed with the conversation's last turns, then stored.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use kasama::agent::{AiRequest, output_text};
use kasama::pipeline::{AiPipeline, StreamItem};
use kasama::prelude::*;

use crate::population::Users;
use crate::questions::{TOPICS, questions};
use crate::rng::Rng;

/// One request: when (from the start of the day), who, to which agent, what.
pub(crate) struct Request {
    at: Duration,
    user: (UserId, SubscriptionTier),
    agent: AgentType,
    text: String,
    /// Asked as the next turn of the user's conversation with the agent.
    turn: bool,
}

/// Most tokens of conversation history a turn carries.
const HISTORY_TOKENS: u32 = 1_000;

/// `n` requests over `day`, in order of time. A user sometimes repeats an earlier
/// question word for word, sometimes paraphrases one, sometimes adds details.
pub(crate) fn plan(rng: &mut Rng, users: &Users, n: usize, day: Duration) -> Vec<Request> {
    let mut asked: Vec<Vec<String>> = vec![Vec::new(); users.len()];
    let mut plan = Vec::with_capacity(n);
    for _ in 0..n {
        let ui = rng.below(users.len());
        let agent = AgentType::ALL[rng.below(5)];
        let qs = questions(agent);
        let (q, para) = qs[rng.below(qs.len())];
        let topic = TOPICS[rng.below(TOPICS.len())];
        let text = if !asked[ui].is_empty() && rng.chance(0.25) {
            asked[ui][rng.below(asked[ui].len())].clone()
        } else if rng.chance(0.3) {
            para.replace("{t}", topic)
        } else if rng.chance(0.5) {
            q.replace("{t}", topic)
        } else {
            format!(
                "{} My situation: week {}, day {}.",
                q.replace("{t}", topic),
                rng.below(52),
                rng.below(7)
            )
        };
        asked[ui].push(text.clone());
        let at = Duration::from_millis(rng.next() % day.as_millis() as u64);
        let turn = matches!(
            agent,
            AgentType::CommunicationAdvisor | AgentType::LearningCoach
        ) && rng.chance(0.35);
        plan.push(Request {
            at,
            user: users[ui],
            agent,
            text,
            turn,
        });
    }
    plan.sort_by_key(|r| r.at);
    plan
}

/// How the requests ended: the number answered, and the others by error kind.
pub(crate) type Outcomes = (usize, BTreeMap<String, usize>);

/// What the conversations did.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub(crate) struct Conversations {
    /// Conversations started.
    pub(crate) started: usize,
    /// Turns asked (each answer streamed).
    pub(crate) turns: usize,
    /// Turns asked with earlier turns in their prompt.
    pub(crate) with_history: usize,
    /// Answers streamed to their end and stored.
    pub(crate) answers_stored: usize,
}

/// One request: the user's data as context for the personal agents, and — for a
/// conversation turn — its history; a turn is streamed and stored.
async fn ask(
    repo: &Arc<dyn Repository>,
    pipeline: &AiPipeline,
    ctx: &ContextProvider,
    threads: &Mutex<BTreeMap<(UserId, AgentType), ConversationId>>,
    convs: &Mutex<Conversations>,
    r: Request,
) -> Result<()> {
    let (u, tier) = r.user;
    let personal = pipeline
        .semantic_cache()
        .is_none_or(|c| c.is_personal(r.agent));
    let context = if personal {
        ctx.context_for(u, r.agent, &serde_json::Value::Null)
            .await?
    } else {
        serde_json::Value::Null
    };
    let req = AiRequest::new(u, r.agent, r.text.clone()).with_context(context);
    if !r.turn {
        return pipeline.complete(req, tier).await.map(|_| ());
    }
    let me = Actor::User(u);
    let known = threads.lock().unwrap().get(&(u, r.agent)).copied();
    let id = match known {
        Some(id) => id,
        None => {
            let c = repo
                .create_conversation(
                    me,
                    NewConversation {
                        user_id: u,
                        agent: r.agent,
                        title: "Today".into(),
                    },
                )
                .await?;
            convs.lock().unwrap().started += 1;
            *threads.lock().unwrap().entry((u, r.agent)).or_insert(c.id)
        }
    };
    let history = ctx.history_for(u, id, HISTORY_TOKENS).await?;
    let with_history = !history.is_empty();
    let mut stream = pipeline.stream(req.with_history(history), tier).await?;
    repo.add_message(
        me,
        NewConversationMessage {
            conversation_id: id,
            role: MessageRole::User,
            content: r.text,
        },
    )
    .await?;
    {
        let mut c = convs.lock().unwrap();
        c.turns += 1;
        c.with_history += usize::from(with_history);
    }
    while let Some(item) = stream.next().await {
        if let StreamItem::Done(out) = item? {
            repo.add_message(
                me,
                NewConversationMessage {
                    conversation_id: id,
                    role: MessageRole::Assistant,
                    content: output_text(&out.response.output),
                },
            )
            .await?;
            convs.lock().unwrap().answers_stored += 1;
        }
    }
    Ok(())
}

/// Sends every request at its moment (a task each), with a progress bar; returns when
/// all have ended.
pub(crate) async fn run(
    repo: &Arc<dyn Repository>,
    pipeline: &Arc<AiPipeline>,
    plan: Vec<Request>,
) -> std::result::Result<(Outcomes, Conversations), Box<dyn std::error::Error>> {
    let ctx = Arc::new(ContextProvider::new(repo.clone()));
    let threads: Arc<Mutex<BTreeMap<(UserId, AgentType), ConversationId>>> = Arc::default();
    let convs: Arc<Mutex<Conversations>> = Arc::default();
    let bar = ProgressBar::new(plan.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} requests ({msg})").unwrap());
    let start = tokio::time::Instant::now();
    let outcomes: Arc<Mutex<Outcomes>> = Arc::default();
    let mut tasks = Vec::new();
    for r in plan {
        let (pipeline, outcomes, bar) = (pipeline.clone(), outcomes.clone(), bar.clone());
        let (repo, ctx, threads, convs) =
            (repo.clone(), ctx.clone(), threads.clone(), convs.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + r.at).await;
            let res = ask(&repo, &pipeline, &ctx, &threads, &convs, r).await;
            let mut o = outcomes.lock().unwrap();
            match res {
                Ok(_) => o.0 += 1,
                Err(e) => *o.1.entry(e.kind().to_string()).or_default() += 1,
            }
            bar.inc(1);
        }));
    }
    for t in tasks {
        t.await?;
    }
    bar.finish_with_message("done");
    let o = outcomes.lock().unwrap().clone();
    let c = *convs.lock().unwrap();
    Ok((o, c))
}
