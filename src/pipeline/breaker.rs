//! A circuit breaker per backend, on tokio's clock.

use std::time::Duration;

use tokio::time::Instant;

/// When a breaker opens and how it recovers. Defaults on each field.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct BreakerConfig {
    /// Opens after this many failures in a row. Default: 5.
    pub consecutive_failures: u32,
    /// Or when the error rate within `window` reaches this (0–1). Default: 0.5.
    pub error_rate: f64,
    /// The error-rate window. Default: 30 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub window: Duration,
    /// The error rate counts only after this many calls in the window. Default: 10.
    pub min_calls: u32,
    /// How long it stays open before one probe is let through. Default: 10 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub cool_down: Duration,
}

impl BreakerConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// `InvalidInput` naming the field: zero failures, an error rate outside (0, 1]
    /// or NaN, a zero window or cool-down, zero minimum calls, a window or cool-down
    /// past [`MAX_DURATION`](super::MAX_DURATION).
    pub fn validate(&self) -> crate::error::Result<()> {
        use crate::error::Error;
        if self.consecutive_failures == 0 {
            return Err(Error::invalid(
                "breaker.consecutive_failures",
                "must be at least 1",
            ));
        }
        if !(self.error_rate > 0.0 && self.error_rate <= 1.0) {
            return Err(Error::invalid(
                "breaker.error_rate",
                format!("{}, must be within (0, 1]", self.error_rate),
            ));
        }
        if self.window.is_zero() {
            return Err(Error::invalid("breaker.window", "must be positive"));
        }
        if self.min_calls == 0 {
            return Err(Error::invalid("breaker.min_calls", "must be at least 1"));
        }
        if self.cool_down.is_zero() {
            return Err(Error::invalid("breaker.cool_down", "must be positive"));
        }
        super::check_duration("breaker.window", self.window)?;
        super::check_duration("breaker.cool_down", self.cool_down)
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            error_rate: 0.5,
            window: Duration::from_secs(30),
            min_calls: 10,
            cool_down: Duration::from_secs(10),
        }
    }
}

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// One probe call is in flight; its outcome closes or re-opens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// The state's name for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Breaker {
    cfg: BreakerConfig,
    state: BreakerState,
    consecutive: u32,
    window_start: Instant,
    calls: u32,
    failures: u32,
    open_until: Instant,
    pub(crate) trips: u64,
}

impl Breaker {
    pub(crate) fn new(cfg: BreakerConfig) -> Self {
        let now = Instant::now();
        Self {
            cfg,
            state: BreakerState::Closed,
            consecutive: 0,
            window_start: now,
            calls: 0,
            failures: 0,
            open_until: now,
            trips: 0,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go through now; moves Open → HalfOpen after the cool-down
    /// (that call is the probe). Returns the state change, if any.
    pub(crate) fn try_acquire(&mut self, now: Instant) -> (bool, Option<BreakerState>) {
        match self.state {
            BreakerState::Closed => (true, None),
            BreakerState::Open if now >= self.open_until => {
                self.state = BreakerState::HalfOpen;
                (true, Some(BreakerState::HalfOpen))
            }
            BreakerState::Open | BreakerState::HalfOpen => (false, None),
        }
    }

    /// Whether a call could go through now, without taking the probe.
    pub(crate) fn available(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => now >= self.open_until,
            BreakerState::HalfOpen => false,
        }
    }

    /// A probe that ended without an outcome (its caller went away) is given back: the
    /// breaker is open again with its cool-down over, so the next call probes at once.
    pub(crate) fn release_probe(&mut self, now: Instant) -> Option<BreakerState> {
        if self.state != BreakerState::HalfOpen {
            return None;
        }
        self.state = BreakerState::Open;
        self.open_until = self.open_until.min(now);
        Some(BreakerState::Open)
    }

    fn roll(&mut self, now: Instant) {
        if now.duration_since(self.window_start) >= self.cfg.window {
            self.window_start = now;
            self.calls = 0;
            self.failures = 0;
        }
    }

    pub(crate) fn on_success(&mut self, now: Instant) -> Option<BreakerState> {
        self.roll(now);
        self.calls += 1;
        self.consecutive = 0;
        if self.state != BreakerState::Closed {
            self.state = BreakerState::Closed;
            self.calls = 0;
            self.failures = 0;
            self.window_start = now;
            return Some(BreakerState::Closed);
        }
        None
    }

    pub(crate) fn on_failure(&mut self, now: Instant) -> Option<BreakerState> {
        self.roll(now);
        self.calls += 1;
        self.failures += 1;
        self.consecutive += 1;
        let rate_trip = self.calls >= self.cfg.min_calls
            && f64::from(self.failures) / f64::from(self.calls) >= self.cfg.error_rate;
        let trip = self.state == BreakerState::HalfOpen
            || self.consecutive >= self.cfg.consecutive_failures
            || rate_trip;
        if trip && self.state != BreakerState::Open {
            self.state = BreakerState::Open;
            self.open_until = now + self.cfg.cool_down;
            self.trips += 1;
            return Some(BreakerState::Open);
        }
        if trip {
            self.open_until = now + self.cfg.cool_down;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_probes_and_closes() {
        let mut b = Breaker::new(BreakerConfig::default());
        let now = Instant::now();
        for _ in 0..4 {
            assert_eq!(b.on_failure(now), None);
        }
        assert_eq!(b.on_failure(now), Some(BreakerState::Open));
        assert_eq!(b.try_acquire(now), (false, None));
        tokio::time::advance(Duration::from_secs(10)).await;
        let later = Instant::now();
        assert_eq!(b.try_acquire(later), (true, Some(BreakerState::HalfOpen)));
        assert_eq!(b.try_acquire(later), (false, None), "one probe at a time");
        assert_eq!(
            b.on_failure(later),
            Some(BreakerState::Open),
            "a failed probe re-opens"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        let t = Instant::now();
        assert!(b.try_acquire(t).0);
        assert_eq!(b.on_success(t), Some(BreakerState::Closed));
        assert_eq!(b.trips, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn error_rate_trips_without_a_streak() {
        let mut b = Breaker::new(BreakerConfig::default());
        let now = Instant::now();
        let mut opened = None;
        for i in 0..12 {
            let r = if i % 2 == 0 {
                b.on_failure(now)
            } else {
                b.on_success(now)
            };
            if r == Some(BreakerState::Open) && opened.is_none() {
                opened = Some(i);
            }
        }
        // Never two failures in a row, but at the 11th call 6 of 11 failed.
        assert_eq!(opened, Some(10));
    }
}
