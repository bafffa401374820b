//! Applies kasama's migrations to `$DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and creates the partitions for the
//! coming months and weeks. Safe to run twice, or from several processes at once.
//!
//! ```text
//! cargo run --example migrate
//! DATABASE_URL=postgres://owner@db/app cargo run --example migrate
//! ```
//!
//! Run it as the role that should own the schema — not as the application's login
//! role, which only needs to be a member of `kasama_app`.

use std::process::ExitCode;

use kasama::repository::postgres::{PgConfig, PgRepository, migrate_url};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let config = PgConfig::from_env();
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
