//! `lectern-bench ledger`: the verifiable ledger's costs (issue 15 §5).
//!
//! 1. The write side with and without the sealer: closed-loop commands
//!    through Lectern's store (the `store` benchmark's distinct mode), run
//!    alternately without and with a sealer in the same process, in one
//!    session; the ratio of the medians, and the seal lag (an event's
//!    `recorded_at` to its leaf's `sealed_at`) of the runs with it.
//! 2. Time travel: `GET /api/v1/audit/streams/Board/{id}/state?version=N/2`
//!    over HTTP, on a board of N operations, p50 and p99 until the whole
//!    answer has arrived.
//! 3. Sealer throughput on a backlog: N events written while no sealer runs,
//!    then one sealer started; events sealed per second until none is left.
//! 4. Offline verification: the whole ledger exported as a bundle, then
//!    `verify_bundle` timed (events per second).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use lectern_api::auth::tokens::Keyring;
use lectern_api::config::HttpConfig;
use lectern_api::AppState;
use lectern_domain::identity::Role;
use lectern_domain::EventMetadata;
use lectern_ledger::{LedgerKey, TrustedKey};
use lectern_projections::ledger::{Sealer, SealerConfig};
use lectern_projections::Wakeup;
use serde::Serialize;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::classroom::{account, fill_board, live_lesson, serve};
use crate::store::{run_store, Mode, StoreBench, StoreKind};
use lectern_bench::stats::{percentile, round3};

/// `lectern-bench ledger` options.
#[derive(Debug, Clone, Args)]
pub struct LedgerBench {
    /// Concurrent closed-loop clients of the write-side runs.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Seconds per write-side run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Write-side rounds (each: one run without the sealer, one with).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Events in the backlog the sealer works through.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: u64,
    /// Operations on the board whose middle state is asked for.
    #[arg(long, default_value_t = 100_000)]
    pub board_ops: usize,
    /// Timed time-travel queries.
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
    /// Where the bundle is written (a temporary directory by default; removed
    /// afterwards).
    #[arg(long)]
    pub bundle_dir: Option<std::path::PathBuf>,
}

/// The figures.
#[derive(Debug, Serialize)]
pub struct LedgerResult {
    pub scenario: &'static str,
    pub clients: usize,
    pub seconds: u64,
    /// Commands/s of each run without the sealer.
    pub without_sealer: Vec<f64>,
    /// Commands/s of each run with the sealer.
    pub with_sealer: Vec<f64>,
    /// Median with / median without.
    pub write_ratio: f64,
    pub with_sealer_p99_ms: f64,
    pub without_sealer_p99_ms: f64,
    /// Seal lag of the events written while the sealer ran.
    pub seal_lag_p50_ms: f64,
    pub seal_lag_p99_ms: f64,
    pub board_ops: usize,
    pub time_travel_version: usize,
    pub time_travel_p50_ms: f64,
    pub time_travel_p99_ms: f64,
    /// The state served equals a replay from the first event.
    pub time_travel_matches_replay: bool,
    pub backlog: u64,
    pub backlog_write_secs: f64,
    pub sealed: u64,
    pub seal_secs: f64,
    pub sealed_per_sec: f64,
    pub export_secs: f64,
    pub bundle_mib: f64,
    pub verified_events: u64,
    pub verify_secs: f64,
    pub verified_per_sec: f64,
    pub verify_ok: bool,
}

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

