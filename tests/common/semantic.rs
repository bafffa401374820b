//! Requests and answers for the semantic-cache tests.

use std::time::Duration;

use async_trait::async_trait;

use kasama::agent::{AiRequest, AiResponse, Usage};
use kasama::prelude::*;
use std::sync::Arc;

use kasama::semantic::{CacheTier, Embedder, ErrorBudget, Lookup, SemanticCache};
use serde_json::json;

/// A backend's answer `{"advice": text}`.
pub fn answer(text: &str) -> AiResponse {
    response(json!({ "advice": text }))
}

/// A backend's answer with `output` (20 tokens in, 40 out, model `sim-1`).
pub fn response(output: serde_json::Value) -> AiResponse {
    AiResponse {
        output,
        usage: Usage {
            input_tokens: 20,
            output_tokens: 40,
        },
        usage_estimated: false,
        model: "sim-1".into(),
        backend: "sim".into(),
        latency: Duration::from_millis(5),
    }
}

/// `user` asks the communication advisor `q`.
pub fn ask(user: UserId, q: &str) -> AiRequest {
    AiRequest::new(user, AgentType::CommunicationAdvisor, q)
}

/// The tier and advice of a hit, `None` for a miss.
pub fn served(l: &Lookup) -> Option<(CacheTier, String)> {
    match l {
        Lookup::Hit { answer, tier, .. } => {
            Some((*tier, answer.output["advice"].as_str().unwrap().to_string()))
        }
        Lookup::Miss { .. } => None,
    }
}

/// splitmix64.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub const DIAL_DIM: usize = 512;

/// A dial: `"anchor"` embeds as e0; `"<s> <n>"` as `s·e0 + √(1−s²)·e_k` (k = 1 + n
/// mod 511), so its cosine with the anchor is exactly `s` and with other questions
/// lower.
pub struct Dial;

#[async_trait]
impl Embedder for Dial {
    fn name(&self) -> &str {
        "dial"
    }
    fn dimension(&self) -> usize {
        DIAL_DIM
    }
    fn default_threshold(&self) -> f32 {
        0.8
    }
    async fn embed(&self, texts: &[String]) -> kasama::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.0f32; DIAL_DIM];
                let mut w = t.split(' ');
                match (w.next().and_then(|s| s.parse::<f32>().ok()), w.next()) {
                    (Some(s), Some(n)) => {
                        let k = 1 + n.parse::<usize>().unwrap_or(0) % (DIAL_DIM - 1);
                        v[0] = s;
                        v[k] = (1.0 - s * s).max(0.0).sqrt();
                    }
                    _ => v[0] = 1.0,
                }
                v
            })
            .collect())
    }
}

/// A cache on the [`Dial`] in error-budget mode (no salience check, seed 11).
pub fn dial_cache(budget: ErrorBudget) -> SemanticCache {
    SemanticCache::builder(Arc::new(Dial))
        .salience_check(false)
        .ttl(Duration::from_secs(300 * 24 * 3600))
        .error_budget(budget)
        .seed(11)
        .build()
        .unwrap()
}

/// A new user with `"anchor"` answered `"stored"` in their scope.
pub async fn anchored(cache: &SemanticCache) -> UserId {
    let u = UserId::new();
    cache
        .store(&ask(u, "anchor"), &answer("stored"), None)
        .await
        .unwrap();
    u
}

/// Runs requests `from..from+n`, `step` apart: `pick(i)` gives each one's similarity
/// to the anchor and whether the stored answer is wrong for it; audits are resolved
/// with the truth. Returns (served, served wrong).
pub async fn dial_run(
    cache: &SemanticCache,
    u: UserId,
    (from, n): (u64, u64),
    step: Duration,
    pick: impl Fn(u64) -> (f32, bool),
) -> (u64, u64) {
    let (mut served, mut bad) = (0, 0);
    for i in from..from + n {
        let (s, wrong) = pick(i);
        match cache.lookup(&ask(u, &format!("{s} {i}"))).await.unwrap() {
            Lookup::Hit { tier, .. } => {
                assert_eq!(tier, CacheTier::Semantic);
                served += 1;
                bad += u64::from(wrong);
            }
            Lookup::Miss { audit, .. } => {
                if let Some(t) = audit {
                    assert!(cache.resolve_audit(t, !wrong));
                }
            }
        }
        tokio::time::advance(step).await;
    }
    (served, bad)
}
