//! Review of issue 13 item 3 under chaos: two `CachedRepository`s (two instances,
//! each its own `RedisCache` client) over one repository share a throwaway
//! `redis-server` whose keys vanish mid-run: it is kept small (`maxmemory 1300kb`,
//! a few hundred KB above an empty server's own use, `allkeys-random`) while a filler
//! writes, so keys are evicted at random; the user's generation key is also deleted
//! every few milliseconds, and the whole server is flushed (`FLUSHALL`) now and then,
//! all while reads are in flight. The
//! service writes on instance 1 (a goal's title raised `v1`, `v2`, …; goals created
//! and deleted); the user reads on instance 2 all the while. A read that starts after
//! a write returned must see it: a version at least the last returned one; a goal
//! created before the read is in the list; a goal deleted before the read is not
//! found and not listed. The test also checks that the cache was in use (hits
//! on instance 2): below an empty server's own use, every `SET` is refused (OOM) and
//! nothing would be tested.
//!
//! Real time (a real server), no duration asserted; fails (never skips) without
//! `redis-server`.
#![cfg(feature = "redis")]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::SeqCst};
use std::time::Duration;

use kasama::RedisCache;
use kasama::cache::CachedRepository;
use kasama::prelude::*;
use tokio::sync::Mutex;

struct Throwaway(Child);

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    for _ in 0..200 {
        if let Ok(c) = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("redis-server did not start at {url}");
}

fn goal(user: UserId, title: &str) -> NewGoal {
    NewGoal {
        user_id: user,
        title: title.into(),
        description: String::new(),
        category: "c".into(),
        target_date: None,
        milestones: vec![],
    }
}

const ROUNDS: i32 = 300;

