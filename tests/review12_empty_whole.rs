//! A backend without streaming answers through `AiAgent::stream`'s default, the whole
//! answer as one chunk. An answer without text (`{"text": ""}`) is no chunk: it sent
//! an empty `Delta` — an empty `delta` event on the server, and a first token
//! recorded for nothing — where a streaming backend (and a replayed hit) sends none.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use kasama::agent::{AiStream, StreamEvent, Usage};
use kasama::pipeline::StreamItem;
use kasama::prelude::*;
use serde_json::json;

mod common;

struct Silent;

#[async_trait]
impl AiAgent for Silent {
    fn name(&self) -> &str {
        "silent"
    }
    async fn complete(&self, _req: &AiRequest) -> Result<AiResponse> {
        Ok(AiResponse {
            output: json!({ "text": "" }),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 0,
            },
            usage_estimated: false,
            model: "m".into(),
            backend: "silent".into(),
            latency: Duration::from_millis(1),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_without_text_streams_no_empty_chunk() {
    let s: Vec<_> = AiStream::whole(
        Silent
            .complete(&AiRequest::new(
                UserId::new(),
                AgentType::LearningCoach,
                "hi",
            ))
            .await
            .unwrap(),
    )
    .collect()
    .await;
    assert!(matches!(s.as_slice(), [Ok(StreamEvent::Done(_))]), "{s:?}");

    let repo = common::pipeline::memory();
    let u = common::pipeline::users(&repo, 1).await[0];
    let pipeline = common::pipeline::builder(repo)
        .backend(Arc::new(Silent))
        .build()
        .unwrap();
    let items: Vec<_> = pipeline
        .stream(
            AiRequest::new(u, AgentType::LearningCoach, "hi"),
            SubscriptionTier::Free,
        )
        .await
        .unwrap()
        .collect()
        .await;
    assert!(
        matches!(items.as_slice(), [Ok(StreamItem::Done(_))]),
        "{items:?}"
    );
    pipeline.shutdown().await.unwrap();
}
