//! Test harness: a real PostgreSQL, a fresh database per test, and the real
//! router on port 0.
//!
//! With `DATABASE_URL` set, its server is used (the URL must allow creating
//! databases). Otherwise one private temporary cluster is started for the test
//! run from the system's PostgreSQL binaries; a watchdog removes it when the
//! test process exits.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use lectern_api::config::HttpConfig;
use lectern_api::embedded::EmbeddedPostgres;
use lectern_api::{telemetry, AppState};
use sqlx::{Connection, PgConnection, PgPool};

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
    pub name: String,
    pub url: String,
    pub pool: PgPool,
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
        Self { name, url, pool }
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

/// The real router, serving on a random loopback port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: TestDb,
    pub client: reqwest::Client,
}

impl TestApp {
    /// An absolute URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// The state a test server uses.
pub fn state_for(db: &TestDb, http: HttpConfig) -> AppState {
    AppState {
        pool: db.pool.clone(),
        metrics: telemetry::metrics_handle(),
        http: Arc::new(http),
    }
}

/// Serve `app` on port 0 and return the address.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("the test server runs");
    });
    addr
}

/// A fresh database and the real router on port 0.
pub async fn spawn_app() -> TestApp {
    let db = TestDb::new().await;
    let app = lectern_api::router(state_for(&db, HttpConfig::for_tests()));
    let addr = serve(app).await;
    TestApp {
        addr,
        db,
        client: reqwest::Client::new(),
    }
}
