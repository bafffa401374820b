//! The error-budget mode of the semantic cache (issue 14): on a simulated stream with
//! known truth the observed wrong-answer share stays within the budget while the hit
//! rate climbs; a change in what users ask (drift) is caught; evidence is kept per
//! scope; audit tickets count once, only as issued, and expire; the threshold never
//! goes below the audited similarities. Tokio's paused clock throughout.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kasama::prelude::*;
use kasama::semantic::{
    AuditTicket, CacheTier, Embedder, ErrorBudget, HashingEmbedder, Lookup, SemanticCache,
};

mod common;

use common::semantic::{anchored, answer, ask, dial_cache, dial_run, mix};

fn gauss(seed: u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let u1 = ((mix(seed ^ (2 * i as u64)) >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let u2 = (mix(seed ^ (2 * i as u64 + 1)) >> 11) as f64 / (1u64 << 53) as f64;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

const DIM: usize = 64;

/// Texts "intent I variant J": intents come in sibling pairs (2k, 2k+1) whose base
/// vectors are close (cosine ≈ 0.9), and variants spread around their intent, so
/// same-intent and sibling similarities overlap: no fixed threshold is obviously right.
struct Intents;

fn base(intent: u64) -> Vec<f32> {
    let root = unit(gauss(1_000 + intent / 2, DIM));
    if intent.is_multiple_of(2) {
        return root;
    }
    let noise = unit(gauss(5_000 + intent, DIM));
    unit(root.iter().zip(&noise).map(|(a, b)| a + 0.35 * b).collect())
}

#[async_trait]
impl Embedder for Intents {
    fn name(&self) -> &str {
        "intents"
    }
    fn dimension(&self) -> usize {
        DIM
    }
    fn default_threshold(&self) -> f32 {
        0.8
    }
    async fn embed(&self, texts: &[String]) -> kasama::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let w: Vec<u64> = t.split(' ').filter_map(|x| x.parse().ok()).collect();
                let (i, j) = (w[0], w[1]);
                let spread = 0.2 + 0.1 * (j % 8) as f32;
                let noise = unit(gauss(9_000_000 + i * 1_000 + j, DIM));
                unit(
                    base(i)
                        .iter()
                        .zip(&noise)
                        .map(|(a, b)| a + spread * b)
                        .collect(),
                )
            })
            .collect())
    }
}

struct Outcome {
    served: Vec<(usize, bool)>,
    lookups: usize,
}

