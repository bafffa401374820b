//! `--pg`: a throwaway database, migrated by a non-superuser owner role, that the
//! server reaches as a login role that is only a member of `kasama_app`.

use crate::BoxError;
use crate::args::Args;

/// The throwaway database, and the admin connection that drops it.
pub(crate) struct PgSetup {
    pub(crate) admin: tokio_postgres::Client,
    pub(crate) db: String,
}

/// The schema owner (runs the migrations).
pub(crate) const OWNER: &str = "kasama_load_owner";
/// The server's login: a member of `kasama_app`, nothing more.
pub(crate) const LOGIN: &str = "kasama_load_login";

/// `base` (a URL) as a key/value connection string for `user` on `db`.
pub(crate) fn with_user_db(base: &str, user: &str, db: &str) -> Result<String, BoxError> {
    let c: tokio_postgres::Config = base.parse()?;
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let mut out = format!("host={host} port={port} user={user} dbname={db}");
    // Keep the admin URL's TLS choice (`?sslmode=disable` measures without TLS).
    if let Some(mode) = base
        .split(['?', '&', ' '])
        .find_map(|kv| kv.strip_prefix("sslmode="))
    {
        out.push_str(&format!(" sslmode={mode}"));
    }
    Ok(out)
}

/// `--pg`: a new database migrated as [`OWNER`], and the server's connection string
/// (as [`LOGIN`]).
pub(crate) async fn pg_setup(args: &Args) -> Result<(PgSetup, String), BoxError> {
    let (admin, conn) = tokio_postgres::connect(&args.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let role = |name: &str, opts: &str| {
        format!(
            "DO $$ BEGIN CREATE ROLE {name} {opts}; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        )
    };
    admin
        .batch_execute(&role(OWNER, "LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS"))
        .await?;
    let db = format!("kasama_load_{}", std::process::id());
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {db} OWNER {OWNER}"))
        .await?;
    kasama::repository::postgres::migrate_url(&with_user_db(&args.database_url, OWNER, &db)?)
        .await?;
    // kasama_app exists once migrated.
    admin
        .batch_execute(&role(
            LOGIN,
            "LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE kasama_app",
        ))
        .await?;
    let app = with_user_db(&args.database_url, LOGIN, &db)?;
    Ok((PgSetup { admin, db }, app))
}
