//! Errors as HTTP answers: [`ApiError`], and `IntoResponse` for [`Error`] (the status
//! of [`Error::status_code`], a JSON body, `Retry-After` when the error says how long).

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::Error;

/// An HTTP error with a JSON body `{"error": kind, "message": …}` (and `"field"` /
/// `"reason"` for invalid input), and `Retry-After` when a wait is known.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    pub(in crate::server) body: Value,
    retry_after: Option<Duration>,
}

impl ApiError {
    /// An answer with `status` and the body `{"error": kind, "message": message}`.
    pub(super) fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "error": kind, "message": message.into() }),
            retry_after: None,
        }
    }

    /// 401 with `message`.
    pub(super) fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// The same answer, with `Retry-After: wait` (whole seconds, at least 1).
    pub(super) fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if let Some(d) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&d.as_secs_f64().ceil().max(1.0).to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let kind = e.kind();
        let status =
            StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // The operator's problem, not the client's: no details over HTTP.
        if e.is_config() {
            tracing::error!(error = %e, "refusing requests: unsafe configuration");
            return ApiError::new(status, kind, "server misconfigured");
        }
        let mut a = ApiError::new(status, kind, e.to_string());
        if let Error::InvalidInput { field, reason } = &e {
            a.body["field"] = json!(field);
            a.body["reason"] = json!(reason);
        }
        a.retry_after = e.retry_after();
        a
    }
}

/// The answer every host gives for an [`Error`]: the status of
/// [`Error::status_code`]; the body `{"error": kind, "message": …}`, plus `"field"` and
/// `"reason"` for [`Error::InvalidInput`]; `Retry-After` (whole seconds, rounded up, at
/// least 1) for [`Error::RateLimited`]. An [`Error::Config`] is logged and answered
/// with a bare `"server misconfigured"` 500: its details are for the operator.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// What a JSON handler returns.
pub(super) type ApiResult<T> = Result<Json<T>, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: Error) -> (u16, Option<String>, Value) {
        let r = e.into_response();
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, retry, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn every_variant_maps_to_its_status_and_body() {
        for (e, status) in crate::error::tests::one_of_each() {
            let kind = e.kind();
            let message = e.to_string();
            let (got, retry, body) = answer(e).await;
            assert_eq!(got, status, "{kind}");
            assert_eq!(body["error"], kind, "{kind}");
            match kind {
                // 1.5 s rounds up to 2 whole seconds.
                "rate_limited" => assert_eq!(retry.as_deref(), Some("2")),
                _ => assert_eq!(retry, None, "{kind}"),
            }
            match kind {
                "config" => assert_eq!(
                    body,
                    json!({"error": "config", "message": "server misconfigured"})
                ),
                "invalid_input" => assert_eq!(
                    body,
                    json!({
                        "error": "invalid_input",
                        "message": "invalid email: missing @",
                        "field": "email",
                        "reason": "missing @",
                    })
                ),
                _ => assert_eq!(body, json!({"error": kind, "message": message}), "{kind}"),
            }
        }
    }

    #[tokio::test]
    async fn a_short_wait_is_still_one_second() {
        let (status, retry, _) = answer(Error::RateLimited {
            retry_after: Duration::from_millis(1),
        })
        .await;
        assert_eq!((status, retry.as_deref()), (429, Some("1")));
    }

    #[test]
    fn api_error_says_its_status() {
        assert_eq!(
            ApiError::from(Error::NotFound { entity: "goal" }).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::unauthorized("no").status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
