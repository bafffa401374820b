//! Readings: the server's memory and CPU from /proc, bounded waits, and latency
//! summaries.

use std::time::Duration;

use tokio::time::Instant;

use crate::BoxError;

/// The resident memory of `pid`, in KiB.
pub(crate) fn vm_rss_kib(pid: u32) -> Result<u64, BoxError> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

/// utime + stime of `pid`, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64, BoxError> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &s[s.rfind(')').ok_or("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// Waits until `done` (checked every 20 ms), `limit` at most; `false` (and a word on
/// stderr) when it gave up.
pub(crate) async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !done() {
        if Instant::now() >= end {
            eprintln!("gave up waiting for {what} after {limit:?}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// The `p` quantile of `sorted` (nearest rank).
pub(crate) fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// `n=…, p50 …, p99 …, max …` of `v`, in milliseconds.
pub(crate) fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "n={} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        v.len(),
        ms(pct(&v, 0.50)),
        ms(pct(&v, 0.99)),
        ms(v.last().copied().unwrap_or_default())
    )
}