/// The version in a title `v<n>` (`main`, the first title, is 0).
fn version(title: &str) -> i32 {
    title.strip_prefix('v').map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_writes_on_one_instance_are_read_on_the_other_through_evictions_and_flushes() {
    let port = free_port();
    let _server = Throwaway(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args([
                "--maxmemory",
                "1300kb",
                "--maxmemory-policy",
                "allkeys-random",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)"),
    );
    let url = format!("redis://127.0.0.1:{port}");

    let repo = Arc::new(InMemoryRepository::new());
    let instance = || {
        let cache = RedisCache::builder(&url)
            .prefix("chaos")
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        Arc::new(CachedRepository::new(
            repo.clone(),
            cache,
            Duration::from_secs(300),
        ))
    };
    let (one, two) = (instance(), instance());
    let u = UserId::new();
    let me = Actor::User(u);
    repo.create_profile(Actor::Service, NewProfile::new(u, "x@example.com", "X"))
        .await
        .unwrap();
    let g = repo.create_goal(me, goal(u, "main")).await.unwrap();

    // What the writer has seen return: the progress, and the goals that exist.
    let progress = Arc::new(AtomicI32::new(0));
    let live: Arc<Mutex<Vec<GoalId>>> = Arc::new(Mutex::new(vec![g.id]));
    let gone: Arc<Mutex<Vec<GoalId>>> = Arc::new(Mutex::new(Vec::new()));
    // Goals whose delete has been called (it may have committed or not).
    let dying: Arc<Mutex<Vec<GoalId>>> = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));

    // Chaos: the user's generation key disappears now and then (as an eviction does),
    // and the whole of Redis is flushed now and then, while reads are in flight.
    let chaos = {
        let done = done.clone();
        let mut c = conn(&url).await;
        let gen_key = format!("chaos:kasama:gen:u:{u}");
        tokio::spawn(async move {
            let mut i = 0u64;
            while !done.load(SeqCst) {
                let cmd = if i % 20 == 19 {
                    redis::cmd("FLUSHALL")
                } else {
                    let mut d = redis::cmd("DEL");
                    d.arg(&gen_key);
                    d
                };
                let _: redis::RedisResult<()> = cmd.query_async(&mut c).await;
                // Filler, so that Redis evicts (at random, generation keys included).
                for j in 0..20 {
                    let _: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(format!("filler:{i}:{j}"))
                        .arg(vec![0u8; 1024])
                        .query_async(&mut c)
                        .await;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            i
        })
    };

    // The user reads on instance 2 all the while, and checks each read against what
    // had returned before it began.
    let reader = {
        let (two, progress, live, gone, dying, done) = (
            two.clone(),
            progress.clone(),
            live.clone(),
            gone.clone(),
            dying.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut reads = 0u64;
            while !done.load(SeqCst) {
                let floor = progress.load(SeqCst);
                let live_before = live.lock().await.clone();
                let gone_before = gone.lock().await.clone();
                let p = version(&two.get_goal(me, g.id).await.unwrap().title);
                if p < floor {
                    failures.push(format!("version {p} read after {floor} returned"));
                }
                let listed: Vec<GoalId> = two
                    .list_goals(me, u, Page::first(500))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|g| g.id)
                    .collect();
                for id in &live_before {
                    if !listed.contains(id) && !dying.lock().await.contains(id) {
                        failures.push(format!("goal {id:?} created before the read is not listed"));
                    }
                }
                for id in &gone_before {
                    if listed.contains(id) {
                        failures.push(format!("goal {id:?} deleted before the read is listed"));
                    }
                    if two.get_goal(me, *id).await.is_ok() {
                        failures.push(format!("goal {id:?} deleted before the read is found"));
                    }
                }
                reads += 1;
            }
            (reads, failures)
        })
    };

    // The service writes on instance 1.
    for i in 1..=ROUNDS {
        let upd = GoalUpdate {
            title: Some(format!("v{i}")),
            ..GoalUpdate::default()
        };
        one.update_goal(Actor::Service, g.id, upd).await.unwrap();
        progress.store(i, SeqCst);
        // A read on instance 2 right after the write returned.
        assert_eq!(
            version(&two.get_goal(me, g.id).await.unwrap().title),
            i,
            "instance 2 read an older title right after the service's update returned"
        );
        let n = one
            .create_goal(Actor::Service, goal(u, &format!("g{i}")))
            .await
            .unwrap();
        live.lock().await.push(n.id);
        assert!(
            two.list_goals(me, u, Page::first(500))
                .await
                .unwrap()
                .iter()
                .any(|x| x.id == n.id),
            "instance 2 did not list a goal the service created"
        );
        if i % 3 == 0 {
            let victim = {
                let l = live.lock().await;
                l[l.len() - 2]
            };
            if victim != g.id {
                // Instance 2 has it cached.
                two.get_goal(me, victim).await.unwrap();
                // Marked before the delete: from now on it may be gone.
                dying.lock().await.push(victim);
                one.delete_goal(Actor::Service, victim).await.unwrap();
                live.lock().await.retain(|x| *x != victim);
                gone.lock().await.push(victim);
                assert!(
                    two.get_goal(me, victim).await.is_err(),
                    "instance 2 found a goal the service deleted"
                );
                assert!(
                    !two.list_goals(me, u, Page::first(500))
                        .await
                        .unwrap()
                        .iter()
                        .any(|x| x.id == victim),
                    "instance 2 listed a goal the service deleted"
                );
            }
        }
    }
    done.store(true, SeqCst);
    let (reads, failures) = reader.await.unwrap();
    let knocks = chaos.await.unwrap();
    let mut admin = conn(&url).await;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut admin)
        .await
        .unwrap();
    let evicted: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(reads > 0 && knocks > 0);
    // The cache was in use (not failing throughout), or the test proves nothing.
    let hits = two.cache().stats().hits;
    assert!(
        hits > 0,
        "no cache hit on instance 2: {:?}, {} errors, last {:?}",
        two.cache().stats(),
        two.cache().errors(),
        two.cache().last_error()
    );
    assert!(
        failures.is_empty(),
        "{} stale reads of {reads} ({evicted} keys evicted); first: {:?}",
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>()
    );
    eprintln!(
        "{reads} checked reads, {hits} hits, {knocks} deletions or flushes, {evicted} keys evicted"
    );
}
