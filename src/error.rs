//! The crate's one error type.

use std::borrow::Cow;
use std::time::Duration;

/// A boxed error from a backend (database driver, HTTP client, …).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of every fallible call in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in kasama, sorted by what a caller does about it.
///
/// Messages name the offending field or value but never carry SQL text,
/// credentials or another user's data.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input was refused before anything was written.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field that was wrong, e.g. `"email"` or `"rating"`.
        field: Cow<'static, str>,
        /// Why it was refused, with the offending value where that is safe to show.
        reason: String,
    },
    /// The record does not exist, or the acting user may not see it (the two are
    /// deliberately indistinguishable, so that ids of other users' rows leak nothing).
    #[error("{entity} not found")]
    NotFound {
        /// What was looked for, e.g. `"goal"`.
        entity: &'static str,
    },
    /// The acting user may not do this (e.g. write another user's row).
    #[error("forbidden: {reason}")]
    Forbidden {
        /// What was refused.
        reason: Cow<'static, str>,
    },
    /// The write conflicts with existing data (e.g. a duplicate email).
    #[error("conflict: {what}")]
    Conflict {
        /// What conflicted.
        what: Cow<'static, str>,
    },
    /// Too many requests; try again after `retry_after`.
    #[error("rate limited; retry after {retry_after:?}")]
    RateLimited {
        /// How long to wait before the next attempt may succeed.
        retry_after: Duration,
    },
    /// A spending budget would be exceeded by this call.
    #[error("budget exceeded: {scope}")]
    BudgetExceeded {
        /// Which budget, e.g. `"user daily"`.
        scope: Cow<'static, str>,
    },
    /// Every backend able to serve the call has an open circuit breaker.
    #[error("circuit open: {backend}")]
    CircuitOpen {
        /// The backend (or `"all"`) whose circuit is open.
        backend: Cow<'static, str>,
    },
    /// A bounded queue or pool is full; the call was refused at once.
    #[error("overloaded: {what}")]
    Overloaded {
        /// What was full.
        what: Cow<'static, str>,
    },
    /// The call did not complete in time.
    #[error("timed out: {what}")]
    Timeout {
        /// What timed out.
        what: Cow<'static, str>,
    },
    /// Applying database migrations failed or was refused.
    #[error("migration {version}: {reason}")]
    Migration {
        /// The migration's version number.
        version: i32,
        /// Why it failed.
        reason: String,
    },
    /// The configuration is unsafe or unusable, e.g. the database role the
    /// repository connects as bypasses row-level security. Not retryable: fix the
    /// configuration.
    #[error("refused configuration of {what}: {reason}")]
    Config {
        /// What was configured, e.g. `"database role"`.
        what: Cow<'static, str>,
        /// What is wrong and what to do about it.
        reason: String,
    },
    /// A backend (database, HTTP service) failed.
    #[error("{what} failed")]
    Backend {
        /// Which operation failed, e.g. `"database query"`.
        what: Cow<'static, str>,
        /// Whether the same call may succeed if tried again.
        retryable: bool,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

/// `e` and its sources, joined with ": " (a `Display` that leaves its cause out, as
/// tokio-postgres' and [`Error::Backend`]'s do, then still says why).
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Error {
    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(field: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Forbidden`].
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Self {
        Error::Forbidden {
            reason: reason.into(),
        }
    }

    /// Whether trying the same call again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited { .. }
            | Error::CircuitOpen { .. }
            | Error::Overloaded { .. }
            | Error::Timeout { .. } => true,
            Error::Backend { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// How long to wait before retrying, when the error says.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The HTTP status that answers this error, so that every host maps errors the
    /// same way (the `server` feature's `IntoResponse for Error` uses it):
    ///
    /// | variant | status |
    /// |---|---|
    /// | [`InvalidInput`](Error::InvalidInput) | 400 Bad Request |
    /// | [`BudgetExceeded`](Error::BudgetExceeded) | 402 Payment Required |
    /// | [`Forbidden`](Error::Forbidden) | 403 Forbidden |
    /// | [`NotFound`](Error::NotFound) | 404 Not Found |
    /// | [`Conflict`](Error::Conflict) | 409 Conflict |
    /// | [`RateLimited`](Error::RateLimited) | 429 Too Many Requests (send [`retry_after`](Error::retry_after) as `Retry-After`) |
    /// | [`Config`](Error::Config) | 500 Internal Server Error (the operator's problem: show the client no details) |
    /// | [`Backend`](Error::Backend), [`Migration`](Error::Migration) | 502 Bad Gateway |
    /// | [`CircuitOpen`](Error::CircuitOpen), [`Overloaded`](Error::Overloaded) | 503 Service Unavailable |
    /// | [`Timeout`](Error::Timeout) | 504 Gateway Timeout |
    ///
    /// A plain `u16`, so that the crate needs no HTTP library without the `server`
    /// feature.
    pub fn status_code(&self) -> u16 {
        match self {
            Error::InvalidInput { .. } => 400,
            Error::BudgetExceeded { .. } => 402,
            Error::Forbidden { .. } => 403,
            Error::NotFound { .. } => 404,
            Error::Conflict { .. } => 409,
            Error::RateLimited { .. } => 429,
            Error::Config { .. } => 500,
            Error::Backend { .. } | Error::Migration { .. } => 502,
            Error::CircuitOpen { .. } | Error::Overloaded { .. } => 503,
            Error::Timeout { .. } => 504,
        }
    }

    /// The field named by an [`Error::InvalidInput`].
    pub fn invalid_field(&self) -> Option<&str> {
        match self {
            Error::InvalidInput { field, .. } => Some(field),
            _ => None,
        }
    }

    /// A copy for a second receiver of the same failure (coalesced requests): the
    /// same variant and fields, with a backend's source reduced to its message.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::InvalidInput { field, reason } => Error::InvalidInput {
                field: field.clone(),
                reason: reason.clone(),
            },
            Error::NotFound { entity } => Error::NotFound { entity },
            Error::Forbidden { reason } => Error::Forbidden {
                reason: reason.clone(),
            },
            Error::Conflict { what } => Error::Conflict { what: what.clone() },
            Error::RateLimited { retry_after } => Error::RateLimited {
                retry_after: *retry_after,
            },
            Error::BudgetExceeded { scope } => Error::BudgetExceeded {
                scope: scope.clone(),
            },
            Error::CircuitOpen { backend } => Error::CircuitOpen {
                backend: backend.clone(),
            },
            Error::Overloaded { what } => Error::Overloaded { what: what.clone() },
            Error::Timeout { what } => Error::Timeout { what: what.clone() },
            Error::Migration { version, reason } => Error::Migration {
                version: *version,
                reason: reason.clone(),
            },
            Error::Config { what, reason } => Error::Config {
                what: what.clone(),
                reason: reason.clone(),
            },
            Error::Backend {
                what,
                retryable,
                source,
            } => Error::Backend {
                what: what.clone(),
                retryable: *retryable,
                source: source.to_string().into(),
            },
        }
    }

    /// A short, stable name of the variant, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidInput { .. } => "invalid_input",
            Error::NotFound { .. } => "not_found",
            Error::Forbidden { .. } => "forbidden",
            Error::Conflict { .. } => "conflict",
            Error::RateLimited { .. } => "rate_limited",
            Error::BudgetExceeded { .. } => "budget_exceeded",
            Error::CircuitOpen { .. } => "circuit_open",
            Error::Overloaded { .. } => "overloaded",
            Error::Timeout { .. } => "timeout",
            Error::Migration { .. } => "migration",
            Error::Config { .. } => "config",
            Error::Backend { .. } => "backend",
        }
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Whether this is [`Error::Config`].
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config { .. })
    }

    /// Whether this is [`Error::Forbidden`].
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Error::Forbidden { .. })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn predicates() {
        let e = Error::RateLimited {
            retry_after: Duration::from_secs(3),
        };
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        let e = Error::invalid("email", "missing @");
        assert!(!e.is_retryable());
        assert_eq!(e.invalid_field(), Some("email"));
        assert_eq!(e.to_string(), "invalid email: missing @");
    }

    /// One of each variant with the status it must map to.
    pub(crate) fn one_of_each() -> Vec<(Error, u16)> {
        let s = |x: &'static str| Cow::Borrowed(x);
        vec![
            (Error::invalid("email", "missing @"), 400),
            (
                Error::BudgetExceeded {
                    scope: s("user daily"),
                },
                402,
            ),
            (Error::forbidden("another user's row"), 403),
            (Error::NotFound { entity: "goal" }, 404),
            (Error::Conflict { what: s("email") }, 409),
            (
                Error::RateLimited {
                    retry_after: Duration::from_millis(1500),
                },
                429,
            ),
            (
                Error::Config {
                    what: s("database role"),
                    reason: "bypasses RLS".into(),
                },
                500,
            ),
            (
                Error::Backend {
                    what: s("database query"),
                    retryable: true,
                    source: "connection refused".into(),
                },
                502,
            ),
            (
                Error::Migration {
                    version: 3,
                    reason: "checksum".into(),
                },
                502,
            ),
            (Error::CircuitOpen { backend: s("all") }, 503),
            (Error::Overloaded { what: s("queue") }, 503),
            (Error::Timeout { what: s("query") }, 504),
        ]
    }

    #[test]
    fn every_variant_has_its_http_status() {
        let all = one_of_each();
        // One of each: a variant added without a status here fails the count.
        let kinds: std::collections::BTreeSet<_> = all.iter().map(|(e, _)| e.kind()).collect();
        assert_eq!(kinds.len(), 12);
        for (e, status) in all {
            assert_eq!(e.status_code(), status, "{}", e.kind());
            // Retry-After only where the error says how long.
            assert_eq!(e.retry_after().is_some(), status == 429, "{}", e.kind());
        }
    }
}
