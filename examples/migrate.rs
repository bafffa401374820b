//! Applies kasama's migrations to `$KASAMA_MIGRATION_URL` (or, when that is unset,
//! `$DATABASE_URL`; default `postgres://postgres@127.0.0.1:5432/postgres`) and creates
//! the partitions for the coming months and weeks. Safe to run twice, or from several
//! processes at once.
//!
//! ```text
//! KASAMA_MIGRATION_URL=postgres://kasama_owner@db/app cargo run --example migrate
//! ```
//!
//! Run it as the role that should own the schema (README, "Database roles") — not as
//! the application's login role, which only needs to be a member of `kasama_app`.

use std::process::ExitCode;

use kasama::repository::postgres::{PgConfig, PgRepository, migrate_url};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut config = PgConfig::from_env();
    if let Ok(url) = std::env::var("KASAMA_MIGRATION_URL")
        && !url.is_empty()
    {
        config.url = url;
    }
    // The owner is, by design, a role for which RLS does not apply: this tool only
    // runs DDL and partition maintenance, never user requests.
    config.allow_rls_bypass = true;
    match run(&config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migrate: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(config: &PgConfig) -> kasama::Result<()> {
    let report = migrate_url(&config.url).await?;
    println!(
        "migrations: applied {:?}, already applied {:?}",
        report.applied, report.already_applied
    );
    let repo = PgRepository::connect(config)?;
    let created = repo.ensure_partitions(3, 8).await?;
    println!(
        "partitions: created {created} (assessments monthly, 3 months ahead; ai_interactions weekly, 8 weeks ahead)"
    );
    Ok(())
}
