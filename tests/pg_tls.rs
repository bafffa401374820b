//! TLS to PostgreSQL: `sslmode=require` against the local server (its self-signed
//! certificate), and `verify-ca`/`verify-full` against a throwaway cluster serving a
//! certificate from a CA this test makes — for the pool, the migrations and the
//! realtime listener. Whether a session is encrypted is read from `pg_stat_ssl`.
#![cfg(feature = "tls")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::cluster::Cluster;
use kasama::prelude::*;
use kasama::realtime::{FeedState, PgRealtime, PgRealtimeConfig, Realtime};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Whether the session behind the pool's next connection is encrypted, by the server.
async fn pool_session_ssl(repo: &PgRepository) -> bool {
    let c = repo.pool().get().await.expect("a pooled connection");
    c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// An error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

fn required() -> bool {
    std::env::var("KASAMA_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_the_local_server_is_encrypted_in_both_url_forms() {
    let Some(db) = common::pg().await else { return };
    let kv = db.app_config().url;
    // key=value form.
    let repo = PgRepository::connect(&PgConfig::new(format!("{kv} sslmode=require"))).unwrap();
    assert!(
        pool_session_ssl(&repo).await,
        "sslmode=require is encrypted"
    );
    // The same server, plaintext: the check above can fail.
    let plain = PgRepository::connect(&PgConfig::new(format!("{kv} sslmode=disable"))).unwrap();
    assert!(!pool_session_ssl(&plain).await, "sslmode=disable is not");
    // URL form.
    let url = format!(
        "postgres://{}@127.0.0.1:{}/{}?sslmode=require&application_name=kasama_tls_test",
        common::APP_LOGIN,
        db.base.get_ports().first().copied().unwrap_or(5432),
        db.name
    );
    let repo = PgRepository::connect(&PgConfig::new(url)).unwrap();
    assert!(pool_session_ssl(&repo).await);
    let c = repo.pool().get().await.unwrap();
    let app: String = c
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(app, "kasama_tls_test", "the other parameters still apply");
    drop(c);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_realtime_listener_uses_tls_on_the_local_server() {
    let Some(db) = common::pg().await else { return };
    let rt = PgRealtime::start(PgRealtimeConfig {
        url: format!("{} sslmode=require", db.app_config().url),
        ..Default::default()
    })
    .unwrap();
    assert!(rt.wait_connected(Duration::from_secs(10)).await);
    let pid = rt
        .status()
        .backend_pid
        .expect("connected, so a backend pid");
    let admin = db.admin().await;
    let ssl: bool = admin
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = $1", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the listener's session is encrypted");
    drop(rt);
    db.finish().await;
}

/// A CA, a server certificate it signs for `pg.kasama.test` (and 127.0.0.1), and an
/// unrelated CA.
struct Pki {
    ca_pem: String,
    other_ca_pem: String,
    server_pem: String,
    server_key_pem: String,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let ca = ca("kasama test CA");
    let other = ca_other();
    let mut p = CertificateParams::new(vec!["pg.kasama.test".to_string(), "127.0.0.1".to_string()])
        .unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "pg.kasama.test");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        other_ca_pem: other.pem(),
        server_pem: cert.pem(),
        server_key_pem: key.serialize_pem(),
    }
}

fn ca_other() -> CertifiedIssuer<'static, KeyPair> {
    ca("kasama impostor CA")
}

/// A started cluster serving `pki`'s server certificate, with a non-superuser login
/// `tls_login`; `None` (skipped) when no cluster can be made here.
async fn tls_cluster(pki: &Pki) -> Option<Cluster> {
    let Some(mut cluster) = Cluster::init() else {
        if required() {
            panic!(
                "could not create a throwaway PostgreSQL cluster (needs root, runuser and initdb)"
            );
        }
        eprintln!("SKIPPED (no throwaway PostgreSQL cluster)");
        return None;
    };
    let cert = cluster.write_file("server.crt", pki.server_pem.as_bytes());
    let key = cluster.write_file("server.key", pki.server_key_pem.as_bytes());
    cluster.set("ssl=on");
    cluster.set(format!("ssl_cert_file={}", cert.display()));
    cluster.set(format!("ssl_key_file={}", key.display()));
    assert!(cluster.start(), "cluster starts: {}", cluster.log());
    let admin = common::connect(&cluster.url()).await.unwrap();
    admin
        .batch_execute("CREATE ROLE tls_login LOGIN")
        .await
        .unwrap();
    Some(cluster)
}

/// A file outside the cluster's private folder, readable by this process.
fn pem_file(dir: &std::path::Path, name: &str, pem: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p
}

