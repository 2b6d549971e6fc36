//! Test harness: a real PostgreSQL, a fresh database per test, and the real
//! router on port 0.
//!
//! With `DATABASE_URL` set, its server is used (the URL must allow creating
//! databases). Otherwise one private temporary cluster is started for the test
//! run from the system's PostgreSQL binaries; a watchdog removes it when the
//! test process exits.
#![forbid(unsafe_code)]

pub mod classroom;
pub mod realtime;
pub mod stripe;

use std::net::SocketAddr;
use std::sync::OnceLock;

use lectern_api::auth::tokens::Keyring;
use lectern_api::config::{HttpConfig, WorkerConfig};
use lectern_api::embedded::EmbeddedPostgres;
use lectern_api::workers::Workers;
use lectern_api::AppState;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

struct Cluster {
    /// URL of a maintenance database, for CREATE/DROP DATABASE.
    admin_url: String,
    /// Builds a URL for a database name.
    base: String,
    _pg: Option<EmbeddedPostgres>,
}

const TEMPLATE: &str = "lectern_test_template";

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        // Runs once, on whichever test's thread gets here first; a private
        // runtime keeps it independent of that test's runtime.
        std::thread::spawn(|| {
            let (admin_url, pg) = match std::env::var("DATABASE_URL") {
                Ok(url) => (url, None),
                Err(_) => {
                    let pg = EmbeddedPostgres::start_temporary(false)
                        .expect("start a temporary PostgreSQL for tests");
                    (pg.url("postgres"), Some(pg))
                }
            };
            let base = admin_url
                .rsplit_once('/')
                .map(|(b, _)| b.to_owned())
                .expect("a URL with a database");
            let rt = tokio::runtime::Runtime::new().expect("a runtime");
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to the test server");
                sqlx::query(&format!("DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .expect("drop an old template");
                sqlx::query(&format!("CREATE DATABASE {TEMPLATE}"))
                    .execute(&mut conn)
                    .await
                    .expect("create the template");
                let pool = PgPool::connect(&format!("{base}/{TEMPLATE}"))
                    .await
                    .expect("connect to the template");
                lectern_commands::MIGRATOR
                    .run(&pool)
                    .await
                    .expect("migrate the template");
                pool.close().await;
            });
            Cluster {
                admin_url,
                base,
                _pg: pg,
            }
        })
        .join()
        .expect("the test cluster starts")
    })
}

/// A fresh, migrated database, dropped when this value is dropped.
pub struct TestDb {
    /// The name shown to the user.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// The database.
    pub pool: PgPool,
    /// Stops background work (revocation watchers, projection runners,
    /// process managers) that uses this database, before it is dropped.
    pub cancel: CancellationToken,
}

impl TestDb {
    /// A new database cloned from the migrated template.
    pub async fn new() -> Self {
        let cluster = cluster();
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&cluster.admin_url)
            .await
            .expect("connect");
        sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let url = format!("{}/{}", cluster.base, name);
        let pool = lectern_commands::pool::connect(&url, 24)
            .await
            .expect("connect to the test database");
        Self {
            name,
            url,
            pool,
            cancel: CancellationToken::new(),
        }
    }

    /// Another pool on the same database: a second process, as far as
    /// PostgreSQL can tell.
    pub async fn second_pool(&self) -> PgPool {
        lectern_commands::pool::connect(&self.url, 24)
            .await
            .expect("connect")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        self.cancel.cancel();
        let admin = cluster().admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside async; a short-lived thread with its own runtime
        // removes the database (FORCE ends the pool's connections).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("a runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// The real router, serving on a random loopback port, with the server's
/// background work running.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The metrics listener's address.
    pub metrics_addr: SocketAddr,
    /// Its database.
    pub db: TestDb,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// What it is doing.
    pub state: AppState,
    /// The background work, as `lectern serve` runs it.
    pub workers: Workers,
}

impl TestApp {
    /// An absolute URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// A keyring with one random key, as a test server uses.
pub fn test_keyring() -> Keyring {
    let key: [u8; 32] = rand::random();
    Keyring::new(
        vec![("test-1".to_owned(), key.to_vec())],
        "lectern",
        "lectern-api",
    )
    .expect("a valid keyring")
}

/// The state a test server uses.
pub fn state_for(db: &TestDb, http: HttpConfig) -> AppState {
    AppState::new(db.pool.clone(), http, test_keyring())
}

/// Serve `app` on port 0 as `lectern serve` does (header-read timeout 2 s)
/// and return the address.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("an address");
    let limits = lectern_api::server::ConnectionLimits::from(&HttpConfig::for_tests());
    tokio::spawn(async move {
        lectern_api::server::serve_http(listener, app, &limits, std::future::pending())
            .await
            .expect("the test server runs");
    });
    addr
}

