//! Error-budget mode: instead of a fixed threshold, the cache learns per agent and
//! model the lowest similarity at which its semantic hits stay within a stated share
//! of wrong answers, from audited outcomes (the idea of verified semantic caching,
//! e.g. vCache, 2025).
//!
//! Every would-be hit (a stored question above [`ErrorBudget::floor`] that the
//! verifiers accept) is one of:
//!
//! - **served**, when its similarity is at or above the learned threshold — except
//!   for a share [`ErrorBudget::audit_share`] of them, which are turned into misses
//!   carrying an [`AuditTicket`];
//! - **a miss with a ticket**, when below the learned threshold (or none is learned
//!   yet): the caller asks the backend anyway, so the outcome is free evidence.
//!
//! The caller compares the fresh answer with the stored one (however it judges
//! "the same answer would do": its own check, an LLM judge, a user's feedback) and
//! reports it with [`SemanticCache::resolve_audit`](super::SemanticCache::resolve_audit).
//!
//! The threshold is chosen by fixed-sequence testing from high to low similarity, on
//! a 0.01 grid: a walk starts at a level with enough audits at or above it, and a
//! level is accepted while the one-sided Wilson upper bound of the wrong share among
//! audited candidates at or above it stays within the budget; the first level that
//! fails stops the walk. Three walks start where those audits first number n₀, 4·n₀
//! and 16·n₀ (n₀: the fewest that could pass with none wrong) — places chosen by the
//! counts alone — each at a third of the budget's risk (Bonferroni), and the lowest
//! level any accepts is the threshold: one unlucky outcome where the evidence is
//! thinnest no longer stops all serving. A level is accepted only where an audited
//! similarity lies, so the threshold never goes below the evidence. Outcomes are kept
//! per level (the newest [`ErrorBudget::window`] of each, a bit apiece), so the many
//! audits below the threshold never crowd out the few above it; and since audits are
//! drawn unevenly (every would-be hit below the threshold, a share above it), each
//! level's wrong share is weighed by its traffic (the would-be hits seen there,
//! audited or not) and the audits count by the effective sample size of those
//! weights (Kish): a busy level is never outvoted by quiet ones. Until enough evidence exists nothing is served
//! semantically, so the hit rate starts at the exact repeats and climbs as audits
//! come in.
//!
//! Evidence is kept per [`Scope`](crate::agent::Scope): one user's outcomes move only
//! the thresholds of the scopes they were drawn in (their own, for personal agents).
//!
//! **Drift.** The audits of would-be hits at or above the threshold in force are the
//! hits the cache would have served. They are tested in blocks of
//! [`ErrorBudget::min_audits`], each at a tenth of the budget's risk; when a block
//! shows a wrong share above the budget (its one-sided Wilson lower bound passes
//! it), what users ask has changed: the
//! evidence is dropped, nothing is served semantically until new evidence supports a
//! threshold again, and every would-be hit is audited meanwhile
//! ([`ErrorEstimate::drifts`] counts these). While those audits merely look worse
//! than the budget (their plain share above it), audits are drawn at four times
//! [`ErrorBudget::audit_share`].
//!
//! **Tickets.** An [`AuditTicket`] names a pending audit by a random id; the cache
//! keeps what it was issued for (scope, similarity) and counts the first report
//! for it once: a ticket reported twice, an invented one or one older than
//! [`ErrorBudget::ticket_ttl`] is ignored.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The wrong-answer share a host tolerates, and how the cache earns evidence.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBudget {
    /// The largest share of served semantic hits that may be wrong, in (0, 1).
    /// E.g. 0.02.
    pub max_error_rate: f64,
    /// The share of would-be hits above the learned threshold that are audited
    /// anyway (sent to the backend and compared), in [0, 1]. Default 0.05.
    pub audit_share: f64,
    /// The confidence of the upper bound, in (0.5, 1). Default 0.95.
    pub confidence: f64,
    /// The fewest audited candidates at or above a level before it can be accepted,
    /// and the size of the blocks the drift test runs on. Default 30; at most 10,000.
    pub min_audits: u32,
    /// Similarities below this are never candidates. Default 0.5.
    pub floor: f32,
    /// Audited outcomes kept per scope and per 0.01 level of similarity (the newest;
    /// one bit each). Default 1,000; at most 100,000.
    pub window: usize,
    /// How long an [`AuditTicket`] may wait for its outcome. Default: 1 hour.
    #[serde(default = "default_ticket_ttl")]
    pub ticket_ttl: std::time::Duration,
    /// Audits waiting for their outcome, at most, across all scopes (the oldest are
    /// forgotten first, whoever's they are). Default 10,000.
    #[serde(default = "default_pending")]
    pub max_pending: usize,
    /// Scopes whose evidence is kept, at most (the least recently updated are
    /// forgotten first). Default 10,000; a scope's evidence takes at most about
    /// 13 KiB at the default window.
    #[serde(default = "default_pending")]
    pub max_scopes: usize,
}

