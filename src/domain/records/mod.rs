//! Typed records (what the store returns) and their inputs (what callers send), one
//! file per aggregate.
//!
//! Every input type has a `validate()` that the repositories call before writing;
//! callers may call it earlier to report errors sooner.

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

pub use assessments::*;
pub use conversations::*;
pub use erasure::*;
pub use goals::*;
pub use interactions::*;
pub use learning_paths::*;
pub use notifications::*;
pub use practices::*;
pub use profiles::*;
pub use progress::*;
