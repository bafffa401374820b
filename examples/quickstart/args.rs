//! The command line.

/// What to simulate.
pub(crate) struct Args {
    /// How many users (across the three tiers).
    pub(crate) users: usize,
    /// How many AI requests over the day.
    pub(crate) requests: usize,
    /// Every choice of the simulation follows from it.
    pub(crate) seed: u64,
    /// Where to write the report as JSON, if anywhere.
    pub(crate) json: Option<String>,
}

/// Reads the flags; `Err` holds the message for the user (usage for `--help`).
pub(crate) fn parse() -> Result<Args, String> {
    let mut a = Args {
        users: 1000,
        requests: 3000,
        seed: 42,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let mut val = || it.next().ok_or(format!("{f} needs a value"));
        match f.as_str() {
            "--users" => a.users = val()?.parse().map_err(|e| format!("--users: {e}"))?,
            "--requests" => a.requests = val()?.parse().map_err(|e| format!("--requests: {e}"))?,
            "--seed" => a.seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--json" => a.json = Some(val()?),
            "-h" | "--help" => {
                return Err(
                    "usage: quickstart [--users N] [--requests N] [--seed N] [--json PATH]".into(),
                );
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.users == 0 || a.requests == 0 {
        return Err("--users and --requests must be positive".into());
    }
    Ok(a)
}
