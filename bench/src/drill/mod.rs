//! Reliability drills: real `lectern serve` processes on a private, durable
//! PostgreSQL, under a load of careful clients, while something breaks.
//!
//! - `kill9`: the server is killed with SIGKILL under load and restarted.
//! - `pg-restart`: PostgreSQL is stopped under load and started again.
//! - `failover`: two servers; the one holding the projections' locks is
//!   killed, and a logout on one is tried on the other.
//!
//! Each prints one JSON line; `scripts/drill` writes `RELIABILITY.md` from
//! them, and the test suite runs short versions of the first two.

pub mod load;
pub mod process;
pub mod verify;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use lectern_api::embedded::EmbeddedPostgres;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use crate::stats::{percentile, round3};
use load::{Cast, Load, Pace, Tally};
use process::{Server, ServerSpec};
use verify::Verdict;

/// Options every drill takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Seconds of new commands (clients then retry what is still
    /// unacknowledged for up to 30 s more).
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Students drawing on one board and chatting.
    #[arg(long, default_value_t = 8)]
    pub students: usize,
    /// Tutors creating lessons.
    #[arg(long, default_value_t = 3)]
    pub tutors: usize,
    /// The `lectern` binary to run (default: the one beside this binary).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
}

impl Common {
    /// Options for a short drill, as the test suite runs them.
    pub fn short(seconds: u64, server_bin: PathBuf) -> Self {
        Self {
            seconds,
            students: 3,
            tutors: 1,
            server_bin: Some(server_bin),
        }
    }
}

/// The drills.
#[derive(Debug, Clone, Subcommand)]
pub enum Drill {
    /// Load, kill -9 the server, restart it (KILLS times); then check that
    /// every acknowledged command is stored exactly once and the read
    /// models match the log.
    Kill9 {
        /// Options every drill takes.
        #[command(flatten)]
        common: Common,
        /// How many times the server is killed, evenly spread over the run.
        #[arg(long, default_value_t = 2)]
        kills: u32,
    },
    /// Load, stop PostgreSQL for OUTAGE_SECS, start it again; the status
    /// codes seen, the recovery time and anything lost.
    PgRestart {
        /// Options every drill takes.
        #[command(flatten)]
        common: Common,
        /// How long PostgreSQL stays down.
        #[arg(long, default_value_t = 5)]
        outage_secs: u64,
    },
    /// Two servers: kill the one holding the projections' locks and time
    /// the takeover; time how long a logout on one takes to reach the other.
    Failover {
        /// Options every drill takes.
        #[command(flatten)]
        common: Common,
        /// Logouts timed across the two processes.
        #[arg(long, default_value_t = 20)]
        revocations: usize,
    },
}

/// What the clients saw, for a drill's report.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    /// Answers by status (`transport`: no answer, e.g. connection refused).
    pub statuses: BTreeMap<String, u64>,
    /// 5xx answers other than 503 (none should occur).
    pub server_errors_other_than_503: u64,
    /// Commands still unacknowledged when the clients gave up.
    pub abandoned: u64,
    /// Answers no retry could change (none should occur).
    pub refused: Vec<String>,
    /// Ops the board rejected (none should be).
    pub rejected_ops: u64,
    /// The slowest answer, ms.
    pub slowest_ms: f64,
    /// Answers slower than 1.5 s, by command and status.
    pub slow_answers: BTreeMap<String, u64>,
}

impl Seen {
    fn of(tally: &Tally) -> Self {
        Self {
            statuses: tally.statuses.clone(),
            server_errors_other_than_503: tally.server_errors_other_than_503(),
            abandoned: tally.abandoned,
            refused: tally.refused.iter().take(5).cloned().collect(),
            rejected_ops: tally.rejected_ops,
            slowest_ms: round3(tally.slowest_ms),
            slow_answers: tally.slow_answers.clone(),
        }
    }
}

/// One kill in the kill -9 drill.
#[derive(Debug, Clone, Serialize)]
pub struct Kill {
    /// Seconds into the run.
    pub at_s: f64,
    /// What request the kill cut.
    pub cut: &'static str,
    /// From the restart to `/health/ready` answering 200, ms.
    pub ready_ms: f64,
    /// From the kill to the first acknowledged command after it, ms.
    pub first_ack_ms: Option<f64>,
}

