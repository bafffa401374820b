//! Semantic lookup: the HNSW `VectorIndex` at 1k, 10k and 100k entries of 384
//! dimensions against exact brute force over the same vectors, in the same run; recall
//! of the index (share of queries whose true nearest neighbour it returns) is printed
//! beside. With `--features local-embeddings` and the model in `target/models/minilm`
//! (or `$KASAMA_MINILM_DIR`), also MiniLM embedding throughput.
//!
//! Vectors are the hashing embedder's vectors of synthetic coaching questions, so they
//! cluster like real text rather than spread like random noise.
//!
//! ```text
//! cargo bench --bench semantic
//! cargo bench --features local-embeddings --bench semantic
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kasama::semantic::{HashingEmbedder, VectorIndex, cosine};

const TOPICS: &[&str] = &[
    "trust", "money", "chores", "holidays", "in-laws", "intimacy", "jealousy", "hobbies",
    "careers", "moving", "kids", "friends", "phones", "sleep", "fitness", "food",
];
const FRAMES: &[&str] = &[
    "How do we talk about {t} without fighting",
    "My partner and I disagree about {t}, what can we do",
    "What is a healthy way to handle {t} as a couple",
    "Why do arguments about {t} keep coming back",
    "How can I bring up {t} gently tonight",
];

fn sentence(i: usize) -> String {
    let t = TOPICS[i % TOPICS.len()];
    let f = FRAMES[(i / TOPICS.len()) % FRAMES.len()];
    format!("{} (case {i}, week {})", f.replace("{t}", t), i % 52)
}

fn vectors(n: usize, offset: usize) -> Vec<Vec<f32>> {
    let e = HashingEmbedder::new();
    (offset..offset + n)
        .map(|i| e.embed_one(&sentence(i)))
        .collect()
}

fn brute(data: &[Vec<f32>], q: &[f32]) -> usize {
    let mut best = (0, f32::MIN);
    for (i, v) in data.iter().enumerate() {
        let s = cosine(q, v);
        if s > best.1 {
            best = (i, s);
        }
    }
    best.0
}

fn benches(c: &mut Criterion) {
    let queries = vectors(200, 10_000_000);
    let mut g = c.benchmark_group("semantic_lookup");
    g.throughput(Throughput::Elements(1));
    for n in [1_000usize, 10_000, 100_000] {
        let data = vectors(n, 0);
        let t = Instant::now();
        let mut idx = VectorIndex::new(384);
        for v in &data {
            idx.insert(v.clone()).unwrap();
        }
        let build = t.elapsed();
        let truth: Vec<usize> = queries.iter().map(|q| brute(&data, q)).collect();
        print!(
            "\n{n} entries: index built in {:.1} s; recall@1:",
            build.as_secs_f64()
        );
        for ef in [16, 32, 64] {
            let recall = queries
                .iter()
                .zip(&truth)
                .filter(|(q, t)| idx.search(q, 1, ef).unwrap()[0].0 as usize == **t)
                .count();
            print!(" ef {ef}: {recall}/{}", queries.len());
        }
        println!();
        let mut qi = 0;
        g.bench_with_input(BenchmarkId::new("brute_force", n), &n, |b, _| {
            b.iter(|| {
                qi = (qi + 1) % queries.len();
                black_box(brute(&data, &queries[qi]))
            })
        });
        for ef in [16, 32, 64] {
            g.bench_with_input(BenchmarkId::new(format!("hnsw_ef{ef}"), n), &n, |b, _| {
                b.iter(|| {
                    qi = (qi + 1) % queries.len();
                    black_box(idx.search(&queries[qi], 4, ef).unwrap())
                })
            });
        }
    }
    g.finish();
    verified(c);
    minilm(c);
}

