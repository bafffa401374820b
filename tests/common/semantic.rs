//! Requests and answers for the semantic-cache tests.

use std::time::Duration;

use kasama::agent::{AiRequest, AiResponse, Usage};
use kasama::prelude::*;
use kasama::semantic::{CacheTier, Lookup};
use serde_json::json;

/// A backend's answer `{"advice": text}`.
pub fn answer(text: &str) -> AiResponse {
    AiResponse {
        output: json!({ "advice": text }),
        usage: Usage {
            input_tokens: 20,
            output_tokens: 40,
        },
        usage_estimated: false,
        model: "sim-1".into(),
        backend: "sim".into(),
        latency: Duration::from_millis(5),
    }
}

/// `user` asks the communication advisor `q`.
pub fn ask(user: UserId, q: &str) -> AiRequest {
    AiRequest::new(user, AgentType::CommunicationAdvisor, q)
}

/// The tier and advice of a hit, `None` for a miss.
pub fn served(l: &Lookup) -> Option<(CacheTier, String)> {
    match l {
        Lookup::Hit { answer, tier, .. } => {
            Some((*tier, answer.output["advice"].as_str().unwrap().to_string()))
        }
        Lookup::Miss { .. } => None,
    }
}
