//! `lectern-bench store` and `load`: closed-loop benchmarks of the write
//! side, beside the peer (cqrs-es's `CqrsFramework` on postgres-es's stock
//! store) and the PostgreSQL limit (pgbench, one single-row insert per
//! transaction).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, DomainEvent};
use lectern_commands::store::NewEvent;
use lectern_commands::{CommandBus, CommandError, DispatchConfig, PgEventStore};
use lectern_domain::EventMetadata;
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use lectern_bench::stats::{percentile, round3};

/// The benchmark's aggregate: an account that counts its deposits.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchAccount {
    pub deposits: u64,
    pub balance: i64,
}

/// Deposit `amount` minor units.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deposit {
    pub amount: i64,
}

impl lectern_domain::CommandName for Deposit {
    fn name(&self) -> &'static str {
        "Deposit"
    }
}

/// A deposit was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deposited {
    pub amount: i64,
}

impl DomainEvent for Deposited {
    fn event_type(&self) -> String {
        "Deposited".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

/// A refused deposit.
#[derive(Debug, thiserror::Error)]
#[error("amount must be positive")]
pub struct NotPositive;

impl Aggregate for BenchAccount {
    const TYPE: &'static str = "BenchAccount";
    type Command = Deposit;
    type Event = Deposited;
    type Error = NotPositive;
    type Services = ();

    async fn handle(
        &mut self,
        command: Deposit,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), NotPositive> {
        if command.amount <= 0 {
            return Err(NotPositive);
        }
        sink.write(
            Deposited {
                amount: command.amount,
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Deposited) {
        self.deposits += 1;
        self.balance += event.amount;
    }
}

/// Which store runs the commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Lectern's store: group commit, cache, one round trip per command.
    Lectern,
    /// cqrs-es CqrsFramework on postgres-es's PostgresEventRepository.
    Peer,
}

/// Which aggregates the clients write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each client writes to its own long-lived aggregate.
    Distinct,
    /// Every client writes to one aggregate.
    Shared,
    /// Short aggregates: each client writes `--events-per-aggregate` events
    /// to an aggregate, then moves on to a new one. The peer loads every
    /// event of an aggregate before each command, so this is where it does
    /// best.
    Short,
}

/// `lectern-bench store` options.
#[derive(Debug, Clone, Args)]
pub struct StoreBench {
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Measured duration.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, value_enum, default_value_t = Mode::Distinct)]
    pub mode: Mode,
    /// Snapshot every K events (0: no snapshots).
    #[arg(long, default_value_t = 0)]
    pub snapshot_every: u64,
    #[arg(long, value_enum, default_value_t = StoreKind::Lectern)]
    pub store: StoreKind,
    /// Short mode: the events each aggregate gets before its client moves on.
    #[arg(long, default_value_t = 1)]
    pub events_per_aggregate: u64,
    /// Lectern only: append statements in flight at once for the aggregate
    /// type (`DispatchConfig::concurrent_appends`; default: its default).
    #[arg(long)]
    pub concurrent_appends: Option<usize>,
}

/// One benchmark run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StoreResult {
    pub store: StoreKind,
    pub mode: Mode,
    pub clients: usize,
    pub snapshot_every: u64,
    /// Short mode only: events per aggregate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_per_aggregate: Option<u64>,
    pub commands: u64,
    pub commands_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Conflicts that reached the caller (the peer's callers retry them).
    pub conflicts: u64,
}

enum Runner {
    Lectern(CommandBus<BenchAccount>),
    Peer(
        Box<
            CqrsFramework<BenchAccount, PersistedEventStore<PostgresEventRepository, BenchAccount>>,
        >,
    ),
}

impl Runner {
    /// Run one deposit; Err(true) on a conflict, Err(false) on another error.
    async fn deposit(&self, id: &str, meta: &EventMetadata) -> Result<(), bool> {
        let cmd = Deposit { amount: 1 };
        match self {
            Self::Lectern(s) => match s.execute(id, cmd, meta.clone()).await {
                Ok(_) => Ok(()),
                Err(CommandError::Conflict) => Err(true),
                Err(_) => Err(false),
            },
            Self::Peer(f) => match f.execute_with_metadata(id, cmd, meta.to_map()).await {
                Ok(()) => Ok(()),
                Err(AggregateError::AggregateConflict) => Err(true),
                Err(_) => Err(false),
            },
        }
    }
}

