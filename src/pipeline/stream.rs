//! [`AiPipeline::stream`]: an answer streamed through the pipeline.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;

use super::{AiOutcome, AiPipeline};
use crate::agent::{AiRequest, output_text};
use crate::domain::SubscriptionTier;
use crate::error::Result;

/// One event of an answer streamed through the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    /// The next piece of the answer's text.
    Delta(String),
    /// The answer is complete: the whole of it, with what it cost and how the cache
    /// answered. The last event of a stream that did not fail.
    Done(AiOutcome),
}

/// An answer streamed through the pipeline (see [`AiPipeline::stream`]).
pub struct OutcomeStream {
    rx: tokio::sync::mpsc::Receiver<Result<StreamItem>>,
}

impl std::fmt::Debug for OutcomeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeStream").finish_non_exhaustive()
    }
}

impl Stream for OutcomeStream {
    type Item = Result<StreamItem>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl AiPipeline {
    /// Answers `req` for a user on `tier` as a stream.
    ///
    /// # Errors
    /// As [`AiPipeline::complete`], before the first event.
    pub async fn stream(&self, req: AiRequest, tier: SubscriptionTier) -> Result<OutcomeStream> {
        let outcome = self.complete(req, tier).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let text = output_text(&outcome.response.output);
        // The channel holds both events: neither send can fail or wait.
        let _ = tx.try_send(Ok(StreamItem::Delta(text)));
        let _ = tx.try_send(Ok(StreamItem::Done(outcome)));
        Ok(OutcomeStream { rx })
    }
}
