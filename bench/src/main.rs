//! `lectern-bench`: Lectern's benchmarks, kept out of the server binary.
//!
//! Each subcommand prints one JSON line of figures; `scripts/bench` runs
//! them all on a temporary cluster and writes `BENCHMARKS.md`.
#![forbid(unsafe_code)]

mod auth;
mod classroom;
mod ledger;
mod reads;
mod realtime;
mod webhooks;

mod store;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lectern_api::config::DatabaseConfig;
use lectern_api::server::{self, Database};

/// mimalloc rather than glibc's malloc: the server allocates and frees many
/// small buffers per request on every thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lectern's benchmarks. Each prints one JSON line.
///
/// They use DATABASE_URL when it is set; without it, the private cluster
/// under LECTERN_DATA_DIR, as `lectern` does.
#[derive(Debug, Parser)]
#[command(name = "lectern-bench", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    database: DatabaseConfig,

    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Closed-loop commands through Lectern's store or the peer's
    /// (cqrs-es on postgres-es).
    Store(store::StoreBench),
    /// Time loading one long aggregate through its snapshot.
    Load(store::LoadBench),
    /// Authenticated reads and token refresh over HTTP, and the in-process
    /// cost of authentication plus the policy check.
    Auth(auth::AuthBench),
    /// Many clients drawing on one live board over HTTP, an op on a fresh
    /// and on a 100,000-op board, and lesson listing over 100,000 lessons.
    Classroom(classroom::ClassroomBench),
    /// Lesson-list throughput from the primary alone against a streaming
    /// replica (LECTERN_READ_DATABASE_URL), both on a private durable
    /// cluster of its own (DATABASE_URL is not used).
    Reads(reads::ReadsBench),
    /// The realtime gateway: drawing over sockets beside a bare broadcast
    /// relay, resume, idle sockets on a server process, and delivery across
    /// two server processes.
    Realtime(realtime::RealtimeBench),
    /// Verified Stripe webhook ingestion: open loop at a fixed rate beside a
    /// bare signature-verifying route, the lag until the invoice's read
    /// model shows each payment, and closed-loop capacity.
    Webhooks(webhooks::WebhooksBench),
    /// The verifiable ledger: the write side with and without the sealer,
    /// time travel on a long board, the sealer on a backlog, and offline
    /// verification of the exported bundle.
    Ledger(ledger::LedgerBench),
    /// A reliability drill: real `lectern serve` processes on a private,
    /// durable PostgreSQL of the drill's own (DATABASE_URL is not used).
    #[command(subcommand)]
    Drill(lectern_bench::drill::Drill),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lectern_api::telemetry::run_cli("lectern-bench", run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let line = match cli.command {
        // These start PostgreSQL clusters of their own.
        BenchCommand::Drill(drill) => lectern_bench::drill::run(&drill).await?.to_string(),
        BenchCommand::Reads(opts) => serde_json::to_string(&reads::run_reads(&opts).await?)?,
        // Enough connections that the clients, not the pool, are the limit.
        BenchCommand::Store(opts) => {
            let pool_size = opts.clients as u32 + 2;
            on_database(&cli.database, pool_size, |pool| async move {
                Ok(serde_json::to_string(
                    &store::run_store(pool, &opts).await?,
                )?)
            })
            .await?
        }
        BenchCommand::Load(opts) => {
            on_database(&cli.database, 0, |pool| async move {
                Ok(serde_json::to_string(&store::run_load(pool, &opts).await?)?)
            })
            .await?
        }
        BenchCommand::Auth(opts) => {
            on_database(&cli.database, 0, |pool| async move {
                Ok(serde_json::to_string(&auth::run_auth(pool, &opts).await?)?)
            })
            .await?
        }
        BenchCommand::Realtime(opts) => {
            let pool_size = (opts.drawers + opts.watchers) as u32 + 8;
            let url = cli.database.database_url.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "the realtime benchmark needs DATABASE_URL (its server processes share it)"
                )
            })?;
            on_database(&cli.database, pool_size, |pool| async move {
                Ok(serde_json::to_string(
                    &realtime::run_realtime(pool, &url, &opts).await?,
                )?)
            })
            .await?
        }
        BenchCommand::Webhooks(opts) => {
            let pool_size = opts.clients as u32 + 8;
            on_database(&cli.database, pool_size, |pool| async move {
                Ok(serde_json::to_string(
                    &webhooks::run_webhooks(pool, &opts).await?,
                )?)
            })
            .await?
        }
        BenchCommand::Ledger(opts) => {
            let pool_size = opts.clients as u32 + 8;
            on_database(&cli.database, pool_size, |pool| async move {
                Ok(serde_json::to_string(
                    &ledger::run_ledger(pool, &opts).await?,
                )?)
            })
            .await?
        }
        BenchCommand::Classroom(opts) => {
            let pool_size = opts.clients as u32 + 8;
            on_database(&cli.database, pool_size, |pool| async move {
                Ok(serde_json::to_string(
                    &classroom::run_classroom(pool, &opts).await?,
                )?)
            })
            .await?
        }
    };
    println!("{line}");
    Ok(())
}

/// Run `bench` on the configured database, migrated, with a pool of at
/// least `pool_size` connections; then close it.
async fn on_database<F, Fut>(
    config: &DatabaseConfig,
    pool_size: u32,
    bench: F,
) -> anyhow::Result<String>
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let mut database = config.clone();
    database.pool_size = database.pool_size.max(pool_size);
    let db = Database::open(&database).await?;
    let result = async {
        server::migrate(&db.pool).await?;
        bench(db.pool.clone()).await
    }
    .await;
    db.close().await;
    result
}
