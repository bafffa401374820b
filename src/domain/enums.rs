//! The product's enumerations, stored as PostgreSQL enums of the same names.

use serde::{Deserialize, Serialize};

use crate::error::Error;

macro_rules! str_enum {
    ($(#[$doc:meta])* $name:ident, $field:literal { $($(#[$vdoc:meta])* $variant:ident => $s:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The name used in SQL and JSON.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $s),*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                match s {
                    $($s => Ok($name::$variant),)*
                    other => Err(Error::invalid($field, format!("unknown value {other:?}"))),
                }
            }
        }
    };
}

str_enum! {
    /// A user's plan; it sets their rate limits and budgets.
    SubscriptionTier, "subscription_tier" {
        /// The free plan.
        Free => "free",
        /// The paid plan.
        Premium => "premium",
        /// Organisation accounts.
        Enterprise => "enterprise",
    }
}

str_enum! {
    /// How hard a practice is.
    DifficultyLevel, "difficulty" {
        /// For newcomers.
        Beginner => "beginner",
        /// Some experience needed.
        Intermediate => "intermediate",
        /// For experienced users.
        Advanced => "advanced",
    }
}

str_enum! {
    /// The five AI agents of the product.
    AgentType, "agent_type" {
        /// Analyses assessment answers.
        AssessmentAnalyst => "assessment_analyst",
        /// Guides learning.
        LearningCoach => "learning_coach",
        /// Summarises progress.
        ProgressTracker => "progress_tracker",
        /// Generates insights.
        InsightGenerator => "insight_generator",
        /// Advises on communication.
        CommunicationAdvisor => "communication_advisor",
    }
}

str_enum! {
    /// Who said a stored conversation message. System messages are never stored (the
    /// system prompt is rendered per request); `agent::Role` converts from and to it
    /// (`MessageRole::try_from(Role::System)` is refused, naming `role`).
    MessageRole, "role" {
        /// The user.
        User => "user",
        /// The agent (the model's answer).
        Assistant => "assistant",
    }
}

str_enum! {
    /// What a notification is about.
    NotificationType, "notification_type" {
        /// Something was achieved.
        Achievement => "achievement",
        /// A reminder.
        Reminder => "reminder",
        /// A new insight.
        Insight => "insight",
        /// A system message.
        System => "system",
        /// Something from another person.
        Social => "social",
    }
}

str_enum! {
    /// Priority of a notification or AI request.
    PriorityLevel, "priority" {
        /// Can wait.
        Low => "low",
        /// Normal.
        Medium => "medium",
        /// Urgent.
        High => "high",
    }
}

#[allow(clippy::derivable_impls)] // the enum is macro-generated
impl Default for SubscriptionTier {
    fn default() -> Self {
        SubscriptionTier::Free
    }
}

#[allow(clippy::derivable_impls)] // the enum is macro-generated
impl Default for PriorityLevel {
    fn default() -> Self {
        PriorityLevel::Medium
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown() {
        for a in AgentType::ALL {
            assert_eq!(a.as_str().parse::<AgentType>().unwrap(), *a);
        }
        let e = "gold".parse::<SubscriptionTier>().unwrap_err();
        assert_eq!(e.invalid_field(), Some("subscription_tier"));
        assert_eq!(
            serde_json::to_string(&AgentType::LearningCoach).unwrap(),
            "\"learning_coach\""
        );
    }
}
