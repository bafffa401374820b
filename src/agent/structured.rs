//! Structured answers: the assessment analyst answers with an [`AssessmentAnalysis`]
//! JSON object, asked for with `response_format` (a JSON schema) on OpenAI-compatible
//! backends and checked on arrival by the pipeline ([`check_output`]): an answer of
//! another shape is an error, and is never cached.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::AgentType;
use crate::error::{Error, Result};

/// The assessment analyst's answer. Every field is a list of short sentences (at most
/// 20 of at most 1,000 characters each); a list may be empty, a field may not be
/// missing, and no other field is allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssessmentAnalysis {
    /// What the results say.
    pub insights: Vec<String>,
    /// What the user does well.
    pub strengths: Vec<String>,
    /// Where the user can grow.
    pub growth_areas: Vec<String>,
    /// Practices worth trying next.
    pub suggested_practices: Vec<String>,
}

/// Most sentences in one field of a structured answer.
pub const MAX_ITEMS: usize = 20;
/// Most characters in one sentence of a structured answer.
pub const MAX_ITEM_CHARS: usize = 1_000;

/// Whether `agent` answers with a structured object ([`AssessmentAnalysis`] for the
/// assessment analyst; the other kinds answer in text).
pub fn wants_structured(agent: AgentType) -> bool {
    agent == AgentType::AssessmentAnalyst
}

/// The `response_format` an OpenAI-compatible backend is sent for `agent`, if it
/// answers with a structured object: a strict JSON schema of [`AssessmentAnalysis`].
pub fn response_format(agent: AgentType) -> Option<Value> {
    if !wants_structured(agent) {
        return None;
    }
    let list = json!({ "type": "array", "items": { "type": "string" } });
    Some(json!({
        "type": "json_schema",
        "json_schema": {
            "name": "assessment_analysis",
            "strict": true,
            "schema": {
                "type": "object",
                "properties": {
                    "insights": list,
                    "strengths": list,
                    "growth_areas": list,
                    "suggested_practices": list,
                },
                "required": ["insights", "strengths", "growth_areas", "suggested_practices"],
                "additionalProperties": false,
            },
        },
    }))
}

/// Checks that `output` has the shape `agent` answers with.
///
/// # Errors
/// A non-retryable [`Error::Backend`] ("assessment analysis (the model answered in the
/// wrong shape)", its source saying what is wrong), for
/// an assessment analyst's answer that is not an [`AssessmentAnalysis`].
pub fn check_output(agent: AgentType, output: &Value) -> Result<()> {
    if !wants_structured(agent) {
        return Ok(());
    }
    let bad = |why: String| Error::Backend {
        what: "assessment analysis (the model answered in the wrong shape)".into(),
        retryable: false,
        source: format!("the {agent} answer is not an assessment analysis: {why}").into(),
    };
    let a: AssessmentAnalysis =
        serde_json::from_value(output.clone()).map_err(|e| bad(e.to_string()))?;
    for (name, list) in [
        ("insights", &a.insights),
        ("strengths", &a.strengths),
        ("growth_areas", &a.growth_areas),
        ("suggested_practices", &a.suggested_practices),
    ] {
        if list.len() > MAX_ITEMS {
            return Err(bad(format!(
                "{name} has {} items (most {MAX_ITEMS})",
                list.len()
            )));
        }
        if let Some(s) = list.iter().find(|s| s.chars().count() > MAX_ITEM_CHARS) {
            return Err(bad(format!(
                "an item of {name} has {} characters (most {MAX_ITEM_CHARS})",
                s.chars().count()
            )));
        }
    }
    Ok(())
}

/// Checks that `output` has the shape `req` asks for: the kind's structured object
/// unless the request is [`text_only`](super::ModelParams::text_only).
///
/// # Errors
/// As [`check_output`].
pub fn check_answer(req: &super::AiRequest, output: &Value) -> Result<()> {
    if req.wants_structured() {
        check_output(req.agent, output)
    } else {
        Ok(())
    }
}
