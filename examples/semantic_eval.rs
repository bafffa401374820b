//! Measures the semantic cache on labelled pairs, on the **tune** and the **test**
//! halves of each set under `data/` (see `data/README.md`): the hit rate on
//! paraphrases and the false-hit rate on each kind of different question, for each
//! embedder and verifier configuration. Thresholds and rules were tuned on the tune
//! halves only; the README reports the test halves.
//!
//! ```text
//! cargo run --release --all-features --example semantic_eval -- \
//!     [--data data] [--model-dir target/models/minilm] [--kinds] \
//!     [--judge-url URL --judge-model MODEL]   # an LLM judge (key: KASAMA_JUDGE_KEY)
//! ```
//!
//! Without the `local-embeddings` feature (or without the model files) only the
//! hashing embedder is measured. The LLM judge needs feature `openai` and a reachable
//! OpenAI-compatible endpoint; it is measured only when `--judge-url` is given.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kasama::semantic::{
    Candidate, Embedder, HashingEmbedder, SemanticCache, Verdict, Verifier, salience,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Pair {
    a: String,
    b: String,
    same: bool,
    kind: String,
}

/// Remembers vectors, so each text is embedded once over all configurations.
struct Memo {
    inner: Arc<dyn Embedder>,
    seen: Mutex<HashMap<String, Vec<f32>>>,
}

#[async_trait]
impl Embedder for Memo {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    fn default_threshold(&self) -> f32 {
        self.inner.default_threshold()
    }
    fn semantic_by_default(&self) -> bool {
        self.inner.semantic_by_default()
    }
    async fn embed(&self, texts: &[String]) -> kasama::Result<Vec<Vec<f32>>> {
        let missing: Vec<String> = {
            let seen = self.seen.lock().unwrap();
            texts
                .iter()
                .filter(|t| !seen.contains_key(*t))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let v = self.inner.embed(&missing).await?;
            let mut seen = self.seen.lock().unwrap();
            for (t, v) in missing.into_iter().zip(v) {
                seen.insert(t, v);
            }
        }
        let seen = self.seen.lock().unwrap();
        Ok(texts.iter().map(|t| seen[t].clone()).collect())
    }
}

/// The salience check alone (the rules before the contrast rules), for comparison.
struct SalienceOnly;

#[async_trait]
impl Verifier for SalienceOnly {
    fn name(&self) -> &str {
        "salience"
    }
    async fn verify(&self, c: &Candidate<'_>) -> kasama::Result<Verdict> {
        Ok(
            match salience::texts_conflict(c.stored_question, c.question) {
                Some(why) => Verdict::Reject(why),
                None => Verdict::Accept,
            },
        )
    }
}

struct Args {
    data: String,
    model_dir: String,
    kinds: bool,
    judge_url: Option<String>,
    judge_model: String,
}

fn parse() -> Option<Args> {
    let mut a = Args {
        data: "data".into(),
        model_dir: default_model_dir(),
        kinds: false,
        judge_url: None,
        judge_model: "gpt-4o-mini".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--data" => a.data = it.next()?,
            "--model-dir" => a.model_dir = it.next()?,
            "--kinds" => a.kinds = true,
            "--judge-url" => a.judge_url = Some(it.next()?),
            "--judge-model" => a.judge_model = it.next()?,
            _ => return None,
        }
    }
    Some(a)
}

/// The slices measured, by file stem.
const SETS: &[(&str, &str)] = &[
    ("semantic-pairs-dev", "dev (GPTCache)"),
    ("coaching-pairs", "coaching"),
    ("coaching-related", "coaching related"),
];