fn start_sealer(pool: &PgPool, key: &Arc<LedgerKey>) -> Running {
    let cancel = CancellationToken::new();
    let sealer = Sealer {
        connect: (*pool.connect_options()).clone(),
        key: Arc::clone(key),
        config: SealerConfig::default(),
        wakeup: Wakeup::polling_only(),
        cancel: cancel.clone(),
    };
    Running {
        cancel,
        task: tokio::spawn(sealer.run()),
    }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

async fn count(pool: &PgPool, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

/// Wait until every committed event is sealed.
async fn caught_up(pool: &PgPool, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let behind = count(
            pool,
            "SELECT (SELECT count(*) FROM events) - (SELECT count(*) FROM ledger_leaves)",
        )
        .await?;
        if behind == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the sealer is {behind} events behind"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// Run the benchmark on `pool` (a database of its own).
pub async fn run_ledger(pool: PgPool, opts: &LedgerBench) -> anyhow::Result<LedgerResult> {
    let key = Arc::new(LedgerKey::generate("bench.invalid/ledger")?);

    // 1. The write side, without and with the sealer, alternately.
    let store = StoreBench {
        clients: opts.clients,
        seconds: opts.seconds,
        mode: Mode::Distinct,
        snapshot_every: 0,
        store: StoreKind::Lectern,
        events_per_aggregate: 1,
        concurrent_appends: None,
    };
    let (mut without, mut with, mut p99_without, mut p99_with) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut lags = Vec::new();
    // A new database pays for its first WAL segments and cold caches: one
    // unmeasured run first.
    run_store(pool.clone(), &store).await?;
    for _ in 0..opts.rounds {
        let r = run_store(pool.clone(), &store).await?;
        without.push(r.commands_per_sec);
        p99_without.push(r.p99_ms);
        // The sealer catches up with the run before, then runs beside this one.
        let sealer = start_sealer(&pool, &key);
        caught_up(&pool, Duration::from_secs(600)).await?;
        let from: i64 = count(
            &pool,
            "SELECT coalesce(max(global_position), 0) FROM events",
        )
        .await?;
        let r = run_store(pool.clone(), &store).await?;
        with.push(r.commands_per_sec);
        p99_with.push(r.p99_ms);
        caught_up(&pool, Duration::from_secs(600)).await?;
        sealer.stop().await;
        let lag: Vec<f64> = sqlx::query_scalar(
            "SELECT (extract(epoch FROM l.sealed_at - e.recorded_at) * 1000)::float8
               FROM events e JOIN ledger_leaves l ON l.global_position = e.global_position
              WHERE e.global_position > $1",
        )
        .bind(from)
        .fetch_all(&pool)
        .await?;
        lags.extend(lag);
    }
    lags.sort_by(f64::total_cmp);

    // 2. Time travel on a long board, over HTTP.
    let cancel = CancellationToken::new();
    let secret: [u8; 32] = rand::random();
    let keyring = Keyring::new(
        vec![("bench".to_owned(), secret.to_vec())],
        "lectern",
        "lectern-api",
    )?;
    let srv = serve(
        AppState::new(pool.clone(), HttpConfig::for_tests(), keyring),
        &cancel,
    )
    .await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (tutor, _) = account(&srv.state, &run, 0, Role::Tutor).await?;
    let (_, auditor) = account(&srv.state, &run, 1, Role::Auditor).await?;
    let board = live_lesson(&srv.state, tutor, &[]).await?;
    let meta = EventMetadata::system(&run);
    fill_board(&srv.state, board, tutor, opts.board_ops, &meta).await?;
    // Board snapshots are written in the background: wait for the last.
    let snapshots_due = (opts.board_ops / 1000) as i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(
        &pool,
        &format!("SELECT count(*) FROM snapshot_history WHERE aggregate_type = 'Board' AND aggregate_id = '{board}'"),
    )
    .await?
        < snapshots_due
    {
        anyhow::ensure!(Instant::now() < deadline, "board snapshots did not land");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let target = opts.board_ops / 2;
    let client = reqwest::Client::new();
    let url = format!(
        "{}/api/v1/audit/streams/Board/{board}/state?version={target}",
        srv.base
    );
    let mut times = Vec::new();
    let mut body = Default::default();
    for i in 0..opts.iterations + 5 {
        // Until the whole answer has arrived (not the client's parsing).
        let t = Instant::now();
        let r = client.get(&url).bearer_auth(&auditor).send().await?;
        anyhow::ensure!(r.status() == 200, "time travel answered {}", r.status());
        body = r.bytes().await?;
        // The first few warm the connection and the caches.
        if i >= 5 {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    let served: serde_json::Value = serde_json::from_slice(&body)?;
    let replay = lectern_commands::history::state_at(
        &pool,
        "Board",
        &board.to_string(),
        target as u64,
        false,
    )
    .await?
    .ok_or_else(|| anyhow::anyhow!("no fold for boards"))?;
    let matches = served["state"] == replay.state && served["version"] == target;
    cancel.cancel();

    // 3. A backlog sealed from cold.
    let written = Instant::now();
    let mut left = opts.backlog;
    while left > 0 {
        let n = left.min(50_000);
        sqlx::query(BACKLOG).bind(n as i64).execute(&pool).await?;
        left -= n;
    }
    let backlog_write_secs = written.elapsed().as_secs_f64();
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;
    sqlx::query("CHECKPOINT").execute(&pool).await?;
    let before = count(&pool, "SELECT count(*) FROM ledger_leaves").await?;
    let total = count(&pool, "SELECT count(*) FROM events").await?;
    let t = Instant::now();
    let sealer = start_sealer(&pool, &key);
    caught_up(&pool, Duration::from_secs(1800)).await?;
    let seal_secs = t.elapsed().as_secs_f64();
    sealer.stop().await;
    let sealed = (total - before) as u64;
    // A checkpoint of the whole tree for the verifier to check.
    let sealer = start_sealer(&pool, &key);
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(
        &pool,
        "SELECT coalesce(max(size), 0) FROM ledger_checkpoints",
    )
    .await?
        < total
    {
        anyhow::ensure!(Instant::now() < deadline, "no checkpoint of the whole tree");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sealer.stop().await;

    // 4. Export, then verify offline.
    let dir = opts
        .bundle_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("lectern-bench-bundle-{run}")));
    let t = Instant::now();
    lectern_api::audit_cli::export(&pool, &dir, 0).await?;
    let export_secs = t.elapsed().as_secs_f64();
    let bundle_bytes = std::fs::metadata(dir.join(lectern_ledger::bundle::EVENTS_FILE))?.len();
    let trusted = TrustedKey::parse(key.public_text())?;
    let t = Instant::now();
    let report = lectern_ledger::verify::verify_bundle(&dir, &trusted, None)?;
    let verify_secs = t.elapsed().as_secs_f64();
    if opts.bundle_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }

    Ok(LedgerResult {
        scenario: "ledger",
        clients: opts.clients,
        seconds: opts.seconds,
        write_ratio: round3(median(&with) / median(&without).max(1e-9)),
        without_sealer_p99_ms: round3(median(&p99_without)),
        with_sealer_p99_ms: round3(median(&p99_with)),
        without_sealer: without,
        with_sealer: with,
        seal_lag_p50_ms: round3(percentile(&lags, 0.50)),
        seal_lag_p99_ms: round3(percentile(&lags, 0.99)),
        board_ops: opts.board_ops,
        time_travel_version: target,
        time_travel_p50_ms: round3(percentile(&times, 0.50)),
        time_travel_p99_ms: round3(percentile(&times, 0.99)),
        time_travel_matches_replay: matches,
        backlog: opts.backlog,
        backlog_write_secs: round3(backlog_write_secs),
        sealed,
        seal_secs: round3(seal_secs),
        sealed_per_sec: round3(sealed as f64 / seal_secs),
        export_secs: round3(export_secs),
        bundle_mib: round3(bundle_bytes as f64 / 1_048_576.0),
        verified_events: report.sealed,
        verify_secs: round3(verify_secs),
        verified_per_sec: round3(report.lines as f64 / verify_secs),
        verify_ok: report.ok(),
    })
}

/// `$1` events of a realistic size and shape (a lesson-like payload with
/// nested objects, numbers and text; metadata as the command bus writes it),
/// in one transaction.
const BACKLOG: &str = r#"
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT 'BenchBacklog', 'backlog-' || (g / 100)::text || '-' || md5(random()::text), 1 + g % 100, 'LessonScheduled', '1',
       jsonb_build_object('LessonScheduled', jsonb_build_object(
           'lesson_id', gen_random_uuid(), 'tutor_id', gen_random_uuid(),
           'title', 'Linear equations, part ' || g, 'description', repeat('Practice problems and worked examples. ', 3),
           'starts_at', now() + (g || ' minutes')::interval, 'duration_minutes', 60, 'capacity', 12,
           'price', jsonb_build_object('amount_minor', 1500 + g % 1000, 'currency', 'eur'))),
       jsonb_build_object('actor_id', gen_random_uuid()::text, 'actor_role', 'tutor', 'session_id', gen_random_uuid()::text,
           'request_id', gen_random_uuid()::text, 'correlation_id', gen_random_uuid()::text, 'causation_id', '',
           'ip', '203.0.113.7', 'user_agent', 'Mozilla/5.0 (bench)', 'command', 'ScheduleLesson', 'idempotency_key', '')
  FROM generate_series(1, $1) AS g"#;
