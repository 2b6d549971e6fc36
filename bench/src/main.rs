//! `lectern-bench`: Lectern's benchmarks, kept out of the server binary.
//!
//! Each subcommand prints one JSON line of figures; `scripts/bench` runs
//! them all on a temporary cluster and writes `BENCHMARKS.md`.
#![forbid(unsafe_code)]

mod auth;
mod classroom;

mod store;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lectern_api::config::DatabaseConfig;
use lectern_api::server::{self, Database};

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
    if let BenchCommand::Drill(drill) = &cli.command {
        println!("{}", lectern_bench::drill::run(drill).await?);
        return Ok(());
    }
    let mut database = cli.database.clone();
    // Enough connections that the clients, not the pool, are the limit.
    match &cli.command {
        BenchCommand::Store(opts) => {
            database.pool_size = database.pool_size.max(opts.clients as u32 + 2);
        }
        BenchCommand::Classroom(opts) => {
            database.pool_size = database.pool_size.max(opts.clients as u32 + 8);
        }
        BenchCommand::Load(_) | BenchCommand::Auth(_) | BenchCommand::Drill(_) => {}
    }
    let db = Database::open(&database).await?;
    let result = async {
        server::migrate(&db.pool).await?;
        let pool = db.pool.clone();
        let line = match cli.command {
            BenchCommand::Store(opts) => {
                serde_json::to_string(&store::run_store(pool, &opts).await?)?
            }
            BenchCommand::Load(opts) => {
                serde_json::to_string(&store::run_load(pool, &opts).await?)?
            }
            BenchCommand::Auth(opts) => serde_json::to_string(&auth::run_auth(pool, &opts).await?)?,
            BenchCommand::Classroom(opts) => {
                serde_json::to_string(&classroom::run_classroom(pool, &opts).await?)?
            }
            BenchCommand::Drill(_) => unreachable!("run above"),
        };
        println!("{line}");
        Ok(())
    }
    .await;
    db.close().await;
    result
}
