//! Secrets never reach `Debug` output: connection-string passwords (both forms), API
//! keys, the JWT secret. Each type is formatted with `{:?}` and searched for the secret.

use std::time::Duration;

use kasama::PgConfig;
use kasama::realtime::PgRealtimeConfig;

const PASSWORD: &str = "pa55-Wörd-never-shown";

fn urls() -> Vec<String> {
    vec![
        format!("postgres://kasama_login:{PASSWORD}@db.example.com:5432/app?sslmode=require"),
        format!("postgresql://db.example.com/app?user=kasama_login&password={PASSWORD}"),
        format!("host=db.example.com user=kasama_login password={PASSWORD} dbname=app"),
        format!("host=db.example.com user=kasama_login password='{PASSWORD} x' dbname=app"),
        // Unreadable: shown not at all rather than in part.
        format!("host=db.example.com password='{PASSWORD}"),
    ]
}

#[test]
fn pg_config_hides_the_password() {
    for url in urls() {
        let shown = format!("{:?}", PgConfig::new(url.clone()));
        assert!(!shown.contains(PASSWORD), "{shown}");
        assert!(!shown.contains("pa55"), "{shown}");
        assert!(shown.contains("max_size: 10"), "the rest is shown: {shown}");
    }
    let shown = format!("{:?}", PgConfig::new(urls()[0].clone()));
    assert!(
        shown.contains("postgres://kasama_login:***@db.example.com:5432/app?sslmode=require"),
        "{shown}"
    );
}

#[tokio::test]
async fn the_repository_and_its_pool_hide_the_password() {
    for url in urls().into_iter().take(4) {
        let repo = kasama::PgRepository::connect(&PgConfig::new(url)).unwrap();
        let shown = format!("{repo:?} {:?}", repo.pool());
        assert!(!shown.contains("pa55"), "{shown}");
    }
}

#[test]
fn the_realtime_config_hides_the_password() {
    for url in urls() {
        let c = PgRealtimeConfig {
            url,
            heartbeat: Duration::from_secs(7),
            ..Default::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("pa55"), "{shown}");
        assert!(shown.contains("heartbeat: 7s"), "{shown}");
    }
}

#[test]
fn a_bad_connection_string_is_refused_without_echoing_it() {
    for url in [
        format!("postgres://u:{PASSWORD}@h/db?port=x"),
        format!("host=h password={PASSWORD} nonsense"),
        format!("host=h password={PASSWORD} sslmode=sometimes"),
    ] {
        let e = kasama::PgRepository::connect(&PgConfig::new(url)).unwrap_err();
        assert!(!format!("{e} {e:?}").contains("pa55"), "{e:?}");
    }
}

#[cfg(feature = "openai")]
#[test]
fn openai_agent_and_embedder_hide_the_api_key() {
    use kasama::agent::OpenAiCompatibleAgent;
    use kasama::semantic::OpenAiCompatibleEmbedder;
    const KEY: &str = "sk-live-0123456789abcdef";
    let builder = OpenAiCompatibleAgent::builder("https://api.example.com/v1").api_key(KEY);
    let shown = format!("{builder:?}");
    assert!(!shown.contains(KEY) && shown.contains("***"), "{shown}");
    let agent = builder.build().unwrap();
    let shown = format!("{agent:?}");
    assert!(!shown.contains(KEY) && shown.contains("***"), "{shown}");
    assert!(shown.contains("https://api.example.com/v1/chat/completions"));
    let keyless = OpenAiCompatibleAgent::builder("https://api.example.com/v1")
        .build()
        .unwrap();
    assert!(format!("{keyless:?}").contains("api_key: None"));
    let e = OpenAiCompatibleEmbedder::new("https://api.example.com/v1", "m", 8)
        .unwrap()
        .with_api_key(KEY);
    let shown = format!("{e:?}");
    assert!(!shown.contains(KEY) && shown.contains("***"), "{shown}");
}

#[cfg(feature = "server")]
#[test]
fn the_server_state_hides_the_jwt_secret() {
    use std::sync::Arc;

    use kasama::agent::SimulatedAgent;
    use kasama::health::HealthMonitor;
    use kasama::metrics::InMemoryMetrics;
    use kasama::pipeline::AiPipeline;
    use kasama::prelude::*;
    use kasama::realtime::{Hub, MemoryRealtime};
    use kasama::server::{AppState, JwtConfig};

    let secret = "jwt-secret-that-is-long-enough-0123456789";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let repo: Arc<dyn Repository> = Arc::new(InMemoryRepository::new());
    let metrics = Arc::new(InMemoryMetrics::new());
    let state = AppState {
        repo: repo.clone(),
        pipeline: Arc::new(
            AiPipeline::builder(repo)
                .backend(Arc::new(SimulatedAgent::instant("sim")))
                .build()
                .unwrap(),
        ),
        realtime: Arc::new(MemoryRealtime::new(Hub::new(4))),
        metrics: metrics.clone(),
        sink: metrics.clone(),
        health: Arc::new(HealthMonitor::new(metrics)),
        jwt: JwtConfig::new(secret).unwrap(),
        render_metrics: None,
        ws: kasama::server::WsSockets::with_defaults(),
    };
    let shown = format!("{state:?}");
    assert!(!shown.contains("jwt-secret"), "{shown}");
    assert!(shown.contains("***"), "{shown}");
}
