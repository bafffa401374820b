//! The day's AI requests: planned at seeded moments, then sent through the pipeline
//! each at its moment.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kasama::agent::AiRequest;
use kasama::pipeline::AiPipeline;
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
}

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
        plan.push(Request {
            at,
            user: users[ui],
            agent,
            text,
        });
    }
    plan.sort_by_key(|r| r.at);
    plan
}

/// How the requests ended: the number answered, and the others by error kind.
pub(crate) type Outcomes = (usize, BTreeMap<String, usize>);

/// Sends every request at its moment (a task each), with a progress bar; returns when
/// all have ended.
pub(crate) async fn run(
    pipeline: &Arc<AiPipeline>,
    plan: Vec<Request>,
) -> Result<Outcomes, Box<dyn std::error::Error>> {
    let bar = ProgressBar::new(plan.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} requests ({msg})").unwrap());
    let start = tokio::time::Instant::now();
    let outcomes: Arc<Mutex<Outcomes>> = Arc::default();
    let mut tasks = Vec::new();
    for r in plan {
        let (pipeline, outcomes, bar) = (pipeline.clone(), outcomes.clone(), bar.clone());
        let (u, tier) = r.user;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + r.at).await;
            let res = pipeline
                .complete(AiRequest::new(u, r.agent, r.text), tier)
                .await;
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
    Ok(o)
}
