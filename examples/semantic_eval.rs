//! Measures the semantic cache on labelled pairs: the hit rate on paraphrases and the
//! false-hit rate on look-alike pairs, for each embedder, with and without the
//! salience check, at each embedder's default threshold. Prints the README's table.
//!
//! ```text
//! cargo run --release --features local-embeddings --example semantic_eval -- \
//!     ../shared/data/semantic-pairs-dev.jsonl [--model-dir target/models/minilm]
//! ```
//!
//! Input: JSON lines `{"a", "b", "same": bool}`. Without the `local-embeddings`
//! feature (or without the model files) only the hashing embedder is measured.

use std::process::ExitCode;
use std::sync::Arc;

use kasama::semantic::{Embedder, HashingEmbedder, SemanticCache};
use serde::Deserialize;

#[derive(Deserialize)]
struct Pair {
    a: String,
    b: String,
    same: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: semantic_eval PAIRS.jsonl [--model-dir DIR]");
        return ExitCode::from(2);
    };
    let mut model_dir = "target/models/minilm".to_string();
    while let Some(a) = args.next() {
        if a == "--model-dir"
            && let Some(d) = args.next()
        {
            model_dir = d;
        }
    }
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("semantic_eval: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pairs: Vec<Pair> = match text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("semantic_eval: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let same = pairs.iter().filter(|p| p.same).count();
    let diff = pairs.len() - same;
    println!(
        "{} pairs: {same} paraphrases, {diff} look-alikes with a different meaning\n",
        pairs.len()
    );
    println!(
        "| embedder | threshold | salience check | hit rate on paraphrases | false-hit rate on look-alikes |"
    );
    println!("|---|---|---|---|---|");
    let mut embedders: Vec<Arc<dyn Embedder>> = vec![Arc::new(HashingEmbedder::new())];
    if let Some(m) = minilm(&model_dir) {
        embedders.push(m);
    }
    for emb in embedders {
        for check in [false, true] {
            let cache = SemanticCache::builder(emb.clone())
                .salience_check(check)
                .build()
                .expect("defaults");
            let (mut hits, mut false_hits) = (0usize, 0usize);
            for p in &pairs {
                let d = match cache.decide(&p.a, &p.b).await {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("semantic_eval: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                match (p.same, d.hit) {
                    (true, true) => hits += 1,
                    (false, true) => false_hits += 1,
                    _ => {}
                }
            }
            println!(
                "| {} | {:.2} | {} | {:.1} % ({hits}/{same}) | {:.1} % ({false_hits}/{diff}) |",
                emb.name(),
                emb.default_threshold(),
                if check { "on" } else { "off" },
                100.0 * hits as f64 / same.max(1) as f64,
                100.0 * false_hits as f64 / diff.max(1) as f64,
            );
        }
    }
    ExitCode::SUCCESS
}

#[cfg(feature = "local-embeddings")]
fn minilm(dir: &str) -> Option<Arc<dyn Embedder>> {
    match kasama::semantic::MiniLmEmbedder::load(dir) {
        Ok(m) => Some(Arc::new(m)),
        Err(e) => {
            eprintln!("semantic_eval: MiniLM not measured: {e}");
            None
        }
    }
}

#[cfg(not(feature = "local-embeddings"))]
fn minilm(_dir: &str) -> Option<Arc<dyn Embedder>> {
    eprintln!("semantic_eval: MiniLM not measured (build with --features local-embeddings)");
    None
}