fn verified(c: &mut Criterion) {
    use std::sync::Arc;

    use async_trait::async_trait;
    use kasama::agent::{AiAgent, AiRequest, AiResponse, Usage};
    use kasama::pipeline::Price;
    use kasama::prelude::*;
    use kasama::semantic::{LlmJudgeVerifier, Lookup, SemanticCache, SemanticCacheBuilder};

    struct Yes;
    #[async_trait]
    impl AiAgent for Yes {
        fn name(&self) -> &str {
            "yes"
        }
        async fn complete(&self, _: &AiRequest) -> kasama::Result<AiResponse> {
            Ok(AiResponse {
                output: serde_json::json!({"text": "YES"}),
                usage: Usage {
                    input_tokens: 90,
                    output_tokens: 1,
                },
                usage_estimated: false,
                model: "judge".into(),
                backend: "yes".into(),
                latency: Duration::ZERO,
            })
        }
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let user = UserId::new();
    let stored = "How can I listen better to my partner when we talk about money?";
    let asked = "How can I better listen to my partner when we talk about money?";
    let fill = |b: SemanticCacheBuilder| {
        let cache = b.semantic_hits(true).build().unwrap();
        rt.block_on(async {
            for i in 0..1_000 {
                let q = if i == 500 {
                    stored.to_string()
                } else {
                    sentence(i)
                };
                let req = AiRequest::new(user, AgentType::CommunicationAdvisor, q);
                let resp = AiResponse {
                    output: serde_json::json!({"advice": i}),
                    usage: Usage::default(),
                    usage_estimated: false,
                    model: "m".into(),
                    backend: "b".into(),
                    latency: Duration::ZERO,
                };
                cache.store(&req, &resp, None).await.unwrap();
            }
        });
        cache
    };
    let embedder = || Arc::new(HashingEmbedder::new());
    let judge = Arc::new(LlmJudgeVerifier::new(
        Arc::new(Yes),
        Price {
            input_micros_per_1k: 150,
            output_micros_per_1k: 600,
        },
        AgentType::InsightGenerator,
        UserId::new(),
    ));
    let caches: [(&str, SemanticCache); 3] = [
        (
            "unverified",
            fill(SemanticCache::builder(embedder()).salience_check(false)),
        ),
        ("rules", fill(SemanticCache::builder(embedder()))),
        (
            "rules_and_llm_judge",
            fill(SemanticCache::builder(embedder()).verifier(judge)),
        ),
    ];
    let req = AiRequest::new(user, AgentType::CommunicationAdvisor, asked);
    let mut g = c.benchmark_group("verified_lookup");
    g.throughput(Throughput::Elements(1));
    for (name, cache) in &caches {
        assert!(
            matches!(rt.block_on(cache.lookup(&req)).unwrap(), Lookup::Hit { .. }),
            "{name}: the bench must measure a verified hit"
        );
        g.bench_function(*name, |b| {
            b.iter(|| black_box(rt.block_on(cache.lookup(&req)).unwrap()))
        });
    }
    // The rules alone, on the same pair: what they add to a would-be hit.
    g.bench_function("rule_check_alone", |b| {
        b.iter(|| black_box(kasama::semantic::RuleVerifier::check(stored, asked)))
    });
    g.finish();
}

#[cfg(feature = "local-embeddings")]
fn minilm(c: &mut Criterion) {
    use kasama::semantic::MiniLmEmbedder;
    let dir = std::env::var("KASAMA_MINILM_DIR").unwrap_or_else(|_| "target/models/minilm".into());
    let Ok(m) = MiniLmEmbedder::load(&dir) else {
        println!("MiniLM throughput not measured: no model in {dir}");
        return;
    };
    let batch: Vec<String> = (0..32).map(sentence).collect();
    let mut g = c.benchmark_group("minilm_embed");
    g.throughput(Throughput::Elements(32));
    g.sample_size(10);
    g.bench_function("batch_of_32", |b| {
        b.iter(|| black_box(m.encode(&batch).unwrap()))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_sentence", |b| {
        b.iter(|| black_box(m.encode(&batch[..1]).unwrap()))
    });
    g.finish();
}

#[cfg(not(feature = "local-embeddings"))]
fn minilm(_c: &mut Criterion) {
    println!("MiniLM throughput not measured: build with --features local-embeddings");
}

criterion_group! {
    name = group;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(group);
