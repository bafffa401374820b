//! Profiles: one per user.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::enums::SubscriptionTier;
use crate::domain::ids::*;
use crate::domain::validate as v;
use crate::error::Result;

/// A user's profile. Its id is the user's id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The user.
    pub id: UserId,
    /// Email address, unique across users (case-insensitive).
    pub email: String,
    /// Name shown in the app.
    pub display_name: String,
    /// The user's plan.
    pub subscription_tier: SubscriptionTier,
    /// Free-form preferences.
    pub preferences: Value,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

/// Input for a new profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewProfile {
    /// The user's id, as assigned by the host's authentication.
    pub id: UserId,
    /// Email address.
    pub email: String,
    /// Name shown in the app.
    pub display_name: String,
    /// The user's plan. Only the service may create a non-free profile.
    pub subscription_tier: SubscriptionTier,
    /// Free-form preferences (at most 64 KiB of JSON).
    pub preferences: Value,
}

impl NewProfile {
    /// A free-tier profile with empty preferences.
    pub fn new(id: UserId, email: impl Into<String>, display_name: impl Into<String>) -> Self {
        Self {
            id,
            email: email.into(),
            display_name: display_name.into(),
            subscription_tier: SubscriptionTier::Free,
            preferences: Value::Object(Default::default()),
        }
    }

    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        v::email(&self.email)?;
        v::title("display_name", &self.display_name)?;
        v::json("preferences", &self.preferences)
    }
}

/// A change to a profile; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileUpdate {
    /// New email address.
    pub email: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New plan (service only).
    pub subscription_tier: Option<SubscriptionTier>,
    /// New preferences (replaces the old document).
    pub preferences: Option<Value>,
}

impl ProfileUpdate {
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        if let Some(e) = &self.email {
            v::email(e)?;
        }
        if let Some(n) = &self.display_name {
            v::title("display_name", n)?;
        }
        if let Some(p) = &self.preferences {
            v::json("preferences", p)?;
        }
        Ok(())
    }
}
