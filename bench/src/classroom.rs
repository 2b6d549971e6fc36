//! `lectern-bench classroom`: many clients drawing on one live board over
//! HTTP; an op's latency on a fresh board and on one with 100,000 ops (from
//! a cold cache, so through the snapshot); and lesson listing over 100,000
//! lessons, first page against a deep cursor page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use lectern_domain::classroom::board::OpRequest;
use lectern_domain::classroom::lesson::{LessonDetails, LessonDraft};
use lectern_domain::classroom::values::OpData;
use lectern_domain::classroom::{Actor, LessonCommand, OpKind};
use lectern_domain::identity::{DisplayName, Email, Password, Role};
use lectern_domain::EventMetadata;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use lectern_api::auth::tokens::Keyring;
use lectern_api::config::HttpConfig;
use lectern_api::workers::Workers;
use lectern_api::AppState;

use lectern_bench::stats::{percentile, round3};

/// `lectern-bench classroom` options.
#[derive(Debug, Clone, Args)]
pub struct ClassroomBench {
    /// Clients drawing on the one board (the tutor and enrolled students).
    #[arg(long, default_value_t = 30)]
    pub clients: usize,
    /// Measured duration of the drawing run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Operations per request (`POST /api/v1/boards/{id}/ops/batch`).
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Also run open-loop at this many offered ops/s (0: skip): every client
    /// sends one batch per `clients * batch / rate` seconds on a fixed
    /// schedule, and latency counts from the scheduled send time, so a slow
    /// answer also charges the requests queued behind it.
    #[arg(long, default_value_t = 3000)]
    pub rate: u64,
    /// Operations on the long board.
    #[arg(long, default_value_t = 100_000)]
    pub board_ops: usize,
    /// Lessons in the listing run.
    #[arg(long, default_value_t = 100_000)]
    pub lessons: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassroomResult {
    pub scenario: &'static str,
    pub clients: usize,
    pub batch: usize,
    /// The closed-loop run.
    #[serde(flatten)]
    pub closed_loop: DrawingFigures,
    /// The open-loop run at `rate` offered ops/s, if asked for.
    pub open_loop: Option<OpenLoopResult>,
    pub fresh_op_p50_ms: f64,
    pub fresh_op_p99_ms: f64,
    pub long_board_ops: usize,
    pub long_op_p50_ms: f64,
    pub long_op_p99_ms: f64,
    pub lessons: usize,
    pub list_first_p50_ms: f64,
    pub list_first_p99_ms: f64,
    pub list_deep_p50_ms: f64,
    pub list_deep_p99_ms: f64,
}

/// The open-loop drawing run.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopResult {
    pub offered_ops_per_sec: u64,
    #[serde(flatten)]
    pub figures: DrawingFigures,
    pub max_ms: f64,
}