fn kv(cluster: &Cluster, host: &str, user: &str, tls: &str) -> String {
    format!(
        "host={host} hostaddr=127.0.0.1 port={} user={user} dbname=postgres {tls}",
        cluster.port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let pki = pki();
    let Some(cluster) = tls_cluster(&pki).await else {
        return;
    };
    let ca = pem_file(cluster.dir(), "ca.pem", &pki.ca_pem);
    let other = pem_file(cluster.dir(), "other-ca.pem", &pki.other_ca_pem);
    let (ca, other) = (ca.display(), other.display());
    let good = "pg.kasama.test";
    let open = |url: String| PgRepository::connect(&PgConfig::new(url)).unwrap();

    // The right CA and the right name: encrypted, in both URL forms.
    let r = open(kv(
        &cluster,
        good,
        "tls_login",
        &format!("sslmode=verify-full sslrootcert={ca}"),
    ));
    assert!(pool_session_ssl(&r).await);
    let r = open(format!(
        "postgres://tls_login@{good}:{}/postgres?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}",
        cluster.port
    ));
    assert!(pool_session_ssl(&r).await);
    // An IP address the certificate names.
    let r = open(kv(
        &cluster,
        "127.0.0.1",
        "tls_login",
        &format!("sslmode=verify-full sslrootcert={ca}"),
    ));
    assert!(pool_session_ssl(&r).await);

    // A name the certificate does not carry: verify-full refuses, verify-ca accepts.
    let wrong_name = open(kv(
        &cluster,
        "localhost",
        "tls_login",
        &format!("sslmode=verify-full sslrootcert={ca}"),
    ));
    let e = wrong_name.pool().get().await.map(|_| ()).unwrap_err();
    assert!(
        chain(&e).contains("not valid for name"),
        "refused for its name: {}",
        chain(&e)
    );
    let r = open(kv(
        &cluster,
        "localhost",
        "tls_login",
        &format!("sslmode=verify-ca sslrootcert={ca}"),
    ));
    assert!(pool_session_ssl(&r).await);

    // Another CA: refused under verify-ca and verify-full, and under require when a
    // root certificate is given (libpq's rule); require alone does not check.
    for mode in ["verify-ca", "verify-full", "require"] {
        let r = open(kv(
            &cluster,
            good,
            "tls_login",
            &format!("sslmode={mode} sslrootcert={other}"),
        ));
        let e = r.pool().get().await.map(|_| ()).unwrap_err();
        assert!(chain(&e).contains("UnknownIssuer"), "{mode}: {}", chain(&e));
    }
    let r = open(kv(&cluster, good, "tls_login", "sslmode=require"));
    assert!(pool_session_ssl(&r).await);

    // Through the crate's own calls: migrations over verify-full, then a repository
    // call refused with a non-retryable error that says why.
    let report = kasama::repository::postgres::migrate_url(&kv(
        &cluster,
        good,
        "postgres",
        &format!("sslmode=verify-full sslrootcert={ca}"),
    ))
    .await
    .unwrap();
    assert!(!report.applied.is_empty());
    let admin = common::connect(&cluster.url()).await.unwrap();
    admin
        .batch_execute("GRANT kasama_app TO tls_login")
        .await
        .unwrap();
    let r = open(kv(
        &cluster,
        good,
        "tls_login",
        &format!("sslmode=verify-full sslrootcert={ca}"),
    ));
    let u = UserId::new();
    r.create_profile(Actor::Service, NewProfile::new(u, "tls@example.com", "T"))
        .await
        .unwrap();
    let refused = open(kv(
        &cluster,
        good,
        "tls_login",
        &format!("sslmode=verify-full sslrootcert={other}"),
    ));
    let e = refused
        .get_profile(Actor::User(u), u)
        .await
        .expect_err("an unknown CA is refused");
    assert!(
        !e.is_retryable(),
        "a refused certificate is not retried: {e:?}"
    );
    assert!(chain(&e).contains("UnknownIssuer"), "{}", chain(&e));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_realtime_listener_verifies_the_server_too() {
    let pki = pki();
    let Some(cluster) = tls_cluster(&pki).await else {
        return;
    };
    let ca = pem_file(cluster.dir(), "ca.pem", &pki.ca_pem);
    let other = pem_file(cluster.dir(), "other-ca.pem", &pki.other_ca_pem);
    let cfg = |tls: String| PgRealtimeConfig {
        url: kv(&cluster, "pg.kasama.test", "tls_login", &tls),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(200),
        ..Default::default()
    };
    let rt = PgRealtime::start(cfg(format!(
        "sslmode=verify-full sslrootcert={}",
        ca.display()
    )))
    .unwrap();
    assert!(rt.wait_connected(Duration::from_secs(10)).await);
    let pid = rt.status().backend_pid.unwrap();
    let admin = common::connect(&cluster.url()).await.unwrap();
    let ssl: bool = admin
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = $1", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(ssl);

    // An impostor's CA: the listener never connects, it keeps retrying.
    let refused = PgRealtime::start(cfg(format!(
        "sslmode=verify-full sslrootcert={}",
        other.display()
    )))
    .unwrap();
    assert!(!refused.wait_connected(Duration::from_secs(2)).await);
    let s = refused.status();
    assert_ne!(s.state, FeedState::Connected);
    assert!(s.attempts >= 2, "retried: {s:?}");

    // A setting that can never work is refused at once, naming the field.
    let e = PgRealtime::start(cfg("sslmode=verify-full".into())).unwrap_err();
    assert_eq!(e.invalid_field(), Some("sslrootcert"));
    let e = PgRealtime::start(cfg(
        "sslmode=verify-ca sslrootcert=/nonexistent/ca.pem".into()
    ))
    .unwrap_err();
    assert_eq!(e.invalid_field(), Some("sslrootcert"));
}

#[tokio::test]
async fn a_bad_tls_setting_is_refused_at_connect_naming_the_field() {
    for (url, field) in [
        ("host=h sslmode=verify-full", "sslrootcert"),
        ("postgres://h/db?sslmode=verify-ca", "sslrootcert"),
        (
            "postgres://u:pw@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "sslrootcert",
        ),
        ("host=h sslmode=always", "sslmode"),
        ("host=h sslkey=/k.pem", "sslkey"),
    ] {
        let e = PgRepository::connect(&PgConfig::new(url)).unwrap_err();
        assert_eq!(e.invalid_field(), Some(field), "{url}: {e}");
        assert!(!e.to_string().contains("pw@"), "{e}");
        let e = kasama::repository::postgres::migrate_url(url)
            .await
            .unwrap_err();
        assert_eq!(e.invalid_field(), Some(field), "{url}: {e}");
    }
}
