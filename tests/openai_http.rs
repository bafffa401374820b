//! `OpenAiCompatibleAgent` and `OpenAiCompatibleEmbedder` against a real HTTP server
//! on loopback (wiremock): success, 429 with Retry-After, 5xx, other 4xx, malformed
//! JSON, missing usage, a response slower than the timeout.
#![cfg(feature = "openai")]

use std::time::Duration;

use kasama::agent::{AiAgent, AiRequest, OpenAiCompatibleAgent};
use kasama::prelude::*;
use kasama::semantic::{Embedder, OpenAiCompatibleEmbedder};
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn agent(server: &MockServer) -> OpenAiCompatibleAgent {
    OpenAiCompatibleAgent::builder(format!("{}/v1", server.uri()))
        .api_key("sk-test")
        .model_for(AgentType::LearningCoach, "coach-model")
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn req() -> AiRequest {
    AiRequest::new(
        UserId::new(),
        AgentType::LearningCoach,
        "How do I listen better?",
    )
}

fn completion(content: &str) -> serde_json::Value {
    json!({
        "model": "coach-model-2026",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43}
    })
}

#[tokio::test]
async fn success_reads_the_answer_and_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test"))
        .and(body_partial_json(
            json!({"model": "coach-model", "max_tokens": 512}),
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(completion("{\"advice\": \"reflect back\"}")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let r = agent(&server).complete(&req()).await.unwrap();
    assert_eq!(r.output, json!({"advice": "reflect back"}));
    assert_eq!(
        (
            r.usage.input_tokens,
            r.usage.output_tokens,
            r.usage_estimated
        ),
        (31, 12, false)
    );
    assert_eq!(r.model, "coach-model-2026");
    assert_eq!(r.backend, "openai");
}

#[tokio::test]
async fn plain_text_answers_and_missing_usage() {
    let server = MockServer::start().await;
    let mut body = completion("Reflect back what you heard.");
    body.as_object_mut().unwrap().remove("usage");
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let r = agent(&server).complete(&req()).await.unwrap();
    assert_eq!(r.output, json!({"text": "Reflect back what you heard."}));
    assert!(r.usage_estimated);
    assert_eq!(r.usage.output_tokens, 7); // 28 characters / 4
    assert!(r.usage.input_tokens > 0);
}

#[tokio::test]
async fn status_codes_map_to_errors_callers_can_act_on() {
    let server = MockServer::start().await;
    let a = agent(&server);
    type Check = fn(&Error) -> bool;
    let cases: Vec<(ResponseTemplate, Check)> = vec![
        (
            ResponseTemplate::new(429).insert_header("retry-after", "7"),
            |e| e.retry_after() == Some(Duration::from_secs(7)),
        ),
        (ResponseTemplate::new(429), |e| {
            e.retry_after() == Some(Duration::from_secs(1))
        }),
        (ResponseTemplate::new(500), |e| {
            matches!(
                e,
                Error::Backend {
                    retryable: true,
                    ..
                }
            )
        }),
        (ResponseTemplate::new(503), |e| {
            matches!(
                e,
                Error::Backend {
                    retryable: true,
                    ..
                }
            )
        }),
        (ResponseTemplate::new(400), |e| {
            matches!(
                e,
                Error::Backend {
                    retryable: false,
                    ..
                }
            )
        }),
        (ResponseTemplate::new(401), |e| {
            matches!(
                e,
                Error::Backend {
                    retryable: false,
                    ..
                }
            )
        }),
        (
            ResponseTemplate::new(200).set_body_string("{not json"),
            |e| {
                matches!(
                    e,
                    Error::Backend {
                        retryable: true,
                        ..
                    }
                )
            },
        ),
        (
            ResponseTemplate::new(200).set_body_json(json!({"choices": []})),
            |e| matches!(e, Error::Backend { .. }),
        ),
    ];
    for (i, (resp, check)) in cases.into_iter().enumerate() {
        server.reset().await;
        Mock::given(method("POST"))
            .respond_with(resp)
            .mount(&server)
            .await;
        let e = a.complete(&req()).await.unwrap_err();
        assert!(check(&e), "case {i}: {e:?}");
        assert!(
            !format!("{e:?}").contains("sk-test"),
            "the key never appears in errors"
        );
    }
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_is_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("late"))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let e = agent(&server).complete(&req()).await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(e.is_retryable());
}

#[tokio::test]
async fn refused_before_sending() {
    assert_eq!(
        OpenAiCompatibleAgent::builder("ftp://x")
            .build()
            .unwrap_err()
            .invalid_field(),
        Some("base_url")
    );
    let server = MockServer::start().await;
    let mut r = req();
    r.params.temperature = f32::NAN;
    assert_eq!(
        agent(&server)
            .complete(&r)
            .await
            .unwrap_err()
            .invalid_field(),
        Some("temperature")
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn embedder_orders_by_index_and_checks_vectors() {
    let server = MockServer::start().await;
    let e = OpenAiCompatibleEmbedder::new(&server.uri(), "embed-3", 3)
        .unwrap()
        .with_api_key("k");
    Mock::given(method("POST"))
        .and(path("/embeddings"))
        .and(body_partial_json(
            json!({"model": "embed-3", "input": ["a", "b"]}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [
                {"index": 1, "embedding": [0.0, 2.0, 0.0]},
                {"index": 0, "embedding": [3.0, 0.0, 4.0]},
            ]
        })))
        .mount(&server)
        .await;
    let v = e.embed(&["a".into(), "b".into()]).await.unwrap();
    assert_eq!(v, vec![vec![0.6, 0.0, 0.8], vec![0.0, 1.0, 0.0]]);

    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [{"index": 0, "embedding": [1.0, 2.0]}]})),
        )
        .mount(&server)
        .await;
    assert!(matches!(
        e.embed(&["a".into()]).await.unwrap_err(),
        Error::Backend { .. }
    ));
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [{"index": 0, "embedding": [1.0, null, 2.0]}]})),
        )
        .mount(&server)
        .await;
    assert!(matches!(
        e.embed(&["a".into()]).await.unwrap_err(),
        Error::Backend { .. }
    ));
    assert_eq!(
        e.embed(&["".into()]).await.unwrap_err().invalid_field(),
        Some("texts[0]")
    );
}

#[tokio::test]
async fn token_counts_past_u32_saturate_instead_of_wrapping() {
    let server = MockServer::start().await;
    let mut body = completion("ok");
    // 2^32 + 5 would wrap to 5 tokens: a bill a billion times too small.
    body["usage"] = json!({"prompt_tokens": 4_294_967_301u64, "completion_tokens": 12});
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let r = agent(&server).complete(&req()).await.unwrap();
    assert_eq!(
        (r.usage.input_tokens, r.usage.output_tokens),
        (u32::MAX, 12)
    );
}
