//! What users ask the five agents.

use kasama::prelude::*;

/// What couples ask about.
pub(crate) const TOPICS: &[&str] = &[
    "money",
    "chores",
    "in-laws",
    "holidays",
    "screen time",
    "intimacy",
    "jealousy",
    "career moves",
    "friends",
    "sleep",
];

/// (question, paraphrase) pairs per agent; `{t}` is a topic.
pub(crate) fn questions(agent: AgentType) -> &'static [(&'static str, &'static str)] {
    match agent {
        AgentType::AssessmentAnalyst => &[
            (
                "What does my attachment style result mean for arguments about {t}?",
                "How does my attachment style show up when we argue about {t}?",
            ),
            (
                "Why did I score low on conflict resolution around {t}?",
                "What explains my low conflict resolution score around {t}?",
            ),
        ],
        AgentType::LearningCoach => &[
            (
                "How can we talk about {t} without fighting?",
                "How do we discuss {t} without a fight?",
            ),
            (
                "What practice helps couples agree on {t}?",
                "Which practice helps couples reach agreement on {t}?",
            ),
            (
                "How do I start a calm conversation about {t}?",
                "How can I begin a calm conversation about {t}?",
            ),
        ],
        AgentType::ProgressTracker => &[
            (
                "How am I doing with my practices this week?",
                "How is my practice going this week?",
            ),
            (
                "Am I keeping my streak on {t} exercises?",
                "Is my streak on {t} exercises still going?",
            ),
        ],
        AgentType::InsightGenerator => &[
            (
                "What patterns do couples show around {t}?",
                "Which patterns do couples tend to show around {t}?",
            ),
            (
                "Why do arguments about {t} keep coming back?",
                "Why do fights about {t} keep coming back?",
            ),
        ],
        AgentType::CommunicationAdvisor => &[
            (
                "How should I phrase my worries about {t}?",
                "How can I phrase my worries about {t}?",
            ),
            (
                "What can I say when my partner shuts down about {t}?",
                "What should I say when my partner shuts down about {t}?",
            ),
        ],
    }
}
