//! Load tool for the realtime WebSocket: N authenticated sockets against a server
//! process, measured from the outside.
//!
//! ```text
//! cargo run --release --features server --example realtime_load -- --sockets 15000
//! cargo run --release --features server --example realtime_load -- --sockets 15000 --pg
//! ```
//!
//! By default it starts the server itself (this binary with `--serve`, composing
//! `kasama::server::router` like `examples/server.rs`, in memory or, with `--pg`, on
//! PostgreSQL: a throwaway database migrated by a non-superuser owner role, the server
//! connected as a login role that is only a member of `kasama_app`, changes arriving
//! through LISTEN/NOTIFY). Or it is told about a running server:
//! `--url http://127.0.0.1:8080 --pid <pid> --secret <KASAMA_JWT_SECRET>` (no restart
//! then, so no reconnect storm).
//!
//! It raises its own open-file limit to the hard limit, opens `--sockets` sockets from
//! `--sources` loopback addresses (127.0.0.10, .11, …: the client side binds before it
//! connects, so the ephemeral ports of one address do not run out), and reports:
//! - server memory per idle socket: VmRSS of `/proc/<pid>/status` before and after;
//! - delivery latency of a REST write (`POST /api/goals`) to its user's socket among N
//!   idle, one at a time (`--samples`), and for bursts of writes to 1 % of the users at
//!   once (`--bursts`);
//! - heartbeat CPU: the server's utime + stime (`/proc/<pid>/stat`) over `--idle` seconds
//!   with every socket idle but for pings (every `--heartbeat` seconds);
//! - the reconnect storm: the server is killed and started again; every client
//!   reconnects with exponential backoff and full jitter; the time until all are back.
//!
//! `--read-buffer <bytes>` sets the server's per-socket read buffer (default 256;
//! tungstenite's own default, 131072, shows what the buffers cost before they were
//! sized for this traffic). Every wait is bounded; everything is on loopback.
//!
//! The parts: `args` (the flags), `server` (the `--serve` process and starting it),
//! `client` (one reconnecting client per user), `pg` (the throwaway database), `run`
//! (the measurements in order) and `measure` (readings and summaries).

mod args;
mod client;
mod measure;
mod pg;
mod run;
mod server;

/// Any error, to print and exit with.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args = args::parse()?;
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.serve {
        rt.block_on(server::serve(args))
    } else {
        rt.block_on(run::load(args))
    }
}

/// Raises the soft open-file limit to the hard one (a process here may hold 20,000).
fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            eprintln!("could not raise RLIMIT_NOFILE: {e}");
        }
    }
}

/// The soft open-file limit.
fn nofile() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}