fn default_ticket_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}

fn default_pending() -> usize {
    10_000
}

impl ErrorBudget {
    /// A budget of `max_error_rate` with the defaults above.
    pub fn new(max_error_rate: f64) -> Self {
        Self {
            max_error_rate,
            audit_share: 0.05,
            confidence: 0.95,
            min_audits: 30,
            floor: 0.5,
            window: 1_000,
            ticket_ttl: default_ticket_ttl(),
            max_pending: default_pending(),
            max_scopes: default_pending(),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |f: &'static str, v: String| Err(Error::invalid(f, v));
        if !(self.max_error_rate > 0.0 && self.max_error_rate < 1.0) {
            return bad(
                "max_error_rate",
                format!("{} is outside (0, 1)", self.max_error_rate),
            );
        }
        if !(0.0..=1.0).contains(&self.audit_share) {
            return bad(
                "audit_share",
                format!("{} is outside [0, 1]", self.audit_share),
            );
        }
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return bad(
                "confidence",
                format!("{} is outside (0.5, 1)", self.confidence),
            );
        }
        if !(self.floor > 0.0 && self.floor <= 1.0) {
            return bad("floor", format!("{} is outside (0, 1]", self.floor));
        }
        if self.min_audits == 0 || self.min_audits > 10_000 {
            return bad(
                "min_audits",
                format!("{} is outside 1..=10,000", self.min_audits),
            );
        }
        if self.window == 0 || self.window > 100_000 {
            return bad("window", format!("{} is outside 1..=100,000", self.window));
        }
        if self.max_pending == 0 || self.max_scopes == 0 {
            return bad(
                "max_pending",
                "max_pending and max_scopes must be positive".into(),
            );
        }
        if self.ticket_ttl.is_zero() || self.ticket_ttl > crate::domain::validate::MAX_DURATION {
            return bad(
                "ticket_ttl",
                format!("{:?} is zero or longer than a year", self.ticket_ttl),
            );
        }
        Ok(())
    }
}

/// The cache's estimate of its wrong-answer share in one scope.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorEstimate {
    /// The learned threshold; `None` while nothing is served semantically.
    pub threshold: Option<f32>,
    /// Audited outcomes kept.
    pub audited: u64,
    /// Audited candidates at or above the threshold (the ones it would serve).
    pub above: u64,
    /// Of those, how many were wrong.
    pub wrong_above: u64,
    /// `wrong_above / above` (0 when none).
    pub rate: f64,
    /// The one-sided Wilson upper bound of that rate at the budget's confidence
    /// (1 when none).
    pub upper_bound: f64,
    /// Times the evidence was dropped because served-class audits showed the wrong
    /// share had risen past the budget (see the module docs).
    pub drifts: u64,
}

/// A would-be hit turned into a miss for audit: report how it turned out with
/// [`SemanticCache::resolve_audit`](super::SemanticCache::resolve_audit).
///
/// The ticket names the pending audit by a random id; what it was issued for (the
/// scope, the similarity) stays in the cache, so a ticket edited, invented, reported
/// twice or past [`ErrorBudget::ticket_ttl`] changes nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditTicket {
    pub(crate) id: uuid::Uuid,
    /// The candidate's similarity.
    pub similarity: f32,
    /// The stored question whose answer was not served.
    pub stored_question: String,
    /// The stored answer, to compare with the fresh one.
    pub stored_answer: serde_json::Value,
}

