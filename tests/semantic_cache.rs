//! The semantic cache's promises, on the deterministic hashing embedder: scopes keep
//! users apart, exact and paraphrased questions hit, look-alikes do not, TTL and
//! capacity hold (tokio's paused clock), and bad input is an error, never a panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kasama::agent::AiRequest;
use kasama::prelude::*;
use kasama::semantic::{CacheTier, Embedder, HashingEmbedder, Lookup, SemanticCache};

mod common;

use common::semantic::answer;

/// Counts calls; optionally corrupts the vectors.
struct Probe {
    inner: HashingEmbedder,
    calls: AtomicUsize,
    corrupt: Option<fn(Vec<f32>) -> Vec<f32>>,
}

#[async_trait]
impl Embedder for Probe {
    fn name(&self) -> &str {
        "probe"
    }
    fn dimension(&self) -> usize {
        384
    }
    fn default_threshold(&self) -> f32 {
        0.6
    }
    async fn embed(&self, texts: &[String]) -> kasama::Result<Vec<Vec<f32>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let v = self.inner.embed(texts).await?;
        Ok(match self.corrupt {
            Some(f) => v.into_iter().map(f).collect(),
            None => v,
        })
    }
}

fn probe(corrupt: Option<fn(Vec<f32>) -> Vec<f32>>) -> Arc<Probe> {
    Arc::new(Probe {
        inner: HashingEmbedder::new(),
        calls: AtomicUsize::new(0),
        corrupt,
    })
}

fn ask(user: UserId, agent: AgentType, q: &str) -> AiRequest {
    AiRequest::new(user, agent, q)
}

fn hit_text(l: &Lookup) -> Option<(CacheTier, String)> {
    match l {
        Lookup::Hit { answer, tier, .. } => {
            Some((*tier, answer.output["advice"].as_str().unwrap().to_string()))
        }
        Lookup::Miss { .. } => None,
    }
}

#[tokio::test]
async fn exact_and_paraphrased_questions_hit_within_the_users_scope() {
    let p = probe(None);
    // The probe embedder is unmeasured: semantic hits are the host's choice.
    let cache = SemanticCache::builder(p.clone())
        .semantic_hits(true)
        .build()
        .unwrap();
    let (ana, ben) = (UserId::new(), UserId::new());
    let q = ask(
        ana,
        AgentType::LearningCoach,
        "How can I listen better to my partner?",
    );
    let Lookup::Miss { embedding, .. } = cache.lookup(&q).await.unwrap() else {
        panic!("empty cache hit")
    };
    cache
        .store(&q, &answer("reflect back"), embedding)
        .await
        .unwrap();
    assert_eq!(
        p.calls.load(Ordering::SeqCst),
        1,
        "the miss's embedding was reused"
    );

    // Exact (normalised) text: no embedding needed.
    let again = ask(
        ana,
        AgentType::LearningCoach,
        "  how can I listen better to my partner ",
    );
    assert_eq!(
        hit_text(&cache.lookup(&again).await.unwrap()),
        Some((CacheTier::Exact, "reflect back".into()))
    );
    assert_eq!(p.calls.load(Ordering::SeqCst), 1);
    // A paraphrase with shared words.
    let para = ask(
        ana,
        AgentType::LearningCoach,
        "How can I better listen to my partner?",
    );
    assert_eq!(
        hit_text(&cache.lookup(&para).await.unwrap()),
        Some((CacheTier::Semantic, "reflect back".into()))
    );
    // The same question from another user of a personal agent: a miss.
    let other = ask(
        ben,
        AgentType::LearningCoach,
        "How can I listen better to my partner?",
    );
    assert_eq!(hit_text(&cache.lookup(&other).await.unwrap()), None);
    // Another agent, model or temperature: another scope.
    let agent = ask(
        ana,
        AgentType::CommunicationAdvisor,
        "How can I listen better to my partner?",
    );
    assert_eq!(hit_text(&cache.lookup(&agent).await.unwrap()), None);
    let mut warmer = q.clone();
    warmer.params.temperature = 0.9;
    assert_eq!(hit_text(&cache.lookup(&warmer).await.unwrap()), None);
    let mut model = q.clone();
    model.params.model = "gpt-4o".into();
    assert_eq!(hit_text(&cache.lookup(&model).await.unwrap()), None);

    let s = cache.stats();
    assert_eq!(
        (s.exact_hits, s.semantic_hits, s.misses, s.entries),
        (1, 1, 5, 1)
    );
}

