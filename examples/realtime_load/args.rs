//! The command line.

use kasama::server::WsConfig;

use crate::BoxError;

#[derive(Clone, Debug)]
/// What to measure, and against which server.
pub(crate) struct Args {
    pub(crate) serve: bool,
    pub(crate) addr: String,
    pub(crate) sockets: usize,
    pub(crate) sources: u8,
    pub(crate) samples: usize,
    pub(crate) bursts: usize,
    pub(crate) idle: u64,
    pub(crate) heartbeat: u64,
    pub(crate) pg: bool,
    pub(crate) database_url: String,
    pub(crate) app_url: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) pid: Option<u32>,
    pub(crate) secret: String,
    pub(crate) connect_concurrency: usize,
    pub(crate) read_buffer: usize,
}

/// Reads the flags.
pub(crate) fn parse() -> Result<Args, BoxError> {
    let mut a = Args {
        serve: false,
        addr: "127.0.0.1:0".into(),
        sockets: 15_000,
        sources: 4,
        samples: 200,
        bursts: 5,
        idle: 30,
        heartbeat: 15,
        pg: false,
        database_url: std::env::var("DATABASE_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        app_url: None,
        url: None,
        pid: None,
        secret: std::env::var("KASAMA_JWT_SECRET")
            .unwrap_or_else(|_| "kasama-load-test-secret-0123456789abcdef".into()),
        connect_concurrency: 256,
        read_buffer: WsConfig::default().read_buffer,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--serve" => a.serve = true,
            "--pg" => a.pg = true,
            "--addr" => a.addr = val()?,
            "--sockets" => a.sockets = val()?.parse()?,
            "--sources" => a.sources = val()?.parse()?,
            "--samples" => a.samples = val()?.parse()?,
            "--bursts" => a.bursts = val()?.parse()?,
            "--idle" => a.idle = val()?.parse()?,
            "--heartbeat" => a.heartbeat = val()?.parse()?,
            "--database-url" => a.database_url = val()?,
            "--app-url" => a.app_url = Some(val()?),
            "--url" => a.url = Some(val()?),
            "--pid" => a.pid = Some(val()?.parse()?),
            "--secret" => a.secret = val()?,
            "--connect-concurrency" => a.connect_concurrency = val()?.parse()?,
            "--read-buffer" => a.read_buffer = val()?.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.sources == 0 || a.sources > 200 {
        return Err("--sources must be 1 to 200".into());
    }
    if a.heartbeat == 0 || a.connect_concurrency == 0 {
        return Err("--heartbeat and --connect-concurrency must be more than 0".into());
    }
    Ok(a)
}
