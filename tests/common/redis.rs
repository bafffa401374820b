//! Redis for the tests: the local server's check, fresh key prefixes, and throwaway
//! `redis-server`s on free ports (to stop and start).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A key prefix no other test run uses.
pub fn fresh_prefix() -> String {
    format!("kasama-test-{}", uuid::Uuid::new_v4().simple())
}

/// Fails (never skips) when the local Redis is not there: `.ci/run` starts it.
pub async fn require_redis() {
    let ok = tokio::net::TcpStream::connect("127.0.0.1:6379")
        .await
        .is_ok();
    assert!(
        ok,
        "these tests need Redis on 127.0.0.1:6379 (`redis-server --daemonize yes`; `.ci/run` starts it)"
    );
}

/// A throwaway Redis on a free port; killed on drop.
pub struct Throwaway {
    pub port: u16,
    child: Child,
}

impl Throwaway {
    pub fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)");
        Self { port, child }
    }

    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