/// Run the store benchmark on `pool` and return its figures.
pub async fn run_store(pool: PgPool, opts: &StoreBench) -> anyhow::Result<StoreResult> {
    let runner = Arc::new(match opts.store {
        StoreKind::Lectern => {
            let store =
                PgEventStore::<BenchAccount>::new(pool.clone()).with_snapshots(opts.snapshot_every);
            let mut config = DispatchConfig::default();
            if let Some(n) = opts.concurrent_appends {
                config.concurrent_appends = n;
            }
            Runner::Lectern(CommandBus::new(store, (), config))
        }
        StoreKind::Peer => {
            let repo = PostgresEventRepository::new(pool.clone());
            let store = if opts.snapshot_every > 0 {
                PersistedEventStore::new_snapshot_store(repo, opts.snapshot_every as usize)
            } else {
                PersistedEventStore::new_event_store(repo)
            };
            Runner::Peer(Box::new(CqrsFramework::new(store, vec![], ())))
        }
    });
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let conflicts = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let mut tasks = Vec::new();
    for client in 0..opts.clients {
        let runner = Arc::clone(&runner);
        let conflicts = Arc::clone(&conflicts);
        let (mode, per_aggregate) = (opts.mode, opts.events_per_aggregate.max(1));
        let run_id = run_id.clone();
        let id_for = move |n: u64| match mode {
            Mode::Distinct => format!("bench-{run_id}-{client}"),
            Mode::Shared => format!("bench-{run_id}"),
            Mode::Short => format!("bench-{run_id}-{client}-{}", n / per_aggregate),
        };
        tasks.push(tokio::spawn(async move {
            let meta = EventMetadata::system(&id_for(0)).for_command("Deposit");
            let mut latencies = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                let id = id_for(n);
                n += 1;
                let started = Instant::now();
                loop {
                    match runner.deposit(&id, &meta).await {
                        Ok(()) => break,
                        Err(true) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(false) => anyhow::bail!("a benchmark command failed"),
                    }
                }
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok(StoreResult {
        store: opts.store,
        mode: opts.mode,
        clients: opts.clients,
        snapshot_every: opts.snapshot_every,
        events_per_aggregate: (opts.mode == Mode::Short)
            .then_some(opts.events_per_aggregate.max(1)),
        commands: all.len() as u64,
        commands_per_sec: round3(all.len() as f64 / elapsed),
        p50_ms: round3(percentile(&all, 0.50)),
        p99_ms: round3(percentile(&all, 0.99)),
        conflicts: conflicts.load(Ordering::Relaxed),
    })
}

/// `lectern-bench load` options.
#[derive(Debug, Clone, Args)]
pub struct LoadBench {
    /// Events in the aggregate.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Snapshot interval used while writing them.
    #[arg(long, default_value_t = 100)]
    pub snapshot_every: u64,
    /// Timed loads.
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
}

/// Figures for loading one long aggregate.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub events: u64,
    pub snapshot_every: u64,
    pub snapshot_p50_ms: f64,
    pub snapshot_p99_ms: f64,
    pub replay_p50_ms: f64,
    pub state_matches_replay: bool,
}

/// Write an aggregate of `events` events, then time loading it through its
/// snapshot and by replaying every event.
pub async fn run_load(pool: PgPool, opts: &LoadBench) -> anyhow::Result<LoadResult> {
    let store = PgEventStore::<BenchAccount>::new(pool).with_snapshots(opts.snapshot_every);
    let id = format!("bench-load-{}", uuid::Uuid::new_v4().simple());
    let meta = EventMetadata::system(&id).for_command("Deposit");
    let mut state = BenchAccount::default();
    let mut version = 0;
    let chunk = 1000;
    while version < opts.events {
        let n = chunk.min(opts.events - version);
        let payloads: Vec<Deposited> = (0..n).map(|_| Deposited { amount: 1 }).collect();
        for p in &payloads {
            state.apply(p.clone());
        }
        let new: Vec<_> = payloads
            .iter()
            .map(|payload| NewEvent {
                payload,
                metadata: &meta,
            })
            .collect();
        store.append(&id, version, &new, Some(&state)).await?;
        version += n;
    }
    let timed =
        |samples: &mut Vec<f64>, t: Instant| samples.push(t.elapsed().as_secs_f64() * 1000.0);
    let mut snap = Vec::new();
    let mut loaded = None;
    for _ in 0..opts.iterations {
        let t = Instant::now();
        loaded = Some(store.load(&id).await?);
        timed(&mut snap, t);
    }
    let mut replay = Vec::new();
    let mut replayed = None;
    for _ in 0..opts.iterations.min(5) {
        let t = Instant::now();
        replayed = Some(store.load_from_events(&id).await?);
        timed(&mut replay, t);
    }
    snap.sort_by(f64::total_cmp);
    replay.sort_by(f64::total_cmp);
    let matches = matches!((&loaded, &replayed), (Some(a), Some(b)) if a.aggregate == b.aggregate && a.aggregate == state);
    Ok(LoadResult {
        events: opts.events,
        snapshot_every: opts.snapshot_every,
        snapshot_p50_ms: round3(percentile(&snap, 0.5)),
        snapshot_p99_ms: round3(percentile(&snap, 0.99)),
        replay_p50_ms: round3(percentile(&replay, 0.5)),
        state_matches_replay: matches,
    })
}
