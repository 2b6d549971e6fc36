//! `lectern-bench auth`: authenticated reads (`GET /api/v1/me`) and token
//! refresh over HTTP, and the in-process cost of authenticating a request and
//! checking its policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use clap::Args;
use lectern_domain::identity::{DisplayName, Email, Password, Role};
use lectern_domain::policy::Action;
use lectern_domain::{EventMetadata, Position};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use lectern_api::auth::tokens::Keyring;
use lectern_api::auth::Caller;
use lectern_api::config::HttpConfig;
use lectern_api::workers::Workers;
use lectern_api::AppState;

use lectern_bench::stats::{percentile, round3};

/// Clients step through the tokens by a prime stride, so they spread over users.
const STRIDE: usize = 7;

/// `lectern-bench auth` options.
#[derive(Debug, Clone, Args)]
pub struct AuthBench {
    /// Concurrent closed-loop HTTP clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Measured duration of the `GET /api/v1/me` run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Accounts to create; each logs in five times, and each session is
    /// refreshed nine times (the limit is ten per hour).
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// In-process authentication checks to time.
    #[arg(long, default_value_t = 200_000)]
    pub iterations: usize,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct AuthResult {
    pub scenario: &'static str,
    pub clients: usize,
    pub me_requests: u64,
    pub me_per_sec: f64,
    pub me_p50_ms: f64,
    pub me_p99_ms: f64,
    pub refreshes: u64,
    pub refresh_per_sec: f64,
    pub refresh_p50_ms: f64,
    pub refresh_p99_ms: f64,
    pub auth_iterations: usize,
    pub auth_mean_us: f64,
    pub auth_p99_us: f64,
}

/// Run the benchmark against a server on `pool`, started in this process.
pub async fn run_auth(pool: PgPool, opts: &AuthBench) -> anyhow::Result<AuthResult> {
    let cancel = CancellationToken::new();
    let key: [u8; 32] = rand::random();
    let keyring = Keyring::new(
        vec![("bench".to_owned(), key.to_vec())],
        "lectern",
        "lectern-api",
    )?;
    let state = AppState::new(pool.clone(), HttpConfig::for_tests(), keyring);
    let _workers = Workers::start_projections(&state, &cancel).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = lectern_api::router(state.clone());
    tokio::spawn(async move {
        // As `lectern serve` does: TCP_NODELAY on every connection.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });

    // Accounts and sessions, through the service (login over HTTP is rate
    // limited per address, and this is one address).
    let run = uuid::Uuid::new_v4().simple().to_string();
    let password = Password::parse("benchmark passphrase")?;
    let name = DisplayName::parse("Bench")?;
    let meta = EventMetadata::system(&run);
    let mut sessions = Vec::new();
    let mut last = Position::ZERO;
    for u in 0..opts.users {
        let email = Email::parse(&format!("bench-{run}-{u}@example.com"))?;
        state
            .identity
            .register(&email, &password, &name, Role::Student, &meta)
            .await?;
        for _ in 0..5 {
            let issued = state
                .identity
                .login(email.as_str(), &password, "bench-device", &meta)
                .await?;
            last = last.max(issued.position.unwrap_or(Position::ZERO));
            let (access, _) = state.auth.issue(&issued);
            sessions.push((access, issued.refresh_token));
        }
    }
    lectern_projections::status::wait_for(&pool, "identity", last, Duration::from_secs(120))
        .await?;
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");

    // GET /api/v1/me, closed loop.
    let tokens: Arc<Vec<String>> = Arc::new(sessions.iter().map(|s| s.0.clone()).collect());
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..opts.clients {
        let (client, base, tokens) = (client.clone(), base.clone(), Arc::clone(&tokens));
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut i = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = client
                    .get(format!("{base}/api/v1/me"))
                    .bearer_auth(&tokens[i % tokens.len()])
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 200, "GET /api/v1/me answered {}", r.status());
                let _ = r.bytes().await?;
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
                i += STRIDE;
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut me = Vec::new();
    for t in tasks {
        me.extend(t.await??);
    }
    let me_secs = started.elapsed().as_secs_f64();
    me.sort_by(f64::total_cmp);

    // POST /api/v1/auth/refresh: each session rotated nine times in a row.
    let queue = Arc::new(Mutex::new(
        sessions.into_iter().map(|s| s.1).collect::<Vec<_>>(),
    ));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..opts.clients {
        let (client, base, queue) = (client.clone(), base.clone(), Arc::clone(&queue));
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let Some(mut token) = queue.lock().await.pop() else { break };
                for _ in 0..9 {
                    let t = Instant::now();
                    let r = client
                        .post(format!("{base}/api/v1/auth/refresh"))
                        .json(&serde_json::json!({"refresh_token": token, "device_fingerprint": "bench-device"}))
                        .send()
                        .await?;
                    anyhow::ensure!(r.status() == 200, "refresh answered {}", r.status());
                    let body: serde_json::Value = r.json().await?;
                    token = body["refresh_token"].as_str().unwrap_or_default().to_owned();
                    samples.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut refresh = Vec::new();
    for t in tasks {
        refresh.extend(t.await??);
    }
    let refresh_secs = started.elapsed().as_secs_f64();
    refresh.sort_by(f64::total_cmp);

    // In process: what every authenticated request pays before its handler
    // runs its own logic: verify the JWT, check revocation, apply the policy.
    let access = tokens
        .first()
        .ok_or_else(|| anyhow::anyhow!("no session"))?;
    let request = axum::http::Request::builder()
        .uri("/api/v1/me")
        .header("authorization", format!("Bearer {access}"))
        .body(())?;
    let (parts, ()) = request.into_parts();
    let mut auth = Vec::with_capacity(opts.iterations);
    for _ in 0..opts.iterations {
        let mut p = parts.clone();
        let t = Instant::now();
        let caller = Caller::from_request_parts(&mut p, &state)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
        caller
            .authorize(&state, Action::MeRead)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
        auth.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let auth_mean = auth.iter().sum::<f64>() / auth.len().max(1) as f64;
    auth.sort_by(f64::total_cmp);
    cancel.cancel();

    Ok(AuthResult {
        scenario: "auth",
        clients: opts.clients,
        me_requests: me.len() as u64,
        me_per_sec: round3(me.len() as f64 / me_secs),
        me_p50_ms: round3(percentile(&me, 0.5)),
        me_p99_ms: round3(percentile(&me, 0.99)),
        refreshes: refresh.len() as u64,
        refresh_per_sec: round3(refresh.len() as f64 / refresh_secs),
        refresh_p50_ms: round3(percentile(&refresh, 0.5)),
        refresh_p99_ms: round3(percentile(&refresh, 0.99)),
        auth_iterations: opts.iterations,
        auth_mean_us: round3(auth_mean),
        auth_p99_us: round3(percentile(&auth, 0.99)),
    })
}
