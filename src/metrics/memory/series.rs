//! The pieces [`InMemoryMetrics`](super::InMemoryMetrics) records into: latency
//! series (HDR histograms), per-minute histograms of the last minutes, per-second
//! counters, and the summaries computed from them.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::summary::{CacheSummary, LatencySummary, WindowStats};

/// Minutes of latency histograms kept for the recent view used by health checks.
const RECENT_MINUTES: u64 = 5;

/// One series' latencies (an HDR histogram in microseconds) and errors.
#[derive(Debug)]
pub(super) struct Series {
    hist: Histogram<u32>,
    errors: u64,
}

impl Series {
    pub(super) fn new() -> Self {
        Self {
            hist: Histogram::new(3).expect("3 significant figures is valid"),
            errors: 0,
        }
    }

    pub(super) fn record(&mut self, d: Duration, ok: bool) {
        // One hour at most; `record` grows the (auto-resizing) histogram as needed.
        let us = (d.as_micros().min(3_600_000_000) as u64).max(1);
        if self.hist.record(us).is_err() {
            self.hist.saturating_record(us);
        }
        if !ok {
            self.errors += 1;
        }
    }

    pub(super) fn summary(&self) -> LatencySummary {
        summarise(&self.hist, self.errors)
    }
}

fn summarise(h: &Histogram<u32>, errors: u64) -> LatencySummary {
    let n = h.len();
    if n == 0 {
        return LatencySummary::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    LatencySummary {
        count: n,
        errors,
        error_rate: errors as f64 / n as f64,
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p95_ms: ms(h.value_at_quantile(0.95)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

/// Per-minute histograms of the last few minutes.
#[derive(Debug, Default)]
pub(super) struct Recent {
    slots: Vec<(u64, Series)>,
}

impl Recent {
    pub(super) fn record(&mut self, minute: u64, d: Duration, ok: bool) {
        let i = (minute % RECENT_MINUTES) as usize;
        if self.slots.len() < RECENT_MINUTES as usize {
            self.slots
                .resize_with(RECENT_MINUTES as usize, || (u64::MAX, Series::new()));
        }
        let slot = &mut self.slots[i];
        if slot.0 != minute {
            *slot = (minute, Series::new());
        }
        slot.1.record(d, ok);
    }

    pub(super) fn summary(&self, minute: u64) -> LatencySummary {
        let mut h = Histogram::<u32>::new(3).expect("valid");
        let mut errors = 0;
        for (m, s) in &self.slots {
            if *m != u64::MAX && *m + RECENT_MINUTES > minute && *m <= minute {
                h.add(&s.hist).ok();
                errors += s.errors;
            }
        }
        summarise(&h, errors)
    }
}

/// One second's counts: per family (API, AI, database), events and errors.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Bucket {
    pub(super) sec: u64,
    pub(super) counts: [[u32; 2]; 3],
}

/// The families of [`Bucket::counts`].
pub(super) const API: usize = 0;
pub(super) const AI: usize = 1;
pub(super) const DB: usize = 2;

pub(super) fn cache_summary(tier: &str, hits: u64, misses: u64, evictions: u64) -> CacheSummary {
    let n = hits + misses;
    CacheSummary {
        tier: tier.to_string(),
        hits,
        misses,
        evictions,
        hit_rate: if n == 0 { 0.0 } else { hits as f64 / n as f64 },
    }
}

/// Sums the last `w` full seconds (`[now - w, now)`, the current second left out as
/// it is still filling) and the `w` before them.
pub(super) fn window(ring: &[Bucket], name: &'static str, now: u64, w: u64) -> WindowStats {
    let sum = |from: u64, to: u64| {
        let mut c = [[0u64; 2]; 3];
        for b in ring {
            if b.sec != u64::MAX && b.sec >= from && b.sec < to {
                for (acc, n) in c.iter_mut().zip(&b.counts) {
                    acc[0] += u64::from(n[0]);
                    acc[1] += u64::from(n[1]);
                }
            }
        }
        c
    };
    let stats = |c: [[u64; 2]; 3], previous| {
        let rate = |k: usize| {
            if c[k][0] == 0 {
                0.0
            } else {
                c[k][1] as f64 / c[k][0] as f64
            }
        };
        WindowStats {
            window: name,
            api_rps: c[API][0] as f64 / w as f64,
            api_error_rate: rate(API),
            ai_rps: c[AI][0] as f64 / w as f64,
            ai_error_rate: rate(AI),
            db_rps: c[DB][0] as f64 / w as f64,
            db_error_rate: rate(DB),
            previous,
        }
    };
    let end = now;
    let prev = (end >= 2 * w).then(|| Box::new(stats(sum(end - 2 * w, end - w), None)));
    stats(sum(end.saturating_sub(w), end), prev)
}
