//! `impl Repository for PgRepository`: each aggregate's statements in a file of their
//! own (`profiles.rs`, `goals.rs`, …), as functions named after the
//! [`Repository`](crate::repository::Repository) methods, which the impl at the bottom
//! passes every call to.

mod analytics;
mod assessments;
mod conversations;
mod erasure;
mod goals;
mod interactions;
mod learning_paths;
mod notifications;
mod practices;
mod profiles;
mod progress;

use uuid::Uuid;

use self::{
    analytics::*, assessments::*, conversations::*, erasure::*, goals::*, interactions::*,
    learning_paths::*, notifications::*, practices::*, profiles::*, progress::*,
};
use super::PgRepository;
use crate::domain::{Actor, Page};

/// The acting user, or `None` for the service: every by-id statement also filters
/// `($n::uuid IS NULL OR user_id = $n)` with it, so users stay apart even where
/// row-level security does not apply (defence in depth; see `PgConfig::allow_rls_bypass`).
fn who(actor: Actor) -> Option<Uuid> {
    match actor {
        Actor::User(u) => Some(u.0),
        Actor::Service => None,
    }
}

/// A page as the `LIMIT` and `OFFSET` parameters.
fn limit(p: Page) -> (i64, i64) {
    (i64::from(p.limit), i64::from(p.offset))
}

// Every method is the same-named function of an aggregate's file.
macro_rules! to_function {
    ($s:ident, $name:ident($($a:ident),*)) => {
        $name($s, $($a),*).await
    };
}
crate::__forward_repository!(impl[] PgRepository => to_function);
