//! Starting and stopping Lectern: the database, migrations, the listeners
//! and the background work.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthConfig, DatabaseConfig, HttpConfig, WorkerConfig};
use crate::embedded::{self, EmbeddedPostgres};
use crate::workers::Workers;
use crate::AppState;

/// The database Lectern runs on, and the embedded cluster behind it if any.
pub struct Database {
    /// The primary.
    pub pool: PgPool,
    /// The replica queries are served from, if one is configured.
    pub read_pool: Option<PgPool>,
    /// Its URL (with credentials; never logged).
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
                if embedded::autogroups_on() {
                    tracing::info!(
                        "the kernel's autogroups are on (kernel.sched_autogroup_enabled): when the \
                         CPUs are busy, each PostgreSQL backend gets as much CPU time as this whole \
                         process; on a host that shares them, turn them off (docs/DEPLOYMENT.md)"
                    );
                }
                if let Err(e) = embedded::ensure_database(&pg.url("postgres"), "lectern").await {
                    stop_embedded(pg).await;
                    return Err(e);
                }
                (pg.url("lectern"), Some(pg))
            }
        };
        let pools = async {
            let pool = lectern_commands::pool::connect(&url, config.pool_size)
                .await
                .context("cannot connect to PostgreSQL")?;
            let read_pool = match &config.read_database_url {
                Some(read) => Some(
                    lectern_commands::pool::connect(read, config.pool_size)
                        .await
                        .context("cannot connect to the read replica")?,
                ),
                None => None,
            };
            Ok::<_, anyhow::Error>((pool, read_pool))
        };
        match pools.await {
            Ok((pool, read_pool)) => Ok(Self {
                pool,
                read_pool,
                url,
                embedded,
            }),
            Err(e) => {
                if let Some(pg) = embedded {
                    stop_embedded(pg).await;
                }
                Err(e)
            }
        }
    }

    /// Close the pool, and stop the embedded cluster if this process started it.
    pub async fn close(self) {
        if let Some(read) = &self.read_pool {
            read.close().await;
        }
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            stop_embedded(pg).await;
        }
    }
}

/// Stop the embedded cluster if this process started it, logging a failure.
async fn stop_embedded(pg: EmbeddedPostgres) {
    match tokio::task::spawn_blocking(move || pg.stop()).await {
        Ok(Ok(())) => tracing::info!("embedded PostgreSQL stopped"),
        Ok(Err(e)) => tracing::error!(error = %e, "embedded PostgreSQL did not stop cleanly"),
        Err(e) => tracing::error!(error = %e, "embedded PostgreSQL stop task failed"),
    }
}

/// Apply every pending migration.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    lectern_commands::MIGRATOR
        .run(pool)
        .await
        .context("migrations failed")
}

/// `lectern serve`: run until SIGINT or SIGTERM, then finish in-flight
/// requests, stop the background work (releasing projection locks) and stop
/// the embedded cluster. If start-up fails after the embedded cluster was
/// started, the cluster is stopped before the error is returned.
pub async fn serve(
    db_config: &DatabaseConfig,
    http: HttpConfig,
    workers: &WorkerConfig,
    auth: &AuthConfig,
) -> anyhow::Result<()> {
    let secret = crate::secrets::SecretKey::load(&db_config.data_dir)?;
    let keyring = auth.keyring(secret.bytes())?;
    let mut workers = workers.clone();
    workers.ledger = workers.ledger.in_data_dir(&db_config.data_dir);
    let db = Database::open(db_config).await?;
    // On a task of its own, so that even a panic comes back here as an
    // error and the embedded cluster is still stopped.
    let result = tokio::spawn(run(
        db.pool.clone(),
        db.read_pool.clone(),
        http,
        workers,
        keyring,
    ))
    .await
    .unwrap_or_else(|e| Err(anyhow::anyhow!("the server failed: {e}")));
    db.close().await;
    result
}

/// Serve on `pool` until a shutdown signal.
async fn run(
    pool: PgPool,
    read_pool: Option<PgPool>,
    http: HttpConfig,
    config: WorkerConfig,
    keyring: crate::auth::tokens::Keyring,
) -> anyhow::Result<()> {
    migrate(&pool).await?;
    let listener = tokio::net::TcpListener::bind(http.addr)
        .await
        .with_context(|| format!("cannot listen on {}", http.addr))?;
    let metrics_listener = tokio::net::TcpListener::bind(http.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", http.metrics_addr))?;
    let cancel = CancellationToken::new();
    let mut state = AppState::new(pool, http, keyring);
    if let Some(read) = read_pool {
        state = state.with_read_pool(read);
    }
    let workers = Workers::start(&state, &config, &cancel).await?;
    tracing::info!(addr = %listener.local_addr()?, metrics = %metrics_listener.local_addr()?, "lectern listening");
    let metrics = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            axum::serve(metrics_listener, crate::telemetry::metrics_router())
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await
        }
    });
    let limits = ConnectionLimits::from(&*state.http);
    let app = crate::router(state);
    let served = serve_http(listener, app, &limits, shutdown_signal()).await;
    tracing::info!("HTTP server drained; stopping background work");
    cancel.cancel();
    workers.join().await;
    let _ = metrics.await;
    Ok(served?)
}

/// Limits on client connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
}

impl From<&HttpConfig> for ConnectionLimits {
    fn from(http: &HttpConfig) -> Self {
        Self {
            max_connections: http.max_connections.max(1),
            header_read_timeout: Duration::from_secs(http.header_read_timeout_secs.max(1)),
        }
    }
}

/// Serve `app` on `listener` over HTTP/1.1 until `shutdown` completes, then
/// let in-flight requests finish.
///
/// Unlike `axum::serve`, it bounds what a client can hold: a client must
/// send a request's headers within the header-read timeout (hyper's), or is
/// disconnected, so a client trickling bytes cannot keep a connection open;
/// and at most `max_connections` are open at once (further ones wait in the
/// listen backlog). Upgrades (WebSocket) are served.
pub async fn serve_http<F>(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: &ConnectionLimits,
    shutdown: F,
) -> std::io::Result<()>
where
    F: std::future::Future<Output = ()>,
{
    use axum::extract::ConnectInfo;
    use tower::ServiceExt;

    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let stop = CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => {
                permit.expect("the connection semaphore is never closed")
            }
        };
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: pause rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small frames (a drawing op, a presence diff) go out at once, not
        // after Nagle's wait for the client's delayed ACK.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set");
        }
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: axum::http::Request<_>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(remote));
            app.clone().oneshot(request)
        });
        let connection = http
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .with_upgrades();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(permit);
        });
    }
    stop.cancel();
    // Each connection holds a permit until it closes: once every permit is
    // back, every in-flight request has been answered.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _drained = permits.acquire_many(all).await;
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