/// The kill -9 drill's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Kill9Report {
    /// `kill9`.
    pub drill: &'static str,
    /// Seconds of new commands.
    pub seconds: u64,
    /// Students.
    pub students: usize,
    /// Tutors.
    pub tutors: usize,
    /// Each kill.
    pub kills: Vec<Kill>,
    /// What the clients saw.
    #[serde(flatten)]
    pub seen: Seen,
    /// What the log holds.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The PostgreSQL restart drill's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PgRestartReport {
    /// `pg-restart`.
    pub drill: &'static str,
    /// Seconds of new commands.
    pub seconds: u64,
    /// Students.
    pub students: usize,
    /// Tutors.
    pub tutors: usize,
    /// Seconds into the run PostgreSQL was stopped.
    pub stopped_at_s: f64,
    /// How long it was down, ms (the stop and the start included).
    pub down_ms: f64,
    /// From PostgreSQL accepting connections again to the first
    /// acknowledged command, ms.
    pub recovery_ms: Option<f64>,
    /// From PostgreSQL accepting connections again to `/health/ready`
    /// answering 200, ms.
    pub ready_ms: f64,
    /// What the clients saw.
    #[serde(flatten)]
    pub seen: Seen,
    /// What the log holds.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// A drill's private, durable cluster and working directory.
struct Stage {
    pg: EmbeddedPostgres,
    url: String,
    secret_key: String,
    root: PathBuf,
    bin: PathBuf,
    http: reqwest::Client,
}

