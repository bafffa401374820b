//! A PostgreSQL cluster of our own (initdb, as the `postgres` user), so a test may
//! stop and start it, or give it settings (TLS certificates), without disturbing the
//! shared server.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Cluster {
    dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    settings: Vec<String>,
}

impl Cluster {
    fn pg(&self, args: &[&str]) -> bool {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn options(&self) -> String {
        let mut o = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        for s in &self.settings {
            o.push_str(" -c ");
            o.push_str(s);
        }
        o
    }

    /// A new cluster (initdb, trust authentication), not started; `None` when this
    /// machine cannot make one (not root, no `runuser` or `initdb`).
    pub fn init() -> Option<Cluster> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").exists())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = std::env::temp_dir().join(format!("kasama-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).ok()?;
        chown_postgres(&dir)?;
        let data = dir.join("data");
        let ok = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        Some(Cluster {
            dir,
            port,
            bin,
            settings: Vec::new(),
        })
    }

    /// A new, started cluster.
    pub fn create() -> Option<Cluster> {
        let c = Cluster::init()?;
        c.start().then_some(c)
    }

    /// A server setting (`name=value`) for the next start.
    pub fn set(&mut self, setting: impl Into<String>) {
        self.settings.push(setting.into());
    }

    /// Writes `name` into the cluster's folder, owned by `postgres`, mode 0600 (as the
    /// server demands of a private key); returns its path.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        chown_postgres(&path).expect("chown to postgres");
        path
    }

    /// The cluster's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn start(&self) -> bool {
        let data = self.dir.join("data");
        self.pg(&[
            "-D",
            data.to_str().unwrap(),
            "-o",
            &self.options(),
            "-l",
            self.dir.join("log").to_str().unwrap(),
            "-w",
            "start",
        ])
    }

    pub fn stop(&self) -> bool {
        self.pg(&[
            "-D",
            self.dir.join("data").to_str().unwrap(),
            "-m",
            "fast",
            "-w",
            "stop",
        ])
    }

    /// Stops the server as a crash does (`-m immediate`: no shutdown checkpoint, so
    /// the next start recovers from WAL and empties unlogged tables).
    pub fn crash(&self) -> bool {
        self.pg(&[
            "-D",
            self.dir.join("data").to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ])
    }

    /// The server log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }
}

fn chown_postgres(path: &Path) -> Option<()> {
    Command::new("chown")
        .args(["postgres:postgres"])
        .arg(path)
        .status()
        .ok()?
        .success()
        .then_some(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