/// A fresh database, its projection runners, and the real router on port 0.
pub async fn spawn_app() -> TestApp {
    spawn_app_tuned(|_| {}).await
}

/// [`spawn_app`] with the test settings changed by `tune`.
pub async fn spawn_app_tuned(tune: impl FnOnce(&mut HttpConfig)) -> TestApp {
    let db = TestDb::new().await;
    let mut http = HttpConfig::for_tests();
    tune(&mut http);
    let state = state_for(&db, http);
    spawn_app_on(db, state).await
}

/// Serve `state` (built over `db`) with the server's background work.
pub async fn spawn_app_on(db: TestDb, state: AppState) -> TestApp {
    spawn_app_with(db, state, &WorkerConfig::default()).await
}

/// Serve `state` (built over `db`) with the background work `workers` asks
/// for.
pub async fn spawn_app_with(db: TestDb, state: AppState, workers: &WorkerConfig) -> TestApp {
    let workers = Workers::start(&state, workers, &db.cancel)
        .await
        .expect("start the background work");
    let addr = serve(lectern_api::router(state.clone())).await;
    let metrics_addr = serve(lectern_api::telemetry::metrics_router()).await;
    TestApp {
        addr,
        metrics_addr,
        db,
        client: reqwest::Client::new(),
        state,
        workers,
    }
}

/// The JSON body of a response.
pub async fn json_of(r: reqwest::Response) -> serde_json::Value {
    r.json().await.expect("a JSON body")
}

/// An access token of a new tutor on `state`, registered and logged in
/// through the service (no HTTP rate limits), for tests that serve a state
/// of their own.
pub async fn tutor_token(state: &AppState) -> String {
    use lectern_domain::identity::{DisplayName, Email, Password, Role};
    let email = Email::parse(&format!(
        "tutor-{}@example.com",
        uuid::Uuid::new_v4().simple()
    ))
    .expect("an email");
    let password = Password::parse(PASSWORD).expect("a password");
    let meta = lectern_domain::EventMetadata::system("test");
    state
        .identity
        .register(
            &email,
            &password,
            &DisplayName::parse("Tutor").expect("a name"),
            Role::Tutor,
            &meta,
        )
        .await
        .expect("registered");
    let issued = state
        .identity
        .login(email.as_str(), &password, "test-device", &meta)
        .await
        .expect("logged in");
    state.auth.issue(&issued).0
}

/// A password every test account uses.
pub const PASSWORD: &str = "correct horse battery staple";

/// What a login answered.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Tokens {
    /// The access token.
    pub access_token: String,
    /// The refresh token.
    pub refresh_token: String,
    /// The session (refresh-token family).
    pub session_id: uuid::Uuid,
    /// The position in the log.
    pub position: Option<String>,
}

impl TestApp {
    /// Send `method path` with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        request.send().await.expect("the request is sent")
    }

    /// The one number `sql` (a count) answers on the test database.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.pool)
            .await
            .expect("count")
    }

    /// `GET path` with a token.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    /// `POST path` with an optional token and a JSON body.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// `POST /api/v1/auth/refresh` with `refresh_token` from device `fingerprint`.
    pub async fn refresh(&self, refresh_token: &str, fingerprint: &str) -> reqwest::Response {
        self.post(
            "/api/v1/auth/refresh",
            None,
            serde_json::json!({"refresh_token": refresh_token, "device_fingerprint": fingerprint}),
        )
        .await
    }

    /// Register `email` with [`PASSWORD`] through the API as a student or
    /// tutor; other roles through the service, as the CLI does.
    pub async fn register(&self, email: &str, role: &str) -> uuid::Uuid {
        if role == "student" || role == "tutor" {
            let r = self
                .post(
                    "/api/v1/auth/register",
                    None,
                    serde_json::json!({"email": email, "password": PASSWORD, "display_name": "Test User", "role": role}),
                )
                .await;
            assert_eq!(r.status(), reqwest::StatusCode::CREATED, "register {email}");
            let body: serde_json::Value = r.json().await.expect("json");
            body["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("an id")
        } else {
            use lectern_domain::identity::{DisplayName, Email, Password, Role};
            let committed = self
                .state
                .identity
                .register(
                    &Email::parse(email).expect("email"),
                    &Password::parse(PASSWORD).expect("password"),
                    &DisplayName::parse("Test User").expect("name"),
                    Role::parse(role).expect("role"),
                    &lectern_domain::EventMetadata::system("test"),
                )
                .await
                .expect("registered");
            committed.aggregate_id.parse().expect("an id")
        }
    }

    /// Log in as `email` with [`PASSWORD`] from device `fingerprint`.
    pub async fn login_from(&self, email: &str, fingerprint: &str) -> Tokens {
        let r = self
            .post(
                "/api/v1/auth/login",
                None,
                serde_json::json!({"email": email, "password": PASSWORD, "device_fingerprint": fingerprint}),
            )
            .await;
        assert_eq!(r.status(), reqwest::StatusCode::OK, "login {email}");
        r.json().await.expect("tokens")
    }

    /// Log in as `email` from the default test device.
    pub async fn login(&self, email: &str) -> Tokens {
        self.login_from(email, "test-device").await
    }

    /// A new account with `role`, logged in.
    pub async fn user(&self, role: &str) -> (uuid::Uuid, Tokens) {
        let email = format!("{role}-{}@example.com", uuid::Uuid::new_v4().simple());
        let id = self.register(&email, role).await;
        (id, self.login(&email).await)
    }
}

