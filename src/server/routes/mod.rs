//! The HTTP routes, one file per resource. Each file's `routes` gives its paths (under
//! `/api`) with the user routes behind the [`Authenticator`](super::Authenticator);
//! [`router`](super::router) puts them together.

pub(super) mod agents;
pub(super) mod assessments;
pub(super) mod conversations;
pub(super) mod goals;
pub(super) mod ops;
pub(super) mod profile;
pub(super) mod progress;
pub(super) mod stats;

use serde::Deserialize;

use crate::domain::Page;

/// The query string of the list routes: `limit`, `offset` and the filters some take.
#[derive(Deserialize)]
struct PageQuery {
    limit: Option<u32>,
    offset: Option<u32>,
    #[serde(rename = "type")]
    kind: Option<String>,
    completed: Option<bool>,
    days: Option<i64>,
}

impl PageQuery {
    fn page(&self) -> Page {
        Page {
            limit: self.limit.unwrap_or(50),
            offset: self.offset.unwrap_or(0),
        }
    }
}