/// The figures every drawing run reports.
#[derive(Debug, Clone, Serialize)]
pub struct DrawingFigures {
    pub requests: u64,
    pub applied_ops: u64,
    pub rejected_ops: u64,
    pub throttled: u64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What one drawing run measured.
struct Drawing {
    /// Sorted request latencies, ms.
    latencies: Vec<f64>,
    applied: u64,
    rejected: u64,
    throttled: u64,
    secs: f64,
}

impl Drawing {
    fn figures(&self) -> DrawingFigures {
        DrawingFigures {
            requests: self.latencies.len() as u64,
            applied_ops: self.applied,
            rejected_ops: self.rejected,
            throttled: self.throttled,
            ops_per_sec: round3(self.applied as f64 / self.secs),
            p50_ms: round3(percentile(&self.latencies, 0.5)),
            p99_ms: round3(percentile(&self.latencies, 0.99)),
        }
    }
}

/// `clients` clients drawing on `board` for `seconds`, `batch` ops per
/// request: closed-loop when `interval` is `None`, else each client sends on
/// a fixed schedule of one request per `interval`, its clients staggered
/// evenly across it.
async fn drawing(
    base: &str,
    tokens: &Arc<Vec<String>>,
    board: Uuid,
    batch: usize,
    seconds: u64,
    interval: Option<Duration>,
) -> anyhow::Result<Drawing> {
    let client = reqwest::Client::new();
    let clients = tokens.len();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, tokens) = (client.clone(), Arc::clone(tokens));
        let url = format!("{base}/api/v1/boards/{board}/ops/batch");
        tasks.push(tokio::spawn(async move {
            let (mut samples, mut applied, mut rejected, mut throttled) = (Vec::new(), 0u64, 0u64, 0u64);
            let mut n = 0usize;
            let mut due = interval.map(|i| started + i.mul_f64(c as f64 / clients as f64));
            while due.unwrap_or_else(Instant::now) < deadline {
                if let Some(at) = due {
                    tokio::time::sleep_until(at.into()).await;
                }
                // Each client adds its elements, then keeps moving them.
                let ops: Vec<_> = (0..batch)
                    .map(|_| {
                        n += 1;
                        let el = format!("c{c}-{}", n % 200);
                        let kind = if n <= 200 { "add" } else { "move" };
                        json!({"client_id": format!("client-{c}"), "op_id": n.to_string(), "lamport": n,
                               "kind": kind, "element_id": el, "data": {"x": n, "y": c}})
                    })
                    .collect();
                let t = due.unwrap_or_else(Instant::now);
                if let (Some(at), Some(every)) = (due.as_mut(), interval) {
                    *at += every;
                }
                let r = client.post(&url).bearer_auth(&tokens[c]).json(&json!({"ops": ops})).send().await?;
                if r.status() == 429 {
                    throttled += 1;
                    let _ = r.bytes().await?;
                    continue;
                }
                anyhow::ensure!(r.status() == 200, "ops batch answered {}", r.status());
                let body: serde_json::Value = r.json().await?;
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
                for res in body["results"].as_array().into_iter().flatten() {
                    if res["status"] == "applied" {
                        applied += 1;
                    } else {
                        rejected += 1;
                    }
                }
            }
            Ok::<_, anyhow::Error>((samples, applied, rejected, throttled))
        }));
    }
    let mut run = Drawing {
        latencies: Vec::new(),
        applied: 0,
        rejected: 0,
        throttled: 0,
        secs: 0.0,
    };
    for t in tasks {
        let (s, a, r, th) = t.await??;
        run.latencies.extend(s);
        run.applied += a;
        run.rejected += r;
        run.throttled += th;
    }
    run.secs = started.elapsed().as_secs_f64();
    run.latencies.sort_by(f64::total_cmp);
    Ok(run)
}

pub(crate) struct Server {
    pub(crate) state: AppState,
    pub(crate) base: String,
}

async fn server(
    pool: &PgPool,
    keyring: Keyring,
    cancel: &CancellationToken,
) -> anyhow::Result<Server> {
    let state = AppState::new(pool.clone(), HttpConfig::for_tests(), keyring);
    serve(state, cancel).await
}

