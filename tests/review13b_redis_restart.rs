//! Review of issue 13 item 3: `CachedRepository` over `RedisCache` when the Redis it
//! shares comes back from a restart with its data restored (an RDB snapshot, which
//! `redis-server`'s default configuration takes on its own — `save 3600 1 300 100
//! 60 10000` — or an AOF, or a replica promoted after the primary acknowledged a
//! write it had not yet replicated). The restored data holds a generation from before
//! a write together with the values cached under it; the cache must not serve them
//! after that write returned.
//!
//! A throwaway `redis-server` on a free port, its data in a fresh directory; real
//! time (a real server), no duration asserted. Fails (never skips) without
//! `redis-server`.
#![cfg(feature = "redis")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kasama::RedisCache;
use kasama::cache::CachedRepository;
use kasama::prelude::*;

struct Throwaway {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Throwaway {
    /// Starts (or restarts, loading `dir/dump.rdb`) a server. Automatic snapshots are
    /// off so the test decides when one is taken (`SAVE`), as the default schedule
    /// would at some moment.
    fn start(port: u16, dir: PathBuf) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)");
        Self { port, dir, child }
    }

    async fn wait_ready(&self) {
        let url = format!("redis://127.0.0.1:{}", self.port);
        for _ in 0..200 {
            if let Ok(c) = redis::Client::open(url.as_str())
                && let Ok(mut c) = c.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    async fn cmd(&self, name: &str) {
        let url = format!("redis://127.0.0.1:{}", self.port);
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd(name).query_async::<()>(&mut c).await.unwrap();
    }

    /// A crash: SIGKILL, no final save.
    fn crash(mut self) -> (u16, PathBuf) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.port, self.dir.clone())
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn goal(user: UserId) -> NewGoal {
    NewGoal {
        user_id: user,
        title: "g".into(),
        description: String::new(),
        category: "c".into(),
        target_date: None,
        milestones: vec![],
    }
}

#[ignore = "known gap (issue 13): a Redis restored from a snapshot or a lagging replica revives old generations; documented on RedisCache (run it without persistence or replicas)"]
#[tokio::test]
async fn a_redis_restored_from_a_snapshot_does_not_serve_values_older_than_a_returned_write() {
    let dir = std::env::temp_dir().join(format!("kasama-review13b-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = Throwaway::start(free_port(), dir.clone());
    server.wait_ready().await;
    let url = format!("redis://127.0.0.1:{}", server.port);

    // Two instances over one repository, each with its own RedisCache client.
    let repo = Arc::new(InMemoryRepository::new());
    let instance = || {
        let cache = RedisCache::builder(&url)
            .prefix("review13b")
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        CachedRepository::new(repo.clone(), cache, Duration::from_secs(300))
    };
    let (one, two) = (instance(), instance());
    let u = UserId::new();
    let me = Actor::User(u);
    repo.create_profile(Actor::Service, NewProfile::new(u, "r@example.com", "R"))
        .await
        .unwrap();
    let g = repo.create_goal(me, goal(u)).await.unwrap();

    // Instance 2 caches the goal at 0 %; Redis snapshots (as its schedule would).
    assert_eq!(two.get_goal(me, g.id).await.unwrap().progress, 0);
    server.cmd("SAVE").await;
    // A write on instance 1 returns; instance 2 sees it.
    assert_eq!(
        one.set_goal_progress(me, g.id, 50).await.unwrap().progress,
        50
    );
    assert_eq!(two.get_goal(me, g.id).await.unwrap().progress, 50);

    // Redis crashes and comes back from its snapshot.
    let (port, dir) = server.crash();
    let server = Throwaway::start(port, dir.clone());
    server.wait_ready().await;

    // Every read after the write returned must see 50 % (the first ones may fail
    // over to the repository while the clients reconnect; that is fine).
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(two.get_goal(me, g.id).await.unwrap().progress);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        seen.iter().all(|&p| p == 50),
        "after Redis restored its snapshot, instance 2 served the goal from before a \
         returned write: progress read {seen:?}"
    );
}
