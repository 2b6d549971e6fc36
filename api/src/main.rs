//! The `lectern` command.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use lectern_api::config::{AuthConfig, DatabaseConfig, HttpConfig, WorkerConfig};
use lectern_api::server::{self, Database};
use lectern_projections::runner::{self, RunnerConfig, Runners};
use lectern_projections::Wakeup;
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's malloc: the server allocates and frees many
/// small buffers per request on every thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

// Parsed once at start-up: the size of the `Serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
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
    /// The verifiable ledger: keys, export bundles, verification.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print a new checkpoint-signing key (for LECTERN_LEDGER_KEY) on
    /// standard output; its public key goes to standard error (and to
    /// --public-out). Touches no database.
    Keygen {
        /// The log's origin: the name in its checkpoints.
        #[arg(long, default_value = "lectern.localhost/ledger")]
        origin: String,
        /// Also write the public key to this file.
        #[arg(long)]
        public_out: Option<std::path::PathBuf>,
    },
    /// Write an export bundle: the events as JSON lines in feed order with
    /// their exact envelope text and what the ledger sealed for each, every
    /// signed checkpoint, and the public key.
    Export {
        /// The directory to write (created; must not hold a bundle already).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Start at this sequence number (the size of a checkpoint you
        /// already verified); the bundle then carries the tree's state there.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Verify an export bundle offline (no database, no network), or the
    /// database itself with --online. Exits 0 when everything verifies;
    /// otherwise prints each finding and exits with the first one's status
    /// (10 payload edited, 11 metadata edited, 12 another column edited,
    /// 13 inserted, 14 deleted, 15 reordered, 16 truncated, 17 bad
    /// signature, 18 root mismatch, 19 inconsistent with the trusted
    /// checkpoint, 20 malformed); 1 when it cannot run (an unreadable
    /// bundle or key), 2 for a bad argument.
    Verify {
        /// The bundle's directory.
        #[arg(long, required_unless_present = "online", conflicts_with = "online")]
        bundle: Option<std::path::PathBuf>,
        /// The ledger's public key (`<origin>+<id>+<base64>`), your own copy.
        /// Required offline; with --online the keys recorded in the database
        /// are used when it is absent.
        #[arg(long, required_unless_present = "online")]
        pubkey: Option<std::path::PathBuf>,
        /// A checkpoint you kept from before: the log must extend it.
        #[arg(long)]
        trusted: Option<std::path::PathBuf>,
        /// Verify the database (DATABASE_URL or the embedded cluster) against
        /// its checkpoints instead of a bundle.
        #[arg(long)]
        online: bool,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    http: HttpConfig,
    #[command(flatten)]
    workers: WorkerConfig,
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

/// Run the command; a failure is one line on stderr and exit status 1.
fn main() -> ExitCode {
    let cli = Cli::parse();
    lectern_api::telemetry::run_cli("lectern", run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            server::serve(&cli.database, args.http, &args.workers, &args.auth).await
        }
        Command::Users(UsersCommand::CreateAdmin {
            email,
            display_name,
        }) => create_admin(&cli.database, &email, &display_name).await,
        Command::Migrate => {
            with_database(&cli.database, async |_| {
                println!("migrations applied");
                Ok(())
            })
            .await
        }
        Command::Audit(cmd) => audit(&cli.database, cmd).await,
        Command::Projections(cmd) => {
            with_database(&cli.database, async |db| match cmd {
                ProjectionsCommand::Status => {
                    let all = lectern_projections::status::all(&db.pool).await?;
                    println!("{}", serde_json::to_string_pretty(&all)?);
                    Ok(())
                }
                ProjectionsCommand::Rebuild { name, wait_secs } => {
                    rebuild(db, &name, wait_secs).await
                }
            })
            .await
        }
    }
}

async fn audit(config: &DatabaseConfig, cmd: AuditCommand) -> anyhow::Result<()> {
    use lectern_api::audit_cli;
    match cmd {
        AuditCommand::Keygen { origin, public_out } => {
            audit_cli::keygen(&origin, public_out.as_deref())
        }
        AuditCommand::Export { out, from } => {
            with_database(config, async |db| {
                let exported = audit_cli::export(&db.pool, &out, from).await?;
                println!(
                    "wrote {}: {} events from seq {from}, {} checkpoints",
                    out.display(),
                    exported.lines,
                    exported.checkpoints.len()
                );
                Ok(())
            })
            .await
        }
        AuditCommand::Verify {
            bundle,
            pubkey,
            trusted,
            online,
        } => {
            let outcome = if online {
                let mut outcome = None;
                with_database(config, async |db| {
                    outcome = Some(
                        audit_cli::verify_online(&db.pool, pubkey.as_deref(), trusted.as_deref())
                            .await?,
                    );
                    Ok(())
                })
                .await?;
                outcome.unwrap_or_default()
            } else {
                let (Some(bundle), Some(pubkey)) = (bundle, pubkey) else {
                    bail!("--bundle and --pubkey are required without --online");
                };
                audit_cli::verify_bundle(&bundle, &pubkey, trusted.as_deref())?
            };
            if outcome != 0 {
                std::process::exit(i32::from(outcome));
            }
            Ok(())
        }
    }
}

/// Open the database, apply migrations, run `f`, and close the database
/// (stopping the embedded cluster if this process started it) whatever `f`
/// answered.
async fn with_database<F>(config: &DatabaseConfig, f: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&Database) -> anyhow::Result<()>,
{
    let db = Database::open(config).await?;
    let result = match server::migrate(&db.pool).await {
        Ok(()) => f(&db).await,
        Err(e) => Err(e),
    };
    db.close().await;
    result
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
    with_database(config, async |db| {
        let identity = lectern_commands::identity::IdentityService::new(db.pool.clone());
        let meta = lectern_domain::EventMetadata::system(&uuid::Uuid::new_v4().to_string());
        match identity
            .register(&email, &password, &name, Role::Admin, &meta)
            .await
        {
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
    })
    .await
}
