//! The `lectern` command.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use lectern_api::bench::{self, LoadBench, StoreBench};
use lectern_api::bench_auth::{self, AuthBench};
use lectern_api::bench_classroom::{self, ClassroomBench};
use lectern_api::config::{AuthConfig, DatabaseConfig, HttpConfig};
use lectern_api::server::{self, Database};
use lectern_projections::runner::{self, RunnerConfig, Runners, Wakeup};
use tokio_util::sync::CancellationToken;

/// Lectern: an event-sourced backend for live-tutoring platforms.
///
/// Every command uses DATABASE_URL when it is set. Without it, Lectern starts
/// (or joins) a private PostgreSQL cluster under LECTERN_DATA_DIR, using the
/// PostgreSQL server binaries installed on this machine.
#[derive(Debug, Parser)]
#[command(name = "lectern", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    database: DatabaseConfig,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API and the projection workers; migrations run first.
    Serve(ServeArgs),
    /// Manage accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Inspect and rebuild projections.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Benchmarks of the write side.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    http: HttpConfig,
    #[command(flatten)]
    auth: AuthConfig,
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Create an admin account, reading its password from standard input (one
    /// line), so it never appears in the shell history or the process list.
    /// Records the same events as a registration.
    CreateAdmin {
        /// The admin's email address.
        #[arg(long)]
        email: String,
        /// The name shown to other users.
        #[arg(long, default_value = "Administrator")]
        display_name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Print every projection's status, position, lag and last error as JSON.
    Status,
    /// Rebuild a projection from position zero into new tables, then swap them
    /// in. The API keeps serving the old tables meanwhile. If a server runs the
    /// projection, it does the work; otherwise this command does.
    Rebuild {
        /// The projection's name (see `lectern projections status`).
        name: String,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Closed-loop commands through a store; prints one JSON line.
    Store(StoreBench),
    /// Time loading one long aggregate through its snapshot; prints one JSON line.
    Load(LoadBench),
    /// Authenticated reads and token refresh over HTTP, and the in-process
    /// cost of authentication plus the policy check; prints one JSON line.
    Auth(AuthBench),
    /// Many clients drawing on one live board over HTTP, an op on a fresh
    /// and on a 100,000-op board, and lesson listing over 100,000 lessons;
    /// prints one JSON line.
    Classroom(ClassroomBench),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    lectern_api::telemetry::init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => server::serve(&cli.database, args.http, &args.auth).await,
        Command::Users(UsersCommand::CreateAdmin {
            email,
            display_name,
        }) => create_admin(&cli.database, &email, &display_name).await,
        Command::Migrate => {
            let db = Database::open(&cli.database).await?;
            let result = server::migrate(&db.pool).await;
            db.close().await;
            result?;
            println!("migrations applied");
            Ok(())
        }
        Command::Projections(cmd) => {
            let db = Database::open(&cli.database).await?;
            let result = async {
                server::migrate(&db.pool).await?;
                match cmd {
                    ProjectionsCommand::Status => {
                        let all = lectern_projections::status::all(&db.pool).await?;
                        println!("{}", serde_json::to_string_pretty(&all)?);
                        Ok(())
                    }
                    ProjectionsCommand::Rebuild { name, wait_secs } => {
                        rebuild(&db, &name, wait_secs).await
                    }
                }
            }
            .await;
            db.close().await;
            result
        }
        Command::Bench(cmd) => {
            let mut database = cli.database.clone();
            if let BenchCommand::Store(opts) = &cmd {
                database.pool_size = database.pool_size.max(opts.clients as u32 + 2);
            }
            if let BenchCommand::Classroom(opts) = &cmd {
                database.pool_size = database.pool_size.max(opts.clients as u32 + 8);
            }
            let db = Database::open(&database).await?;
            let result = async {
                server::migrate(&db.pool).await?;
                let line = match cmd {
                    BenchCommand::Store(opts) => {
                        serde_json::to_string(&bench::run_store(db.pool.clone(), &opts).await?)?
                    }
                    BenchCommand::Load(opts) => {
                        serde_json::to_string(&bench::run_load(db.pool.clone(), &opts).await?)?
                    }
                    BenchCommand::Auth(opts) => {
                        serde_json::to_string(&bench_auth::run_auth(db.pool.clone(), &opts).await?)?
                    }
                    BenchCommand::Classroom(opts) => serde_json::to_string(
                        &bench_classroom::run_classroom(db.pool.clone(), &opts).await?,
                    )?,
                };
                println!("{line}");
                Ok(())
            }
            .await;
            db.close().await;
            result
        }
    }
}

async fn rebuild(db: &Database, name: &str, wait_secs: u64) -> anyhow::Result<()> {
    let Some(projection) = lectern_projections::all()
        .into_iter()
        .find(|p| p.name() == name)
    else {
        let names: Vec<_> = lectern_projections::all()
            .iter()
            .map(|p| p.name())
            .collect();
        bail!("no projection named {name:?}; known: {}", names.join(", "));
    };
    runner::request_rebuild(&db.pool, name).await?;
    // Stand by for the projection: if no server holds it, this runner does
    // the rebuild; if one does, it stays in standby while that one works.
    let cancel = CancellationToken::new();
    let runners = Runners {
        connect: (*db.pool.connect_options()).clone(),
        config: RunnerConfig::default(),
        wakeup: Wakeup::polling_only(),
        cancel: cancel.clone(),
    };
    let handle = runners.spawn(projection);
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    let outcome = loop {
        if !runner::rebuild_requested(&db.pool, name).await? {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "the rebuild of {name} did not finish within {wait_secs} s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    cancel.cancel();
    let _ = handle.task.await;
    outcome?;
    let status = lectern_projections::status::all(&db.pool).await?;
    if let Some(s) = status.iter().find(|s| s.name == name) {
        println!("{}", serde_json::to_string_pretty(s)?);
    }
    Ok(())
}

async fn create_admin(
    config: &DatabaseConfig,
    email: &str,
    display_name: &str,
) -> anyhow::Result<()> {
    use lectern_domain::identity::{DisplayName, Email, Password, Role};
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
    let name =
        DisplayName::parse(display_name).map_err(|e| anyhow::anyhow!("--display-name {e}"))?;
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = Password::parse(line.trim_end_matches(['\r', '\n']))
        .map_err(|e| anyhow::anyhow!("the password {e}"))?;
    let db = Database::open(config).await?;
    server::migrate(&db.pool).await?;
    let identity = lectern_commands::identity::IdentityService::new(db.pool.clone());
    let meta =
        lectern_domain::EventMetadata::system("CreateAdmin", &uuid::Uuid::new_v4().to_string());
    let result = identity
        .register(&email, &password, &name, Role::Admin, &meta)
        .await;
    db.close().await;
    match result {
        Ok(committed) => {
            println!(
                "{}",
                serde_json::json!({"id": committed.aggregate_id, "role": "admin"})
            );
            Ok(())
        }
        Err(lectern_commands::identity::IdentityError::EmailTaken) => {
            bail!("an account with this email already exists")
        }
        Err(e) => Err(e.into()),
    }
}