/// Serve `state`'s router on a free loopback port until `cancel`.
pub(crate) async fn serve(state: AppState, cancel: &CancellationToken) -> anyhow::Result<Server> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = lectern_api::router(state.clone());
    let stop = cancel.clone();
    tokio::spawn(async move {
        // As `lectern serve` does: TCP_NODELAY on every connection.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    });
    Ok(Server { state, base })
}

/// A logged-in account: its id and an access token.
pub(crate) async fn account(
    state: &AppState,
    run: &str,
    i: usize,
    role: Role,
) -> anyhow::Result<(Uuid, String)> {
    let meta = EventMetadata::system(run);
    let email = Email::parse(&format!("bench-{run}-{i}@example.com"))?;
    let password = Password::parse("benchmark passphrase")?;
    let c = state
        .identity
        .register(
            &email,
            &password,
            &DisplayName::parse("Bench")?,
            role,
            &meta,
        )
        .await?;
    let issued = state
        .identity
        .login(email.as_str(), &password, "bench-device", &meta)
        .await?;
    Ok((c.aggregate_id.parse()?, state.auth.issue(&issued).0))
}

/// A live lesson taught by `tutor` with `students` enrolled; its id.
pub(crate) async fn live_lesson(
    state: &AppState,
    tutor: Uuid,
    students: &[Uuid],
) -> anyhow::Result<Uuid> {
    let meta = EventMetadata::system("");
    let draft = LessonDraft {
        title: "Bench".into(),
        description: String::new(),
        starts_at: chrono::Utc::now() + chrono::Duration::hours(1),
        duration_minutes: 60,
        capacity: 500,
        price_amount_minor: 0,
        price_currency: "eur".into(),
    };
    let details = LessonDetails::parse(&draft, chrono::Utc::now())
        .map_err(|issues| anyhow::anyhow!("bench lesson details: {issues:?}"))?;
    let c = &state.classroom;
    let (id, _) = c.schedule(tutor, details, &meta).await?;
    let by = Actor::unrestricted(tutor);
    for s in students {
        c.lesson(id, LessonCommand::Enroll { by, student_id: *s }, &meta)
            .await?;
    }
    c.lesson(id, LessonCommand::Start { by }, &meta).await?;
    Ok(id)
}

/// Draw `ops` operations on `board` as `tutor`, 100 per command: the first
/// thousand add elements, the rest move them.
pub(crate) async fn fill_board(
    state: &AppState,
    board: Uuid,
    tutor: Uuid,
    ops: usize,
    meta: &EventMetadata,
) -> anyhow::Result<()> {
    let mut n = 0;
    while n < ops {
        let batch: Vec<OpRequest> = (0..100.min(ops - n))
            .map(|k| {
                let i = n + k;
                OpRequest {
                    client_id: format!("filler-{}", i % 30),
                    op_id: i.to_string(),
                    lamport: i as u64,
                    kind: if i < 1000 { OpKind::Add } else { OpKind::Move },
                    element_id: Some(format!("el-{}", i % 1000)),
                    data: OpData::parse(json!({"x": i})).expect("a small object is valid op data"),
                }
            })
            .collect();
        n += batch.len();
        state
            .classroom
            .draw(board, Actor::unrestricted(tutor), batch, meta)
            .await?;
    }
    Ok(())
}

async fn settle(pool: &PgPool) -> anyhow::Result<()> {
    lectern_bench::drill::verify::settle(pool, Duration::from_secs(600)).await
}

/// `n` lessons of `tutor`, a minute apart, written straight into the
/// `lessons` read model (no events: only the listing is measured), then
/// vacuumed and analysed.
pub(crate) async fn fill_lessons(pool: &PgPool, tutor: Uuid, n: usize) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO lessons (id, tutor_id, title, description, starts_at, duration_minutes, capacity,
                              price_amount_minor, price_currency, status, created_at, updated_at, version)
         SELECT gen_random_uuid(), $1, 'Lesson ' || g, '', now() + g * interval '1 minute', 60, 10, 1000, 'eur',
                'scheduled', now(), now(), 1
           FROM generate_series(1, $2) AS g",
    )
    .bind(tutor)
    .bind(i64::try_from(n)?)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE lessons").execute(pool).await?;
    Ok(())
}

/// One single-op request (op `i`) on `board`; its latency in ms.
async fn single_op(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    board: Uuid,
    i: usize,
    tag: &str,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let r = client
        .post(format!("{base}/api/v1/boards/{board}/ops"))
        .bearer_auth(token)
        .json(
            &json!({"client_id": format!("probe-{tag}"), "op_id": i.to_string(), "lamport": i,
                      "kind": "add", "element_id": format!("probe-{tag}-{i}"), "data": {"x": i}}),
        )
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "single op answered {}", r.status());
    let body: serde_json::Value = r.json().await?;
    anyhow::ensure!(
        body["results"][0]["status"] == "applied",
        "op not applied: {body}"
    );
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

