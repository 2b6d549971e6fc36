//! `lectern-bench reads`: lesson-list throughput served by the primary
//! alone against the same server with `LECTERN_READ_DATABASE_URL` on a
//! streaming replica, both on this machine. Alone, and beside a write load
//! on the primary (board ops, in process, closed loop).

use std::time::{Duration, Instant};

use clap::Args;
use lectern_api::auth::tokens::Keyring;
use lectern_api::config::HttpConfig;
use lectern_api::embedded::EmbeddedPostgres;
use lectern_api::workers::Workers;
use lectern_api::AppState;
use lectern_domain::classroom::board::OpRequest;
use lectern_domain::classroom::values::OpData;
use lectern_domain::classroom::{Actor, OpKind};
use lectern_domain::identity::Role;
use lectern_domain::EventMetadata;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::classroom::{account, fill_lessons, live_lesson, serve};
use lectern_bench::stats::{percentile, round3};

/// `lectern-bench reads` options.
#[derive(Debug, Clone, Args)]
pub struct ReadsBench {
    /// Closed-loop HTTP clients listing lessons.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Lessons in the read model.
    #[arg(long, default_value_t = 10_000)]
    pub lessons: usize,
    /// In-process writers drawing on boards in the runs with writes.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Rounds; each runs every configuration once.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ReadsRun {
    /// `primary` or `replica` (where the lesson list is read).
    pub reads_from: &'static str,
    /// Whether writers drew on boards meanwhile.
    pub with_writes: bool,
    /// Which round.
    pub round: usize,
    /// `GET /api/v1/lessons?limit=50` answered per second.
    pub lists_per_sec: f64,
    /// Their median latency, ms.
    pub p50_ms: f64,
    /// Their 99th percentile, ms.
    pub p99_ms: f64,
    /// Board commands (10 ops each) committed per second, if any.
    pub writes_per_sec: f64,
}

/// Every run.
#[derive(Debug, Clone, Serialize)]
pub struct ReadsResult {
    /// `reads`.
    pub scenario: &'static str,
    /// Closed-loop clients.
    pub clients: usize,
    /// Writers in the runs with writes.
    pub writers: usize,
    /// Lessons in the read model.
    pub lessons: usize,
    /// Seconds per run.
    pub seconds: u64,
    /// Every run, in the order run.
    pub runs: Vec<ReadsRun>,
}

/// Closed-loop listing clients against `base` for `seconds`; sorted
/// latencies (ms) and the elapsed time.
async fn listing(
    base: &str,
    token: &str,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, token) = (
            client.clone(),
            format!("{base}/api/v1/lessons?limit=50"),
            token.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = client.get(&url).bearer_auth(&token).send().await?;
                anyhow::ensure!(r.status() == 200, "list answered {}", r.status());
                let body: serde_json::Value = r.json().await?;
                anyhow::ensure!(
                    body["results"].as_array().map_or(0, Vec::len) == 50,
                    "a full page"
                );
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((all, secs))
}

