//! Starting and stopping Lectern: the database, migrations, projection
//! runners and the HTTP server.

use anyhow::Context;
use lectern_projections::runner::{RunnerConfig, Runners, Wakeup};
use lectern_projections::RunnerHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthConfig, DatabaseConfig, HttpConfig};
use crate::embedded::{self, EmbeddedPostgres};
use crate::AppState;

/// The database Lectern runs on, and the embedded cluster behind it if any.
pub struct Database {
    pub pool: PgPool,
    pub url: String,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connect to `DATABASE_URL`, or start (or join) the embedded cluster.
    pub async fn open(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let (url, embedded) = match &config.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let dir = config.data_dir.clone();
                let pg =
                    tokio::task::spawn_blocking(move || EmbeddedPostgres::start_persistent(&dir))
                        .await??;
                tracing::info!(
                    port = pg.port(),
                    started_here = pg.started_here(),
                    "embedded PostgreSQL ready"
                );
                embedded::ensure_database(&pg.url("postgres"), "lectern").await?;
                (pg.url("lectern"), Some(pg))
            }
        };
        let pool = lectern_commands::pool::connect(&url, config.pool_size)
            .await
            .context("cannot connect to PostgreSQL")?;
        Ok(Self {
            pool,
            url,
            embedded,
        })
    }

    /// Close the pool, and stop the embedded cluster if this process started it.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            match tokio::task::spawn_blocking(move || pg.stop()).await {
                Ok(Ok(())) => tracing::info!("embedded PostgreSQL stopped"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "embedded PostgreSQL did not stop cleanly")
                }
                Err(e) => tracing::error!(error = %e, "embedded PostgreSQL stop task failed"),
            }
        }
    }
}

/// Apply every pending migration.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    lectern_commands::MIGRATOR
        .run(pool)
        .await
        .context("migrations failed")
}

/// Start a runner for every projection on the current runtime.
pub async fn start_runners(
    pool: &PgPool,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<RunnerHandle>> {
    let runners = runners(pool, cancel).await?;
    Ok(lectern_projections::all()
        .into_iter()
        .map(|p| runners.spawn(p))
        .collect())
}

async fn runners(pool: &PgPool, cancel: &CancellationToken) -> anyhow::Result<Runners> {
    let wakeup = Wakeup::listen(pool, cancel.clone()).await?;
    Ok(Runners {
        connect: (*pool.connect_options()).clone(),
        config: RunnerConfig::default(),
        wakeup,
        cancel: cancel.clone(),
    })
}

/// The projection runners on a runtime of their own, with one worker thread.
///
/// A runner decodes and folds a batch of up to 500 events between two awaits.
/// On the API's runtime that holds up every request queued on the same worker
/// thread; on a thread of its own the OS shares the cores out fairly instead,
/// and requests wait for nothing but the CPU.
pub struct ProjectionWorkers {
    runtime: Option<tokio::runtime::Runtime>,
    handles: Vec<RunnerHandle>,
}

impl ProjectionWorkers {
    /// Start a runner for every projection; `cancel` stops them.
    pub async fn start(pool: &PgPool, cancel: &CancellationToken) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lectern-projections")
            .enable_all()
            .build()?;
        let runners = runners(pool, cancel).await?;
        let handles = {
            let _on = runtime.enter();
            lectern_projections::all()
                .into_iter()
                .map(|p| runners.spawn(p))
                .collect()
        };
        Ok(Self {
            runtime: Some(runtime),
            handles,
        })
    }

    /// Wait for the runners to finish (after `cancel`), releasing their
    /// locks, then stop their runtime.
    pub async fn join(mut self) {
        for r in std::mem::take(&mut self.handles) {
            let _ = r.task.await;
        }
    }
}

impl Drop for ProjectionWorkers {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `lectern serve`: run until SIGINT or SIGTERM, then finish in-flight
/// requests, release projection locks and stop the embedded cluster.
pub async fn serve(
    db_config: &DatabaseConfig,
    http: HttpConfig,
    auth: &AuthConfig,
) -> anyhow::Result<()> {
    let secret = crate::secrets::SecretKey::load(&db_config.data_dir)?;
    let keyring = auth.keyring(secret.bytes())?;
    let db = Database::open(db_config).await?;
    migrate(&db.pool).await?;
    let cancel = CancellationToken::new();
    let runners = if http.run_projections {
        Some(ProjectionWorkers::start(&db.pool, &cancel).await?)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(http.addr)
        .await
        .with_context(|| format!("cannot listen on {}", http.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "lectern listening");
    if let Some(dir) = http.mail_dir.clone() {
        tokio::spawn(crate::mail::run(db.pool.clone(), dir, cancel.clone()));
    }
    let ttl = std::time::Duration::from_secs(http.delivery_ttl_secs);
    let state = AppState::new(db.pool.clone(), http, keyring, &cancel);
    tokio::spawn(crate::expiry::run(
        db.pool.clone(),
        state.classroom.clone(),
        ttl,
        cancel.clone(),
    ));
    let app = crate::router(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    tracing::info!("HTTP server drained; stopping projection runners");
    cancel.cancel();
    if let Some(runners) = runners {
        runners.join().await;
    }
    db.close().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
