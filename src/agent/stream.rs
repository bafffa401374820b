//! Streamed answers: [`AiStream`], what [`AiAgent::stream`](super::AiAgent::stream)
//! returns — text as the backend produces it, then the whole answer with its usage.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use futures_util::stream::BoxStream;
use serde_json::Value;

use super::AiResponse;
use crate::error::Result;

/// One event of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// The next piece of the answer's text.
    Delta(String),
    /// The answer is complete: the whole of it (its output parsed as
    /// [`AiResponse::output`] says), with the tokens billed. Always the last event
    /// of a stream that did not fail.
    Done(AiResponse),
}

/// A streamed answer: any number of [`StreamEvent::Delta`]s, then one
/// [`StreamEvent::Done`]. An `Err` item ends the stream (the backend failed
/// mid-answer); so does dropping the stream (the backend call is cancelled). A stream
/// that ends without `Done` or an error ended early, and its consumer treats it as a
/// retryable backend error.
pub struct AiStream {
    inner: BoxStream<'static, Result<StreamEvent>>,
}

impl std::fmt::Debug for AiStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiStream").finish_non_exhaustive()
    }
}

impl AiStream {
    /// A stream of these events.
    pub fn new(inner: impl Stream<Item = Result<StreamEvent>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(inner),
        }
    }

    /// A whole answer as one chunk: its text ([`output_text`]) then `Done` — only
    /// `Done` for an answer without text. What backends without streaming return.
    pub fn whole(response: AiResponse) -> Self {
        let text = output_text(&response.output);
        let delta = (!text.is_empty()).then(|| Ok(StreamEvent::Delta(text)));
        Self::new(futures_util::stream::iter(
            delta.into_iter().chain([Ok(StreamEvent::Done(response))]),
        ))
    }
}

impl Stream for AiStream {
    type Item = Result<StreamEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The text of an answer's output: its `"text"` field when it is `{"text": …}`
/// alone, else the output as canonical JSON (a structured answer streams as its JSON).
pub fn output_text(output: &Value) -> String {
    if let Value::Object(m) = output
        && m.len() == 1
        && let Some(Value::String(s)) = m.get("text")
    {
        return s.clone();
    }
    if let Value::String(s) = output {
        return s.clone();
    }
    super::prompt::canonical_json(output)
}

/// Splits `text` into token-sized pieces, as a model would stream it: each piece is
/// the whitespace before a word and up to four of its characters (a longer word
/// continues in pieces of four). The pieces concatenate to `text` exactly; their
/// number is close to [`estimate_tokens`](super::estimate_tokens)`(text)`.
pub fn token_pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut piece_start = 0;
    let mut word_chars = 0;
    for (i, c) in text.char_indices() {
        let starts_new = word_chars > 0 && (c.is_whitespace() || word_chars == 4);
        if starts_new {
            out.push(&text[piece_start..i]);
            piece_start = i;
            word_chars = 0;
        }
        if !c.is_whitespace() {
            word_chars += 1;
        }
    }
    if piece_start < text.len() {
        out.push(&text[piece_start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_pieces_split_words_and_rejoin_exactly() {
        assert_eq!(
            token_pieces("Try ten minutes of listening."),
            ["Try", " ten", " minu", "tes", " of", " list", "enin", "g."]
        );
        assert_eq!(token_pieces("  a\n\nb "), ["  a", "\n\nb", " "]);
        assert!(token_pieces("").is_empty());
        let text = "Öffne dich – ❤ {\"a\":[1,2]} über   alles";
        assert_eq!(token_pieces(text).concat(), text);
        assert!(token_pieces(text).iter().all(|p| !p.is_empty()));
    }
}
