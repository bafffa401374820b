//! Scores question pairs the way the semantic cache decides them.
//!
//! Reads JSON lines `{"a": "...", "b": "..."}` on stdin and prints, per line, the
//! decision score in [0, 1]: exactly 1.0 when the cache, as configured by default,
//! would answer `b` from the entry stored for `a` (same scope, the embedder's default
//! threshold, the default verifier), lower otherwise (`similarity / threshold` capped
//! below 1, halved when a verifier refuses). So score == 1.0 is a hit.
//!
//! The defaults are the cache's: for every embedder that means exact repeats only
//! (none has met the 5 % false-hit bar on questions it was not tuned on);
//! `--semantic-hits` opts in, as a host would.
//!
//! ```text
//! cargo run --release --example score_pairs < pairs.jsonl
//! cargo run --release --features local-embeddings --example score_pairs -- \
//!     --embedder minilm --model-dir target/models/minilm < pairs.jsonl
//! ```
//!
//! Flags: `--embedder hashing|minilm` (default hashing), `--model-dir DIR` (minilm;
//! default `$KASAMA_MINILM_DIR`, else `$KASAMA_MODELS_DIR/minilm`, else
//! `target/models/minilm`), `--semantic-hits` (opt in to non-exact hits where
//! the default is off), `--verbose` (also print similarity and the reason).

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;

use kasama::semantic::{Embedder, HashingEmbedder, SemanticCache};
use serde::Deserialize;

#[derive(Deserialize)]
struct Pair {
    a: String,
    b: String,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: score_pairs [--embedder hashing|minilm] [--model-dir DIR] [--semantic-hits] [--verbose] < pairs.jsonl"
    );
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut embedder = "hashing".to_string();
    let mut model_dir = default_model_dir();
    let mut verbose = false;
    let mut opt_in = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--embedder" => match args.next() {
                Some(e) => embedder = e,
                None => return usage(),
            },
            "--model-dir" => match args.next() {
                Some(d) => model_dir = d,
                None => return usage(),
            },
            "--verbose" => verbose = true,
            "--semantic-hits" => opt_in = true,
            "-h" | "--help" => return usage(),
            _ => return usage(),
        }
    }
    let emb: Arc<dyn Embedder> = match embedder.as_str() {
        "hashing" => Arc::new(HashingEmbedder::new()),
        "minilm" => match load_minilm(&model_dir) {
            Ok(e) => e,
            Err(msg) => {
                eprintln!("score_pairs: {msg}");
                return ExitCode::FAILURE;
            }
        },
        other => {
            eprintln!("score_pairs: unknown embedder {other:?} (hashing or minilm)");
            return ExitCode::from(2);
        }
    };
    let mut builder = SemanticCache::builder(emb);
    if opt_in {
        builder = builder.semantic_hits(true);
    }
    let cache = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("score_pairs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("score_pairs: reading stdin: {e}");
                return ExitCode::FAILURE;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let pair: Pair = match serde_json::from_str(&line) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("score_pairs: line {}: {e}", n + 1);
                failed = true;
                continue;
            }
        };
        match cache.decide(&pair.a, &pair.b).await {
            Ok(d) if verbose => {
                let _ = writeln!(
                    out,
                    "{:.6}\t{:.4}\t{}",
                    d.score,
                    d.similarity,
                    d.rejected.unwrap_or("-")
                );
            }
            Ok(d) => {
                let _ = writeln!(out, "{:.6}", d.score);
            }
            Err(e) => {
                eprintln!("score_pairs: line {}: {e}", n + 1);
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(feature = "local-embeddings")]
fn load_minilm(dir: &str) -> Result<Arc<dyn Embedder>, String> {
    kasama::semantic::MiniLmEmbedder::load(dir)
        .map(|m| Arc::new(m) as Arc<dyn Embedder>)
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "local-embeddings"))]
fn load_minilm(_dir: &str) -> Result<Arc<dyn Embedder>, String> {
    Err("built without MiniLM: add --features local-embeddings".into())
}

/// `$KASAMA_MINILM_DIR`, else `$KASAMA_MODELS_DIR/minilm`, else `target/models/minilm`.
fn default_model_dir() -> String {
    std::env::var("KASAMA_MINILM_DIR").unwrap_or_else(|_| {
        let models = std::env::var("KASAMA_MODELS_DIR").unwrap_or_else(|_| "target/models".into());
        format!("{models}/minilm")
    })
}