/// The standard normal quantile for a one-sided `confidence` (Acklam's rational
/// approximation, |error| < 1.2e-9).
fn z(confidence: f64) -> f64 {
    let p = confidence;
    let a = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    let b = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    let c = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    let d = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5])
            / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0)
    };
    if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
            / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)
    }
}

/// The one-sided Wilson score interval of a binomial share: (centre, half-width),
/// both already divided by the interval's denominator. Real-valued counts allow
/// weighted (effective) samples.
fn wilson(k: f64, n: f64, confidence: f64) -> (f64, f64) {
    let z = z(confidence);
    let p = k / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    (centre / denom, spread / denom)
}

/// One-sided Wilson score upper bound of a binomial share (1 with no evidence).
#[cfg(test)]
pub(crate) fn wilson_upper(wrong: u64, n: u64, confidence: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    wilson_upper_f(wrong as f64, n as f64, confidence)
}

/// [`wilson_upper`] on real-valued (effective) counts.
pub(crate) fn wilson_upper_f(wrong: f64, n: f64, confidence: f64) -> f64 {
    if n <= 0.0 || !n.is_finite() {
        return 1.0;
    }
    let (c, s) = wilson(wrong, n, confidence);
    (c + s).min(1.0)
}

/// One-sided Wilson score lower bound of a binomial share (0 with no evidence).
pub(crate) fn wilson_lower(wrong: u64, n: u64, confidence: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let (c, s) = wilson(wrong as f64, n as f64, confidence);
    (c - s).max(0.0)
}

/// The newest outcomes (wrong?) of one similarity level, as bits in a ring.
#[derive(Debug, Default)]
struct Ring {
    bits: Vec<u64>,
    start: usize,
    len: usize,
    wrong: u64,
}

impl Ring {
    fn get(&self, i: usize) -> bool {
        self.bits[i / 64] >> (i % 64) & 1 == 1
    }

    fn set(&mut self, i: usize, v: bool) {
        let (w, b) = (i / 64, i % 64);
        self.bits[w] = (self.bits[w] & !(1 << b)) | (u64::from(v) << b);
    }

    /// Adds an outcome, dropping the oldest past `cap` (which must not change).
    fn push(&mut self, wrong: bool, cap: usize) {
        if self.bits.is_empty() {
            self.bits = vec![0; cap.div_ceil(64)];
        }
        let size = cap;
        if self.len < size {
            let i = (self.start + self.len) % size;
            self.set(i, wrong);
            self.len += 1;
        } else {
            let old = self.get(self.start);
            self.wrong -= u64::from(old);
            self.set(self.start, wrong);
            self.start = (self.start + 1) % size;
        }
        self.wrong += u64::from(wrong);
    }
}

/// Audited outcomes of one scope, per 0.01 level of similarity (the newest
/// [`ErrorBudget::window`] of each), the traffic of each level, and the threshold
/// they support — see the module docs.
#[derive(Debug)]
pub(crate) struct Evidence {
    /// Level `i` holds similarities in [(i)/100, (i+1)/100); level 100 holds 1.0.
    levels: Vec<Ring>,
    /// Would-be hits seen per level (audited or not), halved now and then.
    traffic: Vec<u64>,
    traffic_total: u64,
    threshold: Option<f32>,
    /// The current block of audits at or above the threshold in force: (n, wrong).
    block: (u64, u64),
    /// Times the evidence was dropped for drift.
    pub(crate) drifts: u64,
    pub(crate) touched: tokio::time::Instant,
}

impl Default for Evidence {
    fn default() -> Self {
        Self {
            levels: Vec::new(),
            traffic: Vec::new(),
            traffic_total: 0,
            threshold: None,
            block: (0, 0),
            drifts: 0,
            touched: tokio::time::Instant::now(),
        }
    }
}

/// Independent threshold walks, each at the budget's risk divided by their number.
const WALKS: u32 = 3;

/// Traffic counts are halved past this total (old traffic fades, shares stay).
const TRAFFIC_HALVING: u64 = 100_000;

/// The drift test's risk is the budget's divided by this: it runs once per block.
const DRIFT_RISK_DIVISOR: f64 = 10.0;

