//! [`MeteredRepository`]: times every repository call into a [`MetricsSink`].

use std::sync::Arc;

use tokio::time::Instant;

use super::Repository;
use crate::error::Error;
use crate::metrics::{MetricEvent, MetricsSink};

/// Wraps a [`Repository`] and records a [`MetricEvent::Database`] per call: the
/// method's name as the operation, its latency, and whether the database succeeded
/// (a refusal of the caller's input — invalid, not found, forbidden, conflict — is a
/// success of the database; a backend failure or timeout is not).
#[derive(Debug)]
pub struct MeteredRepository<R> {
    inner: R,
    sink: Arc<dyn MetricsSink>,
}

impl<R> MeteredRepository<R> {
    /// Meters `inner` into `sink`.
    pub fn new(inner: R, sink: Arc<dyn MetricsSink>) -> Self {
        Self { inner, sink }
    }

    /// The wrapped repository.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    fn observe(&self, operation: &'static str, start: Instant, err: Option<&Error>) {
        let ok = !matches!(
            err,
            Some(Error::Backend { .. } | Error::Timeout { .. } | Error::Overloaded { .. })
        );
        self.sink.record(&MetricEvent::Database {
            operation,
            latency: start.elapsed(),
            ok,
        });
    }
}

// Every call timed under its method's name.
macro_rules! timed {
    ($s:ident, $name:ident($($a:ident),*)) => {{
        let start = Instant::now();
        let r = $s.inner.$name($($a),*).await;
        $s.observe(stringify!($name), start, r.as_ref().err());
        r
    }};
}
crate::__forward_repository!(impl[R: Repository] MeteredRepository<R> => timed);