pub async fn run_classroom(pool: PgPool, opts: &ClassroomBench) -> anyhow::Result<ClassroomResult> {
    let cancel = CancellationToken::new();
    let key: [u8; 32] = rand::random();
    let keyring = || {
        Keyring::new(
            vec![("bench".to_owned(), key.to_vec())],
            "lectern",
            "lectern-api",
        )
    };
    let srv = server(&pool, keyring()?, &cancel).await?;
    let _workers = Workers::start_projections(&srv.state, &cancel).await?;
    let run = Uuid::new_v4().simple().to_string();

    // 1. Drawing: one tutor and clients - 1 students on one live board.
    let (tutor, tutor_token) = account(&srv.state, &run, 0, Role::Tutor).await?;
    let mut tokens = vec![tutor_token.clone()];
    let mut students = Vec::new();
    for i in 1..opts.clients {
        let (id, token) = account(&srv.state, &run, i, Role::Student).await?;
        students.push(id);
        tokens.push(token);
    }
    let tokens = Arc::new(tokens);
    let board = live_lesson(&srv.state, tutor, &students).await?;
    let closed = drawing(&srv.base, &tokens, board, opts.batch, opts.seconds, None).await?;
    let open = if opts.rate > 0 {
        // A new board, once the closed-loop run's projections caught up.
        let board = live_lesson(&srv.state, tutor, &students).await?;
        settle(&pool).await?;
        let interval =
            Duration::from_secs_f64((opts.clients * opts.batch) as f64 / opts.rate as f64);
        Some(
            drawing(
                &srv.base,
                &tokens,
                board,
                opts.batch,
                opts.seconds,
                Some(interval),
            )
            .await?,
        )
    } else {
        None
    };
    let client = reqwest::Client::new();

    // 2. An op on a fresh board, and on a board with board_ops ops loaded
    // cold through its snapshot (a second server with an empty cache).
    // Measured once the projections have caught up, one op on each in turn,
    // so both see the same background load.
    let fresh = live_lesson(&srv.state, tutor, &[]).await?;
    let long = live_lesson(&srv.state, tutor, &[]).await?;
    let meta = EventMetadata::system(&run);
    fill_board(&srv.state, long, tutor, opts.board_ops, &meta).await?;
    let cold = server(&pool, keyring()?, &cancel).await?;
    settle(&pool).await?;
    let (mut fresh_lat, mut long_lat) = (Vec::new(), Vec::new());
    for i in 0..300 {
        fresh_lat.push(single_op(&client, &srv.base, &tutor_token, fresh, i, "fresh").await?);
        long_lat.push(single_op(&client, &cold.base, &tutor_token, long, i, "long").await?);
    }
    fresh_lat.sort_by(f64::total_cmp);
    long_lat.sort_by(f64::total_cmp);

    // 3. Listing: lessons written straight into the read model.
    fill_lessons(&pool, tutor, opts.lessons).await?;
    let deep: (chrono::DateTime<chrono::Utc>, Uuid) = sqlx::query_as(
        "SELECT starts_at, id FROM lessons ORDER BY starts_at, id OFFSET $1 LIMIT 1",
    )
    .bind(i64::try_from(opts.lessons * 9 / 10)?)
    .fetch_one(&pool)
    .await?;
    let deep_cursor = lectern_api::pagination::CursorKey::to_cursor(&deep);
    let mut first = Vec::new();
    let mut deep_lat = Vec::new();
    for i in 0..400 {
        let (url, out) = if i % 2 == 0 {
            (format!("{}/api/v1/lessons?limit=50", srv.base), &mut first)
        } else {
            (
                format!("{}/api/v1/lessons?limit=50&cursor={deep_cursor}", srv.base),
                &mut deep_lat,
            )
        };
        let t = Instant::now();
        let r = client.get(url).bearer_auth(&tutor_token).send().await?;
        anyhow::ensure!(r.status() == 200, "list answered {}", r.status());
        let body: serde_json::Value = r.json().await?;
        anyhow::ensure!(
            body["results"].as_array().map_or(0, Vec::len) == 50,
            "a full page"
        );
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    first.sort_by(f64::total_cmp);
    deep_lat.sort_by(f64::total_cmp);
    cancel.cancel();

    let p = |v: &[f64], q| round3(percentile(v, q));
    Ok(ClassroomResult {
        scenario: "classroom",
        clients: opts.clients,
        batch: opts.batch,
        closed_loop: closed.figures(),
        open_loop: open.map(|o| OpenLoopResult {
            offered_ops_per_sec: opts.rate,
            figures: o.figures(),
            max_ms: round3(o.latencies.last().copied().unwrap_or(0.0)),
        }),
        fresh_op_p50_ms: p(&fresh_lat, 0.5),
        fresh_op_p99_ms: p(&fresh_lat, 0.99),
        long_board_ops: opts.board_ops,
        long_op_p50_ms: p(&long_lat, 0.5),
        long_op_p99_ms: p(&long_lat, 0.99),
        lessons: opts.lessons,
        list_first_p50_ms: p(&first, 0.5),
        list_first_p99_ms: p(&first, 0.99),
        list_deep_p50_ms: p(&deep_lat, 0.5),
        list_deep_p99_ms: p(&deep_lat, 0.99),
    })
}