/// The level of a similarity (0..=100).
fn level_of(similarity: f32) -> usize {
    // A tiny nudge so that 0.85 as f32 (0.8499999) lands on level 85.
    ((similarity.clamp(0.0, 1.0) * 100.0 + 1e-3).floor() as usize).min(100)
}

impl Evidence {
    pub(crate) fn threshold(&self) -> Option<f32> {
        self.threshold
    }

    /// The share of would-be hits above the threshold to audit now: four times the
    /// budget's while the current block of such audits looks worse than the budget.
    pub(crate) fn audit_share(&self, b: &ErrorBudget) -> f64 {
        let (n, k) = self.block;
        if n > 0 && k as f64 > b.max_error_rate * n as f64 {
            (b.audit_share * 4.0).min(1.0)
        } else {
            b.audit_share
        }
    }

    /// Counts a would-be hit at `similarity` (served or audited): the weight its
    /// level's audits carry.
    pub(crate) fn seen(&mut self, similarity: f32) {
        if self.traffic.is_empty() {
            self.traffic = vec![0; 101];
        }
        self.traffic[level_of(similarity)] += 1;
        self.traffic_total += 1;
        if self.traffic_total > TRAFFIC_HALVING {
            for t in &mut self.traffic {
                *t = t.div_ceil(2);
            }
            self.traffic_total = self.traffic.iter().sum();
        }
    }

    /// Records one outcome and re-learns the threshold.
    pub(crate) fn record(&mut self, similarity: f32, wrong: bool, b: &ErrorBudget) {
        self.touched = tokio::time::Instant::now();
        if self.levels.is_empty() {
            self.levels.resize_with(101, Ring::default);
        }
        self.levels[level_of(similarity)].push(wrong, b.window);
        if self.threshold.is_some_and(|t| similarity >= t) {
            self.block.0 += 1;
            self.block.1 += u64::from(wrong);
            // Tested once per block of `min_audits` (a test after every audit would
            // raise false alarms), at a tenth of the budget's risk.
            if self.block.0 >= u64::from(b.min_audits) {
                let (n, k) = self.block;
                self.block = (0, 0);
                let confidence = 1.0 - (1.0 - b.confidence) / DRIFT_RISK_DIVISOR;
                if wilson_lower(k, n, confidence) > b.max_error_rate {
                    // Drift: the evidence describes questions users no longer ask.
                    self.levels.clear();
                    self.drifts += 1;
                    self.threshold = None;
                    return;
                }
            }
        }
        self.threshold = self.learn(b);
    }

    /// Per level from the top, the cumulative traffic-weighted evidence: (level,
    /// effective audits, weighted wrong share, whether the level holds audits).
    ///
    /// Audits are drawn unevenly (all would-be hits below the threshold, a share
    /// above it) and windows are per level, so each level's wrong share is weighted
    /// by its traffic, and the audits by the effective sample size (Kish) of those
    /// weights.
    fn cumulative(&self, bottom: usize) -> Vec<(usize, f64, f64, bool)> {
        let (mut w, mut wk, mut s2) = (0.0f64, 0.0f64, 0.0f64);
        let mut out = Vec::with_capacity(101 - bottom);
        for level in (bottom..=100).rev() {
            let r = &self.levels[level];
            if r.len > 0 {
                let n = r.len as f64;
                let t = self.traffic.get(level).copied().unwrap_or(0).max(1) as f64;
                w += t;
                wk += t * r.wrong as f64 / n;
                s2 += t * t / n;
            }
            let (n_eff, share) = if w > 0.0 {
                (w * w / s2, wk / w)
            } else {
                (0.0, 0.0)
            };
            out.push((level, n_eff, share, r.len > 0));
        }
        out
    }