/// Writers drawing on their own boards until `stop`; commands committed.
fn writers(
    state: &AppState,
    boards: &[(Uuid, Uuid)],
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<u64>>> {
    boards
        .iter()
        .enumerate()
        .map(|(w, &(tutor, board))| {
            let (state, stop) = (state.clone(), stop.clone());
            tokio::spawn(async move {
                let meta = EventMetadata::system("bench-reads");
                let mut done = 0u64;
                let mut n = 0usize;
                while !stop.is_cancelled() {
                    let ops: Vec<OpRequest> = (0..10)
                        .map(|_| {
                            n += 1;
                            OpRequest {
                                client_id: format!("writer-{w}"),
                                op_id: format!("{}-{n}", Uuid::new_v4().simple()),
                                lamport: n as u64,
                                kind: if n <= 100 { OpKind::Add } else { OpKind::Move },
                                element_id: Some(format!("w{w}-e{}", n % 100)),
                                data: OpData::parse(json!({"x": n}))
                                    .expect("a small object is valid op data"),
                            }
                        })
                        .collect();
                    state
                        .classroom
                        .draw(board, Actor::unrestricted(tutor), ops, &meta)
                        .await?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect()
}

/// Wait until the replica has the primary's lessons.
async fn replica_caught_up(read_pool: &PgPool, lessons: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let migrated: bool = sqlx::query_scalar("SELECT to_regclass('public.lessons') IS NOT NULL")
            .fetch_one(read_pool)
            .await?;
        if migrated {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM lessons")
                .fetch_one(read_pool)
                .await?;
            if n >= lessons {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the replica did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run_reads(opts: &ReadsBench) -> anyhow::Result<ReadsResult> {
    let (primary, replica) = tokio::task::spawn_blocking(|| {
        let primary = EmbeddedPostgres::start_temporary(true)?;
        let replica = EmbeddedPostgres::start_replica_of(&primary)?;
        anyhow::Ok((primary, replica))
    })
    .await??;
    let size = (opts.clients + opts.writers + 8) as u32;
    let pool = lectern_commands::pool::connect(&primary.url("postgres"), size).await?;
    let read_pool = lectern_commands::pool::connect(&replica.url("postgres"), size).await?;
    lectern_commands::MIGRATOR.run(&pool).await?;

    let key: [u8; 32] = rand::random();
    let keyring = || {
        Keyring::new(
            vec![("bench".to_owned(), key.to_vec())],
            "lectern",
            "lectern-api",
        )
    };
    let cancel = CancellationToken::new();
    let on_primary = serve(
        AppState::new(pool.clone(), HttpConfig::for_tests(), keyring()?),
        &cancel,
    )
    .await?;
    let on_replica = serve(
        AppState::new(pool.clone(), HttpConfig::for_tests(), keyring()?)
            .with_read_pool(read_pool.clone()),
        &cancel,
    )
    .await?;
    let workers = Workers::start_projections(&on_primary.state, &cancel).await?;
    let run = Uuid::new_v4().simple().to_string();
    let (tutor, token) = account(&on_primary.state, &run, 0, Role::Tutor).await?;
    let mut boards = Vec::new();
    for _ in 0..opts.writers {
        boards.push((tutor, live_lesson(&on_primary.state, tutor, &[]).await?));
    }
    fill_lessons(&pool, tutor, opts.lessons).await?;
    replica_caught_up(&read_pool, i64::try_from(opts.lessons)?).await?;

    let mut runs = Vec::new();
    for round in 1..=opts.rounds {
        for with_writes in [false, true] {
            for (reads_from, server) in [("primary", &on_primary), ("replica", &on_replica)] {
                let stop = CancellationToken::new();
                let writing = if with_writes {
                    writers(&on_primary.state, &boards, &stop)
                } else {
                    Vec::new()
                };
                let started = Instant::now();
                let (lat, secs) = listing(&server.base, &token, opts.clients, opts.seconds).await?;
                stop.cancel();
                let mut written = 0;
                for w in writing {
                    written += w.await??;
                }
                let write_secs = started.elapsed().as_secs_f64();
                runs.push(ReadsRun {
                    reads_from,
                    with_writes,
                    round,
                    lists_per_sec: round3(lat.len() as f64 / secs),
                    p50_ms: round3(percentile(&lat, 0.5)),
                    p99_ms: round3(percentile(&lat, 0.99)),
                    writes_per_sec: round3(written as f64 / write_secs),
                });
            }
        }
    }
    cancel.cancel();
    workers.join().await;
    pool.close().await;
    read_pool.close().await;
    drop((primary, replica));
    Ok(ReadsResult {
        scenario: "reads",
        clients: opts.clients,
        writers: opts.writers,
        lessons: opts.lessons,
        seconds: opts.seconds,
        runs,
    })
}