impl Stage {
    async fn new(common: &Common) -> anyhow::Result<Self> {
        let bin = match &common.server_bin {
            Some(b) => b.clone(),
            None => process::sibling_lectern()?,
        };
        let pg = tokio::task::spawn_blocking(|| EmbeddedPostgres::start_temporary(true)).await??;
        let url = pg.url("postgres");
        let pool = lectern_commands::pool::connect(&url, 2).await?;
        lectern_commands::MIGRATOR.run(&pool).await?;
        pool.close().await;
        let root =
            std::env::temp_dir().join(format!("lectern-drill-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&root)?;
        Ok(Self {
            pg,
            url,
            secret_key: hex::encode(rand::random::<[u8; 32]>()),
            root,
            bin,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    fn spec(&self, name: &str) -> anyhow::Result<ServerSpec> {
        ServerSpec::new(&self.bin, &self.url, &self.secret_key, &self.root, name)
    }

    async fn start(&self, spec: &ServerSpec) -> anyhow::Result<Server> {
        let mut server = spec.spawn()?;
        server.ready(&self.http, Duration::from_secs(60)).await?;
        Ok(server)
    }

    /// One server, the drill's cast registered on it, and the load started
    /// against it.
    async fn under_load(&self, common: &Common) -> anyhow::Result<(ServerSpec, Server, Load)> {
        let spec = self.spec("server")?;
        let server = self.start(&spec).await?;
        let cast = Cast::create(&self.http, &spec.base(), common.tutors, common.students).await?;
        let load = Load::start(
            &spec.base(),
            &cast,
            &Pace::default(),
            common.seconds as f64,
            DRAIN,
        )?;
        Ok((spec, server, load))
    }

    /// A new pool (after a restart, an old one's connections are dead).
    async fn pool(&self) -> anyhow::Result<PgPool> {
        Ok(lectern_commands::pool::connect(&self.url, 4).await?)
    }

    async fn verify(&self, tally: &Tally) -> anyhow::Result<Verdict> {
        let pool = self.pool().await?;
        let verdict = verify::verify(&pool, tally).await;
        pool.close().await;
        verdict
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// How long clients keep retrying after the run's new commands stop.
const DRAIN: Duration = Duration::from_secs(30);

async fn sleep_until_run_second(load: &Load, second: f64) {
    let at = load.started + Duration::from_secs_f64(second);
    tokio::time::sleep_until(at.into()).await;
}

fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1000.0)
}

/// The kill -9 drill.
pub async fn kill9(common: &Common, kills: u32) -> anyhow::Result<Kill9Report> {
    let stage = Stage::new(common).await?;
    let (spec, mut server, load) = stage.under_load(common).await?;
    let mut killed = Vec::new();
    for k in 1..=kills {
        sleep_until_run_second(
            &load,
            common.seconds as f64 * f64::from(k) / f64::from(kills + 1),
        )
        .await;
        // Kill while a request awaits its answer, so the kill cuts one.
        let cut = load.until_in_flight().await;
        let at = load.elapsed();
        server.kill9()?;
        server = spec.spawn()?;
        let ready = server.ready(&stage.http, Duration::from_secs(60)).await?;
        killed.push((at, cut, ready));
    }
    let tally = load.finish().await?;
    let verdict = stage.verify(&tally).await?;
    drop(server);
    Ok(Kill9Report {
        drill: "kill9",
        seconds: common.seconds,
        students: common.students,
        tutors: common.tutors,
        kills: killed
            .into_iter()
            .map(|(at, cut, ready)| Kill {
                at_s: round3(at),
                cut,
                ready_ms: ms(ready),
                first_ack_ms: tally.first_ack_after(at).map(|s| round3(s * 1000.0)),
            })
            .collect(),
        seen: Seen::of(&tally),
        verdict,
    })
}

/// The PostgreSQL restart drill.
pub async fn pg_restart(common: &Common, outage_secs: u64) -> anyhow::Result<PgRestartReport> {
    let mut stage = Stage::new(common).await?;
    let (_, mut server, load) = stage.under_load(common).await?;
    sleep_until_run_second(&load, common.seconds as f64 / 3.0).await;
    let stopped_at = load.elapsed();
    let down = Instant::now();
    // pg_ctl blocks; the clients run on the runtime's other threads.
    tokio::task::block_in_place(|| stage.pg.stop())?;
    tokio::time::sleep(Duration::from_secs(outage_secs)).await;
    tokio::task::block_in_place(|| stage.pg.start_again())?;
    let down_ms = ms(down.elapsed());
    let back = load.elapsed();
    let back_at = Instant::now();
    server
        .ready(&stage.http, Duration::from_secs(60))
        .await
        .context("the server did not become ready again")?;
    let ready_ms = ms(back_at.elapsed());
    let tally = load.finish().await?;
    let verdict = stage.verify(&tally).await?;
    drop(server);
    Ok(PgRestartReport {
        drill: "pg-restart",
        seconds: common.seconds,
        students: common.students,
        tutors: common.tutors,
        stopped_at_s: round3(stopped_at),
        down_ms,
        recovery_ms: tally.first_ack_after(back).map(|s| round3(s * 1000.0)),
        ready_ms,
        seen: Seen::of(&tally),
        verdict,
    })
}

/// The failover drill's figures.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// `failover`.
    pub drill: &'static str,
    /// Advisory locks the first process held (one per projection runner
    /// and process manager).
    pub locks: i64,
    /// With both processes up: from a chat message's acknowledgement by the
    /// second process to its row in the read model (which the first
    /// process's runner writes), ms.
    pub apply_before_kill_ms: f64,
    /// From kill -9 of the holder to the second process holding every
    /// lock, ms.
    pub takeover_ms: f64,
    /// From the kill to the read-model row of a message sent to the second
    /// process right after it, ms.
    pub apply_after_kill_ms: f64,
    /// Logouts timed: from the first process acknowledging a logout to the
    /// second refusing the session's token (401), ms.
    pub revocations: usize,
    /// Their median, ms.
    pub revocation_p50_ms: f64,
    /// Their slowest, ms.
    pub revocation_max_ms: f64,
}

/// Advisory locks held, by the holder's application name
/// (`lectern/<pid>/<nonce>`).
async fn lock_holders(pool: &PgPool) -> anyhow::Result<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT a.application_name, count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted GROUP BY 1",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Locks held by the process whose application names start with `prefix`.
fn held_by(holders: &BTreeMap<String, i64>, prefix: &str) -> i64 {
    holders
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, n)| n)
        .sum()
}

/// Poll every 5 ms until `done` says so, for up to `bound`; how long it took.
async fn poll<F, Fut>(bound: Duration, mut done: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    while !done().await? {
        anyhow::ensure!(started.elapsed() < bound, "not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed())
}

/// Send one chat message through `base`; wait for its read-model row.
async fn message_applied(
    stage: &Stage,
    pool: &PgPool,
    base: &str,
    cast: &Cast,
    id: &str,
) -> anyhow::Result<()> {
    let r = stage
        .http
        .post(format!("{base}/api/v1/lessons/{}/messages", cast.lesson))
        .bearer_auth(&cast.students[0].token)
        .json(&json!({"client_message_id": id, "text": "failover"}))
        .send()
        .await?;
    anyhow::ensure!(
        r.status() == reqwest::StatusCode::CREATED,
        "message answered {}",
        r.status()
    );
    poll(Duration::from_secs(60), || async {
        Ok(sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE client_message_id = $1)",
        )
        .bind(id)
        .fetch_one(pool)
        .await?)
    })
    .await
    .context("the message never reached the read model")?;
    Ok(())
}

/// The failover drill.
pub async fn failover(common: &Common, revocations: usize) -> anyhow::Result<FailoverReport> {
    let stage = Stage::new(common).await?;
    let pool = stage.pool().await?;
    let (spec_a, spec_b) = (stage.spec("a")?, stage.spec("b")?);
    let mut a = stage.start(&spec_a).await?;
    let a_name = format!("lectern/{}/", a.pid());
    // The first process takes every projection's lock; wait until the
    // count holds still.
    let mut locks = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = held_by(&lock_holders(&pool).await?, &a_name);
        if held > 0 && held == locks {
            break;
        }
        locks = held;
        anyhow::ensure!(
            Instant::now() < deadline,
            "the first process never held the projections' locks"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let b = stage.start(&spec_b).await?;
    let b_name = format!("lectern/{}/", b.pid());
    let (base_a, base_b) = (spec_a.base(), spec_b.base());
    let cast = Cast::create(&stage.http, &base_a, 1, 1.max(common.students.min(2))).await?;

    // Revocation across processes.
    let email = cast.students[0].email.clone();
    let mut latencies = Vec::new();
    for _ in 0..revocations {
        let token = load::login(&stage.http, &base_a, &email).await?;
        let me = |base: &str| {
            stage
                .http
                .get(format!("{base}/api/v1/me"))
                .bearer_auth(&token)
                .send()
        };
        anyhow::ensure!(
            me(&base_b).await?.status() == reqwest::StatusCode::OK,
            "the second process refused a fresh token"
        );
        let r = stage
            .http
            .post(format!("{base_a}/api/v1/auth/logout"))
            .bearer_auth(&token)
            .send()
            .await?;
        anyhow::ensure!(
            r.status() == reqwest::StatusCode::OK,
            "logout answered {}",
            r.status()
        );
        let took = poll(Duration::from_secs(10), || async {
            Ok(me(&base_b).await?.status() == reqwest::StatusCode::UNAUTHORIZED)
        })
        .await
        .context("the second process kept accepting a logged-out token")?;
        latencies.push(took.as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);

    // Projection failover.
    let before = Instant::now();
    message_applied(&stage, &pool, &base_b, &cast, "failover-before").await?;
    let apply_before_kill_ms = ms(before.elapsed());
    let killed = Instant::now();
    a.kill9()?;
    let (takeover, applied) = tokio::join!(
        poll(Duration::from_secs(60), || async {
            Ok(held_by(&lock_holders(&pool).await?, &b_name) >= locks)
        }),
        async {
            message_applied(&stage, &pool, &base_b, &cast, "failover-after").await?;
            Ok::<_, anyhow::Error>(killed.elapsed())
        }
    );
    let takeover = takeover.context("the second process never took every lock")?;
    let applied = applied?;
    drop(b);
    pool.close().await;
    Ok(FailoverReport {
        drill: "failover",
        locks,
        apply_before_kill_ms,
        takeover_ms: ms(takeover),
        apply_after_kill_ms: ms(applied),
        revocations,
        revocation_p50_ms: round3(percentile(&latencies, 0.5)),
        revocation_max_ms: round3(latencies.last().copied().unwrap_or(0.0)),
    })
}

/// Run `drill`; its report as one JSON value.
pub async fn run(drill: &Drill) -> anyhow::Result<serde_json::Value> {
    Ok(match drill {
        Drill::Kill9 { common, kills } => serde_json::to_value(kill9(common, *kills).await?)?,
        Drill::PgRestart {
            common,
            outage_secs,
        } => serde_json::to_value(pg_restart(common, *outage_secs).await?)?,
        Drill::Failover {
            common,
            revocations,
        } => serde_json::to_value(failover(common, *revocations).await?)?,
    })
}