fn load(path: &str) -> Result<Vec<Pair>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{path}: {e}")))
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Count {
    hits: usize,
    n: usize,
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.n == 0 {
            return write!(f, "–");
        }
        write!(
            f,
            "{:.1} % ({}/{})",
            100.0 * self.hits as f64 / self.n as f64,
            self.hits,
            self.n
        )
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(args) = parse() else {
        eprintln!(
            "usage: semantic_eval [--data DIR] [--model-dir DIR] [--kinds] [--judge-url URL --judge-model M]"
        );
        return ExitCode::from(2);
    };
    let mut halves: Vec<(String, &str, Vec<Pair>)> = Vec::new();
    for (stem, label) in SETS {
        for half in ["tune", "test"] {
            match load(&format!("{}/{stem}-{half}.jsonl", args.data)) {
                Ok(p) => halves.push((half.to_string(), label, p)),
                Err(e) => {
                    eprintln!("semantic_eval: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let mut embedders: Vec<Arc<dyn Embedder>> = vec![Arc::new(HashingEmbedder::new())];
    if let Some(m) = minilm(&args.model_dir) {
        embedders.push(m);
    }
    let judge = judge(&args);
    println!(
        "Columns: paraphrases hit (higher is better); false hits on look-alikes (most words \
         shared, another meaning), on related-but-different coaching questions, and on the \
         dev set's mined look-alikes (lower is better).\n"
    );
    println!(
        "| embedder | configuration | half | dev paraphrases hit | coaching paraphrases hit | coaching look-alikes: false hits | coaching related: false hits | dev look-alikes: false hits |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for emb in embedders {
        let emb: Arc<dyn Embedder> = Arc::new(Memo {
            inner: emb,
            seen: Mutex::default(),
        });
        let t = emb.default_threshold();
        let mut configs: Vec<(String, SemanticCache)> = vec![
            (
                format!("cosine ≥ {t:.2} only"),
                SemanticCache::builder(emb.clone())
                    .semantic_hits(true)
                    .salience_check(false)
                    .build()
                    .expect("valid"),
            ),
            (
                format!("cosine ≥ {t:.2} + salience check"),
                SemanticCache::builder(emb.clone())
                    .semantic_hits(true)
                    .salience_check(false)
                    .verifier(Arc::new(SalienceOnly))
                    .build()
                    .expect("valid"),
            ),
            (
                format!("cosine ≥ {t:.2} + RuleVerifier"),
                SemanticCache::builder(emb.clone())
                    .semantic_hits(true)
                    .build()
                    .expect("valid"),
            ),
        ];
        if let Some(j) = &judge {
            configs.push((
                format!("cosine ≥ {t:.2} + RuleVerifier + LLM judge"),
                SemanticCache::builder(emb.clone())
                    .semantic_hits(true)
                    .verifier(j.clone())
                    .build()
                    .expect("valid"),
            ));
        }
        configs.push((
            "**default**".into(),
            SemanticCache::builder(emb.clone()).build().expect("valid"),
        ));
        for (name, cache) in &configs {
            for half in ["tune", "test"] {
                let mut c: BTreeMap<&str, Count> = BTreeMap::new();
                let mut kinds: BTreeMap<String, Count> = BTreeMap::new();
                for (h, label, pairs) in &halves {
                    if h != half {
                        continue;
                    }
                    for p in pairs {
                        let d = match cache.decide(&p.a, &p.b).await {
                            Ok(d) => d,
                            Err(e) => {
                                eprintln!("semantic_eval: {e}");
                                return ExitCode::FAILURE;
                            }
                        };
                        let slot = match (*label, p.same) {
                            ("dev (GPTCache)", true) => "dev-para",
                            ("dev (GPTCache)", false) => "dev-diff",
                            ("coaching", true) => "c-para",
                            ("coaching", false) => "c-diff",
                            _ => "c-related",
                        };
                        let e = c.entry(slot).or_default();
                        e.n += 1;
                        e.hits += usize::from(d.hit);
                        if *label == "coaching" && !p.same {
                            let k = kinds.entry(p.kind.clone()).or_default();
                            k.n += 1;
                            k.hits += usize::from(d.hit);
                        }
                    }
                }
                let g = |k: &str| c.get(k).copied().unwrap_or_default();
                println!(
                    "| {} | {name} | {half} | {} | {} | {} | {} | {} |",
                    emb.name(),
                    g("dev-para"),
                    g("c-para"),
                    g("c-diff"),
                    g("c-related"),
                    g("dev-diff"),
                );
                if args.kinds {
                    let list: Vec<String> = kinds.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    println!(
                        "| | ↳ coaching look-alikes by kind | {half} | {} | | | | |",
                        list.join("; ")
                    );
                }
            }
        }
    }
    if let Some(j) = &judge {
        println!("\nLLM judge cost: {:?}", j.cost());
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

#[cfg(feature = "openai")]
fn judge(args: &Args) -> Option<Arc<kasama::semantic::LlmJudgeVerifier>> {
    use kasama::agent::OpenAiCompatibleAgent;
    use kasama::prelude::*;
    let url = args.judge_url.as_ref()?;
    let mut b = OpenAiCompatibleAgent::builder(url.clone()).default_model(&args.judge_model);
    if let Ok(k) = std::env::var("KASAMA_JUDGE_KEY") {
        b = b.api_key(k);
    }
    let agent = match b.build() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("semantic_eval: judge not measured: {e}");
            return None;
        }
    };
    // gpt-4o-mini's list price: $0.15 / $0.60 per million tokens.
    let price = kasama::pipeline::Price {
        input_micros_per_1k: 150,
        output_micros_per_1k: 600,
    };
    Some(Arc::new(
        kasama::semantic::LlmJudgeVerifier::new(
            Arc::new(agent),
            price,
            AgentType::CommunicationAdvisor,
            UserId::new(),
        )
        .model(&args.judge_model),
    ))
}

#[cfg(not(feature = "openai"))]
fn judge(args: &Args) -> Option<Arc<kasama::semantic::LlmJudgeVerifier>> {
    if args.judge_url.is_some() {
        eprintln!("semantic_eval: the LLM judge needs --features openai");
    }
    None
}

/// `$KASAMA_MINILM_DIR`, else `$KASAMA_MODELS_DIR/minilm`, else `target/models/minilm`.
fn default_model_dir() -> String {
    std::env::var("KASAMA_MINILM_DIR").unwrap_or_else(|_| {
        let models = std::env::var("KASAMA_MODELS_DIR").unwrap_or_else(|_| "target/models".into());
        format!("{models}/minilm")
    })
}
