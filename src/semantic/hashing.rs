//! [`HashingEmbedder`]: lexical feature hashing, no model.

use async_trait::async_trait;

use super::{Embedder, check_texts, normalise};
use crate::error::Result;
use crate::text::{fnv1a, terms};

/// A **lexical** embedder: no model, nothing to load. It hashes stemmed words
/// (weight 1), word pairs (0.5) and character trigrams (0.25) into signed buckets
/// (the "hashing trick"), squashes each bucket's sum `x` to `sign(x) · ln(1 + |x|)`
/// (sublinear term frequency), and normalises. Texts that share words score high;
/// paraphrases that share few words score low — it does not know that "argue" and
/// "fight" mean the same. Its cosines therefore sit much lower than a language
/// model's, and its calibrated threshold is lower (see [`Embedder::default_threshold`]).
/// Deterministic across runs and machines.
#[derive(Clone, Debug)]
pub struct HashingEmbedder {
    dimension: usize,
}

impl Default for HashingEmbedder {
    fn default() -> Self {
        Self { dimension: 384 }
    }
}

impl HashingEmbedder {
    /// 384 dimensions, like MiniLM.
    pub fn new() -> Self {
        Self::default()
    }

    /// One text's vector (the text must be non-empty).
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let dim = self.dimension;
        let mut v = vec![0f32; dim];
        let add = |v: &mut [f32], feature: &[u8], weight: f32| {
            let h = fnv1a(feature);
            let i = (h % dim as u64) as usize;
            let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
            v[i] += sign * weight;
        };
        let t = terms(text);
        for w in &t {
            add(&mut v, w.as_bytes(), 1.0);
            let padded = format!("<{w}>");
            let b = padded.as_bytes();
            for tri in b.windows(3) {
                add(&mut v, tri, 0.25);
            }
        }
        for pair in t.windows(2) {
            add(&mut v, format!("{} {}", pair[0], pair[1]).as_bytes(), 0.5);
        }
        // Sublinear term frequency: squash repeated features.
        for x in v.iter_mut() {
            *x = x.signum() * (1.0 + x.abs()).ln();
        }
        if v.iter().all(|x| *x == 0.0) {
            // Only stop words or symbols: fall back to the raw lowercased text.
            add(&mut v, text.trim().to_lowercase().as_bytes(), 1.0);
        }
        normalise(v, self.dimension).unwrap_or_else(|_| {
            let mut z = vec![0f32; self.dimension];
            z[0] = 1.0;
            z
        })
    }
}

#[async_trait]
impl Embedder for HashingEmbedder {
    fn name(&self) -> &str {
        "hashing"
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn default_threshold(&self) -> f32 {
        0.60
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        check_texts(texts)?;
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}