/// The `lectern` binary that `cargo test` built beside this test binary.
pub fn lectern_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> → target/<profile>/lectern
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("a target directory")
        .join("lectern");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test --workspace` builds it (or run `cargo build --bin lectern`)",
        bin.display()
    );
    bin
}

/// A `lectern serve` process on a test database: a real process, so tests
/// can kill it.
pub struct ServerProcess {
    /// The process.
    pub child: std::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Start `lectern serve` on `db` with its secrets in `data_dir` (so a
    /// restarted server accepts the first one's tokens), and wait until it
    /// answers `/health/live`.
    pub async fn start(db: &TestDb, data_dir: &std::path::Path) -> Self {
        let port = |_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
        };
        let (addr, metrics) = (port(0), port(1));
        let child = std::process::Command::new(lectern_bin())
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("LECTERN_DATA_DIR", data_dir)
            .env("LECTERN_ADDR", addr.to_string())
            .env("LECTERN_METRICS_ADDR", metrics.to_string())
            .env("LECTERN_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start lectern serve");
        let mut server = Self { child, addr };
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let live = client
                .get(format!("http://{addr}/health/live"))
                .send()
                .await;
            if live.is_ok_and(|r| r.status().is_success()) {
                return server;
            }
            assert!(
                server.child.try_wait().expect("wait").is_none(),
                "lectern serve exited early"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "lectern serve did not answer in time"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// An absolute URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `check` holds, polling every 20 ms; fail the test naming
/// `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Time travel on every stream of `pool`: the state at each sampled version,
/// folded from the newest kept snapshot at or below it, must equal a fresh
/// replay of events 1..N by the aggregate's own `apply`. Samples every
/// version of a short stream, and of a long one its ends and both sides of
/// every multiple of each snapshot interval in use (50, 100, 500, 1000).
/// Answers the aggregate types checked and those where a snapshot was used.
pub async fn assert_history_replays(
    pool: &PgPool,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    use lectern_commands::history::{state_at, AGGREGATE_TYPES};
    let streams: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, max(sequence) FROM events GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("the streams");
    let mut checked = std::collections::BTreeSet::new();
    let mut from_snapshots = std::collections::BTreeSet::new();
    for (ty, id, last) in streams {
        if !AGGREGATE_TYPES.contains(&ty.as_str()) {
            continue;
        }
        let last = u64::try_from(last).expect("a version");
        let mut versions: std::collections::BTreeSet<u64> = if last <= 40 {
            (1..=last).collect()
        } else {
            [1, 2, last - 1, last].into()
        };
        for every in [50u64, 100, 500, 1000] {
            for k in 1..=last / every {
                for v in [k * every - 1, k * every, k * every + 1] {
                    if (1..=last).contains(&v) {
                        versions.insert(v);
                    }
                }
            }
        }
        for v in versions {
            let kept = state_at(pool, &ty, &id, v, true)
                .await
                .expect("time travel")
                .expect("a fold for the type");
            let fresh = state_at(pool, &ty, &id, v, false)
                .await
                .expect("a replay")
                .expect("a fold for the type");
            assert_eq!(kept.version, v, "{ty}/{id} at {v}");
            assert_eq!(fresh.snapshot_version, 0);
            assert_eq!(kept.state, fresh.state, "{ty}/{id} at version {v}");
            if kept.snapshot_version > 0 {
                from_snapshots.insert(ty.clone());
            }
        }
        checked.insert(ty);
    }
    (checked, from_snapshots)
}