#[tokio::test]
async fn shared_agents_answer_every_user() {
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .shared(AgentType::InsightGenerator)
        .build()
        .unwrap();
    let q = ask(
        UserId::new(),
        AgentType::InsightGenerator,
        "What helps couples communicate?",
    );
    cache.store(&q, &answer("talk daily"), None).await.unwrap();
    let other = ask(
        UserId::new(),
        AgentType::InsightGenerator,
        "What helps couples communicate?",
    );
    assert!(hit_text(&cache.lookup(&other).await.unwrap()).is_some());
    assert!(!cache.is_personal(AgentType::InsightGenerator));
    assert!(cache.is_personal(AgentType::LearningCoach));
}

#[tokio::test]
async fn look_alikes_with_another_meaning_are_refused() {
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .semantic_hits(true)
        .threshold(0.3)
        .build()
        .unwrap();
    let u = UserId::new();
    let stored = [
        "How do I stop arguing with my partner?",
        "How can we plan 2 date nights a month?",
        "Should I tell Sarah about the gift?",
        "Why does my partner listen to me?",
    ];
    for s in stored {
        cache
            .store(
                &ask(u, AgentType::CommunicationAdvisor, s),
                &answer(s),
                None,
            )
            .await
            .unwrap();
    }
    for (q, why) in [
        (
            "How do I stop arguing with my partner's parents?",
            "people differ",
        ),
        ("How can we plan 3 date nights a month?", "numbers differ"),
        ("Should I tell Emma about the gift?", "names differ"),
        ("Why doesn't my partner listen to me?", "negation differs"),
    ] {
        match cache
            .lookup(&ask(u, AgentType::CommunicationAdvisor, q))
            .await
            .unwrap()
        {
            Lookup::Miss {
                rejected, nearest, ..
            } => {
                assert_eq!(rejected, Some(why), "{q}");
                assert!(
                    nearest.unwrap() >= 0.3,
                    "{q}: the look-alike was a candidate"
                );
            }
            hit => panic!("{q}: false hit {hit:?}"),
        }
    }
    let s = cache.stats();
    assert_eq!((s.near_misses, s.semantic_hits, s.misses), (4, 0, 4));
    // At this low threshold several stored questions are candidates for each lookup;
    // every one of them was refused.
    assert!(s.salience_rejections >= 4, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn entries_expire_and_capacity_evicts_the_oldest() {
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .capacity(3)
        .build()
        .unwrap();
    let u = UserId::new();
    let qs = [
        "first question about trust",
        "second question about money",
        "third question about chores",
        "fourth question about holidays",
    ];
    for (i, q) in qs.iter().enumerate() {
        cache
            .store(&ask(u, AgentType::LearningCoach, q), &answer(q), None)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(60 * i as u64)).await;
    }
    let s = cache.stats();
    assert_eq!((s.entries, s.evictions), (3, 1));
    assert!(
        hit_text(
            &cache
                .lookup(&ask(u, AgentType::LearningCoach, qs[0]))
                .await
                .unwrap()
        )
        .is_none()
    );
    assert!(
        hit_text(
            &cache
                .lookup(&ask(u, AgentType::LearningCoach, qs[3]))
                .await
                .unwrap()
        )
        .is_some()
    );
    // Default TTL 24 h: just before, a hit; after, a miss.
    tokio::time::advance(Duration::from_secs(24 * 3600 - 400)).await;
    assert!(
        hit_text(
            &cache
                .lookup(&ask(u, AgentType::LearningCoach, qs[3]))
                .await
                .unwrap()
        )
        .is_some()
    );
    tokio::time::advance(Duration::from_secs(400)).await;
    assert!(
        hit_text(
            &cache
                .lookup(&ask(u, AgentType::LearningCoach, qs[3]))
                .await
                .unwrap()
        )
        .is_none()
    );
    cache
        .store(
            &ask(u, AgentType::LearningCoach, "a new one"),
            &answer("x"),
            None,
        )
        .await
        .unwrap();
    let s = cache.stats();
    assert_eq!((s.entries, s.expirations), (1, 3));
}

#[tokio::test]
async fn large_scopes_switch_to_the_graph_and_still_find_their_entries() {
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .shared(AgentType::InsightGenerator)
        .semantic_hits(true)
        .build()
        .unwrap();
    let u = UserId::new();
    let topics = [
        "trust", "money", "chores", "holidays", "in-laws", "intimacy", "jealousy", "hobbies",
        "careers", "moving",
    ];
    let mut n = 0;
    for i in 0..120 {
        for t in topics {
            let q = format!("Question {i} about {t} and how couples handle {t} number {i}");
            cache
                .store(&ask(u, AgentType::InsightGenerator, &q), &answer(&q), None)
                .await
                .unwrap();
            n += 1;
        }
    }
    assert_eq!(cache.stats().entries, n);
    let mut found = 0;
    for i in (0..120).step_by(7) {
        let q = format!("Question {i} about money and how couples handle money number {i}");
        if let Some((_, text)) = hit_text(
            &cache
                .lookup(&ask(UserId::new(), AgentType::InsightGenerator, &q))
                .await
                .unwrap(),
        ) {
            assert_eq!(text, q);
            found += 1;
        }
    }
    assert_eq!(found, 18);
    // Reworded (not exact): the nearest entry in a 1,200-entry scope is found through the graph.
    let q = "How do couples handle money? Question 35 about money, number 35";
    let hit = hit_text(
        &cache
            .lookup(&ask(u, AgentType::InsightGenerator, q))
            .await
            .unwrap(),
    );
    assert_eq!(
        hit.map(|h| h.1),
        Some("Question 35 about money and how couples handle money number 35".to_string())
    );
}

#[tokio::test]
async fn bad_input_is_an_error_not_a_panic() {
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .build()
        .unwrap();
    let u = UserId::new();
    let e = cache
        .lookup(&ask(u, AgentType::LearningCoach, "   "))
        .await
        .unwrap_err();
    assert_eq!(e.invalid_field(), Some("input"));
    let e = cache
        .lookup(&ask(u, AgentType::LearningCoach, &"x".repeat(1_000_000)))
        .await
        .unwrap_err();
    assert_eq!(e.invalid_field(), Some("input"));
    let q = ask(u, AgentType::LearningCoach, "fine question");
    let e = cache
        .store(&q, &answer("a"), Some(vec![0.1; 10]))
        .await
        .unwrap_err();
    assert_eq!(e.invalid_field(), Some("embedding"));
    let mut nan = vec![0.1f32; 384];
    nan[7] = f32::NAN;
    let e = cache.store(&q, &answer("a"), Some(nan)).await.unwrap_err();
    assert_eq!(e.invalid_field(), Some("embedding"));
    let e = HashingEmbedder::new()
        .embed(&["".into()])
        .await
        .unwrap_err();
    assert_eq!(e.invalid_field(), Some("texts[0]"));

    // An embedder that returns NaN or the wrong dimension: a backend error.
    let bad = SemanticCache::builder(probe(Some(|mut v| {
        v[0] = f32::NAN;
        v
    })))
    .build()
    .unwrap();
    let e = bad.lookup(&q).await.unwrap_err();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    let short = SemanticCache::builder(probe(Some(|v| v[..100].to_vec())))
        .build()
        .unwrap();
    assert!(matches!(
        short.lookup(&q).await.unwrap_err(),
        Error::Backend { .. }
    ));

    for b in [
        SemanticCache::builder(Arc::new(HashingEmbedder::new())).threshold(0.0),
        SemanticCache::builder(Arc::new(HashingEmbedder::new())).threshold(1.5),
        SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .agent_threshold(AgentType::LearningCoach, f32::NAN),
        SemanticCache::builder(Arc::new(HashingEmbedder::new())).ttl(Duration::ZERO),
        SemanticCache::builder(Arc::new(HashingEmbedder::new())).capacity(0),
    ] {
        assert!(b.build().unwrap_err().invalid_field().is_some());
    }
}

/// Whether the cache holds `q`'s own entry (stored with `answer(q)`).
async fn is_hit(cache: &SemanticCache, u: UserId, q: &str) -> bool {
    let l = cache
        .lookup(&ask(u, AgentType::LearningCoach, q))
        .await
        .unwrap();
    hit_text(&l) == Some((CacheTier::Exact, q.to_string()))
}

#[tokio::test(start_paused = true)]
async fn the_eviction_queue_stays_right_after_a_scope_is_compacted() {
    let ttl = Duration::from_secs(3600);
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .capacity(10)
        .ttl(ttl)
        .build()
        .unwrap();
    let u = UserId::new();
    let q = |i: usize| format!("question number {i} about topic {}", i * 7919);
    // 80 entries through a capacity of 10 in one scope: 70 evictions leave 70 dead
    // slots, so the scope is compacted (its slots renumbered) on the way.
    for i in 0..80 {
        cache
            .store(
                &ask(u, AgentType::LearningCoach, &q(i)),
                &answer(&q(i)),
                None,
            )
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let s = cache.stats();
    assert_eq!((s.entries, s.evictions, s.expirations), (10, 70, 0));
    // Exactly the ten newest are left, whatever compaction did to their slots.
    for i in 0..70 {
        assert!(!is_hit(&cache, u, &q(i)).await, "{i} was evicted");
    }
    for i in 70..80 {
        assert!(is_hit(&cache, u, &q(i)).await, "{i} is among the newest");
    }
    // Once their TTL passes, all ten expire (none is kept forever).
    tokio::time::advance(ttl).await;
    cache
        .store(
            &ask(u, AgentType::LearningCoach, "fresh"),
            &answer("fresh"),
            None,
        )
        .await
        .unwrap();
    let s = cache.stats();
    assert_eq!((s.entries, s.evictions, s.expirations), (1, 70, 10));
}

#[tokio::test(start_paused = true)]
async fn forget_user_leaves_no_stale_queue_items_behind() {
    let ttl = Duration::from_secs(3600);
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .capacity(10)
        .ttl(ttl)
        .build()
        .unwrap();
    let (a, b) = (UserId::new(), UserId::new());
    let q = |who: &str, i: usize| format!("{who} asks question {i} about topic {}", i * 104_729);
    for i in 0..5 {
        for (u, who) in [(a, "a"), (b, "b")] {
            cache
                .store(
                    &ask(u, AgentType::LearningCoach, &q(who, i)),
                    &answer(&q(who, i)),
                    None,
                )
                .await
                .unwrap();
        }
    }
    assert_eq!(cache.forget_user(a), 5);
    assert_eq!(cache.stats().entries, 5);
    // Half a TTL later `a` comes back with new questions in the same scope.
    tokio::time::advance(ttl / 2).await;
    for i in 10..15 {
        cache
            .store(
                &ask(a, AgentType::LearningCoach, &q("a", i)),
                &answer(&q("a", i)),
                None,
            )
            .await
            .unwrap();
    }
    let s = cache.stats();
    assert_eq!((s.entries, s.evictions, s.expirations), (10, 0, 0));
    // The first TTL ends: `b`'s five old entries expire, `a`'s new ones stay.
    tokio::time::advance(ttl / 2).await;
    cache
        .store(
            &ask(b, AgentType::LearningCoach, "b again"),
            &answer("z"),
            None,
        )
        .await
        .unwrap();
    let s = cache.stats();
    assert_eq!((s.entries, s.evictions, s.expirations), (6, 0, 5));
    for i in 10..15 {
        assert!(
            is_hit(&cache, a, &q("a", i)).await,
            "a's new entry {i} stays"
        );
    }
    for i in 0..5 {
        assert!(
            !is_hit(&cache, a, &q("a", i)).await,
            "a's forgotten entry {i}"
        );
    }
}

/// Questions made only of punctuation are not exact repeats of one another ("?" must
/// not be served the answer stored for "..."), while trailing punctuation on a real
/// question still does not matter. (Found by the issue-14 review.)
#[tokio::test]
async fn punctuation_only_questions_are_not_exact_repeats_of_each_other() {
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .build()
        .unwrap();
    let u = UserId::new();
    let a = AgentType::CommunicationAdvisor;
    cache
        .store(&ask(u, a, "..."), &answer("stored for dots"), None)
        .await
        .unwrap();
    let l = cache.lookup(&ask(u, a, "?!")).await.unwrap();
    assert!(!matches!(l, Lookup::Hit { .. }), "{l:?}");
    cache
        .store(
            &ask(u, a, "How do I apologise?"),
            &answer("say sorry"),
            None,
        )
        .await
        .unwrap();
    let l = cache
        .lookup(&ask(u, a, "how do I apologise."))
        .await
        .unwrap();
    assert!(matches!(l, Lookup::Hit { .. }), "{l:?}");
}