    /// Fixed-sequence testing from the top down, started at [`WALKS`] places chosen
    /// by the counts alone (where the effective audits at or above a level first
    /// reach n₀, 4·n₀ and 16·n₀, n₀ being the fewest that could pass with none
    /// wrong), each walk at the budget's risk / [`WALKS`] (Bonferroni); the threshold
    /// is the lowest level any walk accepts.
    fn learn(&self, b: &ErrorBudget) -> Option<f32> {
        if self.levels.is_empty() {
            return None;
        }
        let bottom = ((f64::from(b.floor) * 100.0).ceil() as usize).min(100);
        let conf = 1.0 - (1.0 - b.confidence) / f64::from(WALKS);
        let z = z(conf);
        let n0 = (z * z * (1.0 - b.max_error_rate) / b.max_error_rate)
            .ceil()
            .max(f64::from(b.min_audits));
        let cum = self.cumulative(bottom);
        let mut lowest: Option<usize> = None;
        for j in 0..WALKS {
            let target = n0 * 4f64.powi(j as i32);
            let Some(start) = cum.iter().position(|&(_, n, _, _)| n >= target) else {
                break;
            };
            for &(level, n, share, has) in &cum[start..] {
                if wilson_upper_f(share * n, n, conf) > b.max_error_rate {
                    break;
                }
                if has {
                    lowest = Some(lowest.map_or(level, |l| l.min(level)));
                }
            }
        }
        lowest.map(|l| l as f32 / 100.0)
    }

    pub(crate) fn estimate(&self, b: &ErrorBudget) -> ErrorEstimate {
        let t = self.threshold;
        let (mut audited, mut above, mut wrong) = (0u64, 0u64, 0u64);
        for (level, r) in self.levels.iter().enumerate() {
            audited += r.len as u64;
            if t.is_some_and(|t| level >= level_of(t)) {
                above += r.len as u64;
                wrong += r.wrong;
            }
        }
        let (rate, upper_bound) = match t {
            Some(t) if !self.levels.is_empty() => {
                let bottom = level_of(t);
                let &(_, n, share, _) = self.cumulative(bottom).last().expect("a level");
                (share, wilson_upper_f(share * n, n, b.confidence))
            }
            _ => (0.0, 1.0),
        };
        ErrorEstimate {
            threshold: t,
            audited,
            above,
            wrong_above: wrong,
            rate,
            upper_bound,
            drifts: self.drifts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantiles_and_wilson_bounds() {
        assert!((z(0.95) - 1.644_853_6).abs() < 1e-6);
        assert!((z(0.975) - 1.959_964).abs() < 1e-6);
        assert!((z(0.999) - 3.090_232).abs() < 1e-5);
        // 0 wrong of 100 at 95 %: about 2.6 %.
        let u = wilson_upper(0, 100, 0.95);
        assert!(u > 0.02 && u < 0.03, "{u}");
        assert_eq!(wilson_upper(0, 0, 0.95), 1.0);
        assert!(wilson_upper(10, 100, 0.95) > 0.1);
    }

    #[test]
    fn the_threshold_stops_where_wrong_answers_begin() {
        let b = ErrorBudget {
            min_audits: 20,
            ..ErrorBudget::new(0.05)
        };
        let mut e = Evidence::default();
        // Above 0.8 always right, below always wrong.
        for i in 0..400 {
            let s = 0.5 + (i % 50) as f32 / 100.0;
            e.record(s, s < 0.8, &b);
        }
        let t = e.threshold().expect("learned");
        assert!((0.79..=0.85).contains(&t), "{t}");
        let est = e.estimate(&b);
        assert_eq!(est.wrong_above, 0);
        assert!(est.upper_bound <= 0.05);
        // All wrong: nothing is served.
        let mut bad = Evidence::default();
        for i in 0..400 {
            bad.record(0.9 + (i % 10) as f32 / 100.0, true, &b);
        }
        assert_eq!(bad.threshold(), None);
    }

    #[test]
    fn bad_budgets_are_refused() {
        for b in [
            ErrorBudget::new(0.0),
            ErrorBudget::new(1.0),
            ErrorBudget {
                audit_share: 1.5,
                ..ErrorBudget::new(0.02)
            },
            ErrorBudget {
                confidence: 0.4,
                ..ErrorBudget::new(0.02)
            },
            ErrorBudget {
                min_audits: 0,
                ..ErrorBudget::new(0.02)
            },
        ] {
            assert!(b.validate().is_err(), "{b:?}");
        }
        assert!(ErrorBudget::new(0.02).validate().is_ok());
    }
}
