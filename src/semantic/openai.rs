//! `OpenAiCompatibleEmbedder`: any server speaking OpenAI's `/embeddings`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Embedder, check_texts, normalise};
use crate::agent::openai::{http_error, post_json};
use crate::error::{Error, Result};

/// An [`Embedder`] over HTTP: `POST {base_url}/embeddings` with `{model, input: [...]}`.
/// Vectors are checked (dimension, NaN) and normalised. Errors map as for
/// `OpenAiCompatibleAgent`. Its `Debug` shows whether an API key is set, never the key.
#[derive(Clone)]
pub struct OpenAiCompatibleEmbedder {
    url: String,
    api_key: Option<String>,
    model: String,
    dimension: usize,
    threshold: f32,
    timeout: Duration,
    client: reqwest::Client,
}

impl std::fmt::Debug for OpenAiCompatibleEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiCompatibleEmbedder")
            .field("url", &self.url)
            .field("api_key", &crate::agent::openai::redacted(&self.api_key))
            .field("model", &self.model)
            .field("dimension", &self.dimension)
            .field("threshold", &self.threshold)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OpenAiCompatibleEmbedder {
    /// An embedder for `model` at `base_url`, whose vectors have `dimension` entries.
    /// The threshold defaults to 0.85; calibrate it for your model with
    /// `examples/score_pairs.rs` and set it with [`Self::with_threshold`].
    ///
    /// # Errors
    /// `InvalidInput` for a base URL that is not `http(s)://…` or a zero dimension.
    pub fn new(base_url: &str, model: impl Into<String>, dimension: usize) -> Result<Self> {
        let base = base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://"))
            || reqwest::Url::parse(base).is_err()
        {
            return Err(Error::invalid("base_url", "must be an http(s) URL"));
        }
        if dimension == 0 {
            return Err(Error::invalid("dimension", "must be positive"));
        }
        Ok(Self {
            url: format!("{base}/embeddings"),
            api_key: None,
            model: model.into(),
            dimension,
            threshold: 0.85,
            timeout: Duration::from_secs(30),
            client: reqwest::Client::default(),
        })
    }

    /// The bearer key.
    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The calibrated threshold.
    #[must_use]
    pub fn with_threshold(mut self, t: f32) -> Self {
        self.threshold = t;
        self
    }

    /// The HTTP client (bring TLS here).
    #[must_use]
    pub fn with_client(mut self, c: reqwest::Client) -> Self {
        self.client = c;
        self
    }

    /// How long one call may take. Default: 30 s.
    #[must_use]
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

#[async_trait]
impl Embedder for OpenAiCompatibleEmbedder {
    fn name(&self) -> &str {
        &self.model
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn default_threshold(&self) -> f32 {
        self.threshold
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        check_texts(texts)?;
        let body = json!({ "model": self.model, "input": texts });
        let v = post_json(
            &self.client,
            &self.url,
            self.api_key.as_deref(),
            &body,
            self.timeout,
            "embedding",
            // Not bounded here: a batch's vectors have no fixed size (texts × dims).
            usize::MAX,
        )
        .await?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| http_error("embedding", true, "no data array".into()))?;
        if data.len() != texts.len() {
            return Err(http_error(
                "embedding",
                true,
                format!("{} vectors for {} texts", data.len(), texts.len()),
            ));
        }
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for (pos, d) in data.iter().enumerate() {
            let i = d
                .get("index")
                .and_then(Value::as_u64)
                .map_or(pos, |i| i as usize);
            let raw: Vec<f32> = d
                .get("embedding")
                .and_then(Value::as_array)
                .ok_or_else(|| http_error("embedding", true, "no embedding array".into()))?
                .iter()
                .map(|x| x.as_f64().map_or(f32::NAN, |f| f as f32))
                .collect();
            let v = normalise(raw, self.dimension).map_err(|e| Error::Backend {
                what: "embedding".into(),
                retryable: false,
                source: Box::new(e),
            })?;
            *out.get_mut(i)
                .ok_or_else(|| http_error("embedding", true, "index out of range".into()))? =
                Some(v);
        }
        out.into_iter()
            .map(|v| v.ok_or_else(|| http_error("embedding", true, "missing index".into())))
            .collect()
    }
}