/// Runs `n` requests through `cache`: a hit is served (right when it answers the
/// asked intent); a miss asks the "backend" (answers the true intent), resolves any
/// audit against the truth, and stores the fresh answer. One request per second.
async fn stream(cache: &SemanticCache, u: UserId, n: usize) -> Outcome {
    let mut out = Outcome {
        served: Vec::new(),
        lookups: 0,
    };
    for step in 0..n {
        let r = mix(step as u64 ^ 0xABCD);
        let intent = (r % 200) * (1 + (r >> 8) % 2) % 200; // some intents more frequent
        let variant = (r >> 16) % 400;
        let req = ask(u, &format!("intent {intent} variant {variant}"));
        let truth = intent.to_string();
        out.lookups += 1;
        match cache.lookup(&req).await.unwrap() {
            Lookup::Hit { answer, tier, .. } => {
                if tier == CacheTier::Semantic {
                    out.served
                        .push((step, answer.output["advice"] == truth.as_str()));
                }
            }
            Lookup::Miss {
                embedding, audit, ..
            } => {
                if let Some(t) = audit {
                    let correct = t.stored_answer["advice"] == truth.as_str();
                    assert!(cache.resolve_audit(t, correct), "a fresh ticket counts");
                }
                cache.store(&req, &answer(&truth), embedding).await.unwrap();
            }
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    out
}

#[tokio::test(start_paused = true)]
async fn an_error_budget_keeps_wrong_answers_within_it_while_the_hit_rate_climbs() {
    let budget = ErrorBudget {
        audit_share: 0.1,
        ..ErrorBudget::new(0.05)
    };
    let cache = SemanticCache::builder(Arc::new(Intents))
        .salience_check(false)
        .ttl(Duration::from_secs(3 * 3600))
        .error_budget(budget)
        .seed(7)
        .build()
        .unwrap();
    let u = UserId::new();
    let scope = cache.scope_of(&ask(u, "intent 0 variant 0"));
    assert_eq!(cache.error_estimate(&scope).unwrap().threshold, None);
    let n = 6_000;
    let out = stream(&cache, u, n).await;
    let wrong = out.served.iter().filter(|(_, ok)| !ok).count();
    let total = out.served.len();
    let quarter = |q: usize| {
        out.served
            .iter()
            .filter(|(s, _)| *s >= q * n / 4 && *s < (q + 1) * n / 4)
            .count()
    };
    let window = |from: usize| {
        out.served
            .iter()
            .filter(|(s, _)| *s >= from && *s < from + 500)
            .count()
    };
    let (first, last) = (window(0), window(n - 500));
    println!(
        "served {total} semantic hits of {} lookups, {wrong} wrong; per quarter {} {} {} {}; \
         first 500 requests {first}, last 500 {last}",
        out.lookups,
        quarter(0),
        quarter(1),
        quarter(2),
        quarter(3)
    );
    assert!(total > 500, "the budget let something through: {total}");
    assert!(
        (wrong as f64) <= 0.05 * total as f64,
        "observed wrong share {wrong}/{total} exceeds the 5 % budget"
    );
    assert!(last > 2 * first, "the hit rate climbs: {first} → {last}");
    assert!(quarter(3) >= quarter(0), "and stays up");
    let est = cache.error_estimate(&scope).unwrap();
    println!("{est:?}");
    let t = est.threshold.expect("a threshold was learned");
    assert!(est.upper_bound <= 0.05, "{est:?}");
    assert!(est.above >= 30 && est.audited >= est.above, "{est:?}");
    assert!(cache.stats().audits > 0);

    // The same stream at a fixed threshold at the budget's floor: wrong answers over
    // the budget — which is what the learned threshold prevents.
    assert!(t > budget.floor, "{t}");
    let fixed = SemanticCache::builder(Arc::new(Intents))
        .salience_check(false)
        .semantic_hits(true)
        .threshold(budget.floor)
        .ttl(Duration::from_secs(3 * 3600))
        .build()
        .unwrap();
    let out = stream(&fixed, u, n).await;
    let wrong = out.served.iter().filter(|(_, ok)| !ok).count();
    println!(
        "fixed threshold {:.2}: {wrong}/{} wrong",
        budget.floor,
        out.served.len()
    );
    assert!(
        wrong as f64 > 0.05 * out.served.len() as f64,
        "the simulated stream is too easy to show anything: {wrong}/{}",
        out.served.len()
    );
    // Outside error-budget mode audits are ignored and no estimate exists.
    assert!(fixed.error_estimate(&scope).is_none());
}

#[tokio::test]
async fn bad_error_budgets_are_refused_at_build() {
    for b in [ErrorBudget::new(0.0), ErrorBudget::new(f64::NAN)] {
        assert!(
            SemanticCache::builder(Arc::new(HashingEmbedder::new()))
                .error_budget(b)
                .build()
                .is_err()
        );
    }
}

// ---- a dial: questions at a chosen similarity to one stored question ----

/// The ticket of a lookup at similarity `s`, or `None` when it was served.
async fn ticket_at(cache: &SemanticCache, u: UserId, s: f32, n: u64) -> Option<AuditTicket> {
    match cache.lookup(&ask(u, &format!("{s} {n}"))).await.unwrap() {
        Lookup::Miss { audit, .. } => Some(audit.expect("an audit above the floor")),
        Lookup::Hit { .. } => None,
    }
}

/// Requests at similarities spread over [0.5, 1); `wrong(s, draw)` says whether the
/// stored answer is wrong for one. Returns (served, served wrong).
async fn dial_stream(
    cache: &SemanticCache,
    u: UserId,
    from: u64,
    n: u64,
    wrong: impl Fn(f32, u64) -> bool,
) -> (u64, u64) {
    let pick = |i: u64| {
        let r = mix(i ^ 0x5EED);
        let s = 0.5 + (r % 500) as f32 / 1000.0;
        (s, wrong(s, mix(r)))
    };
    dial_run(cache, u, (from, n), Duration::from_secs(1), pick).await
}

/// What users ask changes: questions between 0.80 and 0.90, all right answers
/// before, are wrong 10 % of the time after (15,000 requests later, when the
/// evidence window is full of the old behaviour). At the old threshold 5 % of served
/// hits would be wrong against a 2 % budget; the served-class audits catch it, the
/// evidence is dropped and relearned, and the served hits after the change stay
/// within the budget.
#[tokio::test(start_paused = true)]
async fn a_drift_in_what_users_ask_is_caught_and_served_hits_stay_within_the_budget() {
    let budget = ErrorBudget::new(0.02);
    let cache = dial_cache(budget);
    let u = anchored(&cache).await;
    let scope = cache.scope_of(&ask(u, "anchor"));
    let before = |s: f32, _: u64| s < 0.8;
    let (served, bad) = dial_stream(&cache, u, 0, 15_000, before).await;
    let est = cache.error_estimate(&scope).unwrap();
    println!("before the change: {bad}/{served} wrong; {est:?}");
    let t = est.threshold.expect("learned");
    assert!((0.8..0.83).contains(&t), "{t}");
    assert!(served > 1_000 && bad * 50 <= served, "{bad}/{served}");

    let after = |s: f32, r: u64| s < 0.8 || (s < 0.9 && r % 100 < 10);
    let (served, bad) = dial_stream(&cache, u, 15_000, 8_000, after).await;
    let est = cache.error_estimate(&scope).unwrap();
    println!("after the change: {bad}/{served} wrong; {est:?}");
    assert!(est.drifts >= 1, "the drift was not noticed: {est:?}");
    assert!(
        bad * 50 <= served,
        "served hits after the change: {bad}/{served} wrong, over the 2 % budget"
    );
    let t = est.threshold.expect("relearned");
    assert!(
        t >= 0.88,
        "the relearned threshold excludes the changed band: {t}"
    );
    assert!(served > 1_000, "and hits are served again: {served}");
}

/// A threshold is never learned below the similarities audited: all evidence at
/// 0.95 gives 0.95, not the budget's floor.
#[tokio::test(start_paused = true)]
async fn the_threshold_never_goes_below_the_audited_similarities() {
    let cache = dial_cache(ErrorBudget::new(0.05));
    let u = anchored(&cache).await;
    for n in 0..200 {
        if let Some(t) = ticket_at(&cache, u, 0.95, n).await {
            assert!(cache.resolve_audit(t, true));
        }
    }
    let est = cache
        .error_estimate(&cache.scope_of(&ask(u, "anchor")))
        .unwrap();
    assert_eq!(est.threshold, Some(0.95), "{est:?}");
    // So a question at 0.7 is still audited, never served.
    assert!(ticket_at(&cache, u, 0.7, 999).await.is_some());
}

/// A ticket counts once, as the cache issued it: a second report, an edited
/// similarity, an invented ticket and an expired one change nothing.
#[tokio::test(start_paused = true)]
async fn audit_tickets_count_once_as_issued_and_expire() {
    let budget = ErrorBudget {
        ticket_ttl: Duration::from_secs(60),
        ..ErrorBudget::new(0.05)
    };
    let cache = dial_cache(budget);
    let u = anchored(&cache).await;
    let scope = cache.scope_of(&ask(u, "anchor"));
    let t = ticket_at(&cache, u, 0.9, 1).await.unwrap();
    assert!(cache.resolve_audit(t.clone(), false));
    assert!(!cache.resolve_audit(t.clone(), false), "a replay counted");
    assert_eq!(cache.error_estimate(&scope).unwrap().audited, 1);

    // Invented: a ticket that was never issued (serde lets anyone build one).
    let mut forged = serde_json::to_value(&t).unwrap();
    forged["id"] = serde_json::json!("0b6f1ab2-6a54-4c5e-9d3f-2f1c8e0a7b11");
    let forged: AuditTicket = serde_json::from_value(forged).unwrap();
    assert!(!cache.resolve_audit(forged, true));

    // Edited: 200 tickets issued at 0.95, reported at 0.6, teach 0.95, not 0.6.
    for n in 10..210 {
        if let Some(mut t) = ticket_at(&cache, u, 0.95, n).await {
            t.similarity = 0.6;
            assert!(cache.resolve_audit(t, true));
        }
    }
    assert_eq!(cache.error_estimate(&scope).unwrap().threshold, Some(0.95));

    // Expired.
    let late = ticket_at(&cache, u, 0.7, 500).await.unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    let audited = cache.error_estimate(&scope).unwrap().audited;
    assert!(!cache.resolve_audit(late, false));
    assert_eq!(cache.error_estimate(&scope).unwrap().audited, audited);
}

/// Evidence is per scope: what one user's audits teach moves only their own
/// (personal) scope; forgetting a user drops their evidence and pending tickets.
#[tokio::test(start_paused = true)]
async fn evidence_is_per_scope_and_forgotten_with_the_user() {
    let cache = dial_cache(ErrorBudget::new(0.05));
    let a = anchored(&cache).await;
    let b = anchored(&cache).await;
    for n in 0..200 {
        if let Some(t) = ticket_at(&cache, a, 0.9, n).await {
            assert!(cache.resolve_audit(t, true));
        }
    }
    let (sa, sb) = (
        cache.scope_of(&ask(a, "anchor")),
        cache.scope_of(&ask(b, "anchor")),
    );
    assert_eq!(cache.error_estimate(&sa).unwrap().threshold, Some(0.9));
    assert_eq!(cache.error_estimate(&sb).unwrap().threshold, None);
    // B is still audited at 0.9: A's outcomes taught B's scope nothing.
    assert!(ticket_at(&cache, b, 0.9, 7).await.is_some());

    let pending = loop {
        // A's hits at 0.9 are served now, but a share is still audited.
        if let Some(t) = ticket_at(&cache, a, 0.9, 10_000 + u64::from(rand_u8())).await {
            break t;
        }
    };
    cache.forget_user(a);
    assert!(!cache.resolve_audit(pending, true));
    assert_eq!(cache.error_estimate(&sa).unwrap().audited, 0);
}

fn rand_u8() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static N: AtomicU8 = AtomicU8::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A stream that never changes, whose questions at 0.80 and above are wrong 1 % of
/// the time (half a 2 % budget): the hit rate must keep climbing, not collapse after
/// one unlucky audit where the evidence is thinnest (the review found 1,154 hits in
/// the first 5,000 requests and 43 in the last 10,000 with a single threshold walk
/// from the top and one window for every level).
#[tokio::test(start_paused = true)]
async fn a_stationary_stream_within_the_budget_keeps_being_served() {
    let cache = dial_cache(ErrorBudget::new(0.02));
    let u = anchored(&cache).await;
    let wrong = |s: f32, r: u64| s < 0.8 || r.is_multiple_of(100);
    let (first, first_bad) = dial_stream(&cache, u, 0, 5_000, wrong).await;
    let (mid, mid_bad) = dial_stream(&cache, u, 5_000, 5_000, wrong).await;
    let (last, last_bad) = dial_stream(&cache, u, 10_000, 10_000, wrong).await;
    let est = cache
        .error_estimate(&cache.scope_of(&ask(u, "anchor")))
        .unwrap();
    println!("served {first} ({first_bad} wrong), {mid} ({mid_bad}), {last} ({last_bad}); {est:?}");
    let (all, bad) = (first + mid + last, first_bad + mid_bad + last_bad);
    assert!(bad * 50 <= all, "within the budget: {bad}/{all}");
    assert!(
        last >= first,
        "the hit rate collapsed on a stationary stream: {first} hits in the first \
         5,000 requests, {last} in the last 10,000"
    );
}
