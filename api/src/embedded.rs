//! A private PostgreSQL cluster started from the system's server binaries.
//!
//! `lectern serve` without `DATABASE_URL` owns one under `LECTERN_DATA_DIR`:
//! it persists between runs, uses password authentication on loopback, and is
//! stopped on shutdown when this process started it. The test suite and the
//! benchmark script use a temporary one that removes itself.
//!
//! PostgreSQL refuses to run as root, so when started as root the server runs
//! as the unprivileged `postgres` account the Debian package creates.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use rand::distr::{Alphanumeric, SampleString};

/// Where Debian and Ubuntu install the server binaries.
const DEBIAN_BIN_GLOB: &str = "/usr/lib/postgresql";

/// The hint printed when no server binaries are found.
pub const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH \
or under /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: `apt-get install postgresql`) or set \
DATABASE_URL to an existing PostgreSQL.";

/// A running cluster this process can connect to.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    pgdata: PathBuf,
    port: u16,
    user: String,
    password: Option<String>,
    run_as: Option<(u32, u32)>,
    started_here: bool,
    /// The `-c` settings it was started with, for `start_again`.
    settings: Vec<String>,
}

/// Locate `initdb`, `pg_ctl` and `postgres`: first on PATH, then the newest
/// version under /usr/lib/postgresql.
pub fn find_binaries() -> anyhow::Result<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| has_all(d)) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(DEBIAN_BIN_GLOB)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_all(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).context(INSTALL_HINT)
}

/// The effective uid of this process, from /proc.
fn current_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// uid and gid of a local account, from /etc/passwd.
fn account(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

/// When running as root, the account the server must run as.
fn unprivileged_account() -> anyhow::Result<Option<(u32, u32)>> {
    if current_uid() != Some(0) {
        return Ok(None);
    }
    account("postgres").map(Some).context(
        "running as root, and PostgreSQL refuses to run as root: create an unprivileged `postgres` account \
         (the Debian package does) or run Lectern as another user",
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EmbeddedPostgres {
    /// Where `program` is: beside the server binaries, or beside where
    /// `postgres` really lives (the bin dir may hold links to a few only).
    fn program(&self, program: &str) -> PathBuf {
        let here = self.bin_dir.join(program);
        if here.is_file() {
            return here;
        }
        fs::canonicalize(self.bin_dir.join("postgres"))
            .ok()
            .and_then(|real| real.parent().map(|dir| dir.join(program)))
            .filter(|there| there.is_file())
            .unwrap_or(here)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.program(program));
        cmd.current_dir(&self.pgdata)
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("could not run {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Make `dir` a directory the server account owns, mode 0700.
    fn own_dir(&self, dir: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if let Some((uid, gid)) = self.run_as {
            chown(dir, Some(uid), Some(gid))?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        Ok(())
    }

    fn initdb(&self, auth: &str, password: Option<&str>) -> anyhow::Result<()> {
        self.own_dir(&self.pgdata)?;
        let mut args = vec![
            "-D",
            path_str(&self.pgdata)?,
            "-U",
            &self.user,
            "-E",
            "UTF8",
            "--locale=C",
            "-A",
            auth,
        ];
        // initdb wants the data directory empty, so the password file sits
        // beside it, owned by the server account, for the length of the call.
        let pwfile = self.pgdata.with_extension("pwfile");
        if let Some(pw) = password {
            write_private(&pwfile, pw)?;
            if let Some((uid, gid)) = self.run_as {
                chown(&pwfile, Some(uid), Some(gid))?;
            }
            args.push("--pwfile");
            args.push(path_str(&pwfile)?);
        }
        let result = self.run("initdb", &args);
        let _ = fs::remove_file(&pwfile);
        result
    }

    fn running_port(&self) -> Option<u16> {
        let status = self
            .command("pg_ctl")
            .args(["status", "-D"])
            .arg(&self.pgdata)
            .output()
            .ok()?;
        if !status.status.success() {
            return None;
        }
        let pid = fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        pid.lines().nth(3)?.trim().parse().ok()
    }

    fn start_server(&mut self, settings: &[&str]) -> anyhow::Result<()> {
        if let Some(port) = self.running_port() {
            self.port = port;
            self.started_here = false;
            return Ok(());
        }
        self.port = free_port()?;
        self.start_on_port(settings)
    }

    /// Start the stopped server again on the port it had, with the settings
    /// it had, as after a restart or a failover: clients reconnect to the
    /// same address.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let settings = self.settings.clone();
        let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
        self.start_on_port(&settings)
    }

    fn start_on_port(&mut self, settings: &[&str]) -> anyhow::Result<()> {
        self.settings = settings.iter().map(|s| (*s).to_owned()).collect();
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
            self.port
        );
        for s in settings {
            options.push_str(" -c ");
            options.push_str(s);
        }
        let log = self.pgdata.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                path_str(&self.pgdata)?,
                "-l",
                path_str(&log)?,
                "-o",
                &options,
            ],
        )
        .with_context(|| format!("PostgreSQL did not start; see {}", log.display()))?;
        self.started_here = true;
        Ok(())
    }

    /// Start (or join) the persistent cluster under `data_dir`, creating it on
    /// first use. Its password is generated once and kept in the data
    /// directory, readable only by its owner.
    pub fn start_persistent(data_dir: &Path) -> anyhow::Result<Self> {
        let bin_dir = find_binaries()?;
        let run_as = unprivileged_account()?;
        fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let data_dir = fs::canonicalize(data_dir)?;
        if run_as.is_some() {
            // The server account only needs to pass through.
            fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o711))?;
        }
        let password_file = data_dir.join("postgres-password");
        let mut pg = Self {
            bin_dir,
            pgdata: data_dir.join("postgres"),
            port: 0,
            user: "lectern".into(),
            password: None,
            run_as,
            started_here: false,
            settings: Vec::new(),
        };
        if !pg.pgdata.join("PG_VERSION").exists() {
            let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
            write_private(&password_file, &password)?;
            pg.initdb("scram-sha-256", Some(&password))?;
        }
        pg.password = Some(
            fs::read_to_string(&password_file)
                .with_context(|| format!("cannot read {}", password_file.display()))?
                .trim()
                .to_owned(),
        );
        pg.start_server(&[])?;
        Ok(pg)
    }

    /// Start a throwaway cluster in a new directory under the system temp dir.
    /// Unless `durable`, it is tuned for tests (no fsync). A watchdog process
    /// stops it and deletes the directory once this process has exited,
    /// however it exits.
    pub fn start_temporary(durable: bool) -> anyhow::Result<Self> {
        let bin_dir = find_binaries()?;
        let run_as = unprivileged_account()?;
        let name = format!(
            "lectern-pg-{}-{}",
            std::process::id(),
            Alphanumeric
                .sample_string(&mut rand::rng(), 6)
                .to_lowercase()
        );
        let mut pg = Self {
            bin_dir,
            pgdata: std::env::temp_dir().join(name),
            port: 0,
            user: "lectern".into(),
            password: None,
            run_as,
            started_here: false,
            settings: Vec::new(),
        };
        pg.initdb("trust", None)?;
        let fast = [
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
        ];
        let mut settings = vec!["max_connections=400"];
        if !durable {
            settings.extend(fast);
        }
        pg.start_server(&settings)?;
        pg.watch()?;
        Ok(pg)
    }

    /// Start a watchdog process that stops this cluster and deletes its
    /// directory once this process has exited, however it exits.
    fn watch(&self) -> anyhow::Result<()> {
        let pg = self;
        let script = format!(
            "while [ -d /proc/{parent} ]; do sleep 1; done; \"{bin}/pg_ctl\" stop -D \"{data}\" -m immediate >/dev/null 2>&1; rm -rf \"{data}\"",
            parent = std::process::id(),
            bin = pg.bin_dir.display(),
            data = pg.pgdata.display(),
        );
        let mut watchdog = Command::new("sh");
        watchdog
            .args(["-c", &script])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some((uid, gid)) = pg.run_as {
            watchdog.uid(uid).gid(gid);
        }
        watchdog
            .spawn()
            .context("could not start the cluster's watchdog")?;
        Ok(())
    }

    /// Start a hot-standby replica of `primary` (a temporary cluster of
    /// this process): a base backup taken with `pg_basebackup -R`, which
    /// writes the streaming-replication settings, started on a port of its
    /// own. Stopped and deleted with this process, as the primary is.
    pub fn start_replica_of(primary: &EmbeddedPostgres) -> anyhow::Result<Self> {
        let name = format!(
            "lectern-replica-{}-{}",
            std::process::id(),
            Alphanumeric
                .sample_string(&mut rand::rng(), 6)
                .to_lowercase()
        );
        let mut replica = Self {
            bin_dir: primary.bin_dir.clone(),
            pgdata: std::env::temp_dir().join(name),
            port: 0,
            user: primary.user.clone(),
            password: primary.password.clone(),
            run_as: primary.run_as,
            started_here: false,
            settings: Vec::new(),
        };
        replica.own_dir(&replica.pgdata)?;
        let port = primary.port.to_string();
        let mut backup = replica.command("pg_basebackup");
        backup.current_dir("/").args([
            "-D",
            path_str(&replica.pgdata)?,
            "-R",
            "-X",
            "stream",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            &replica.user,
        ]);
        let out = backup.output().with_context(|| {
            format!(
                "could not run {}",
                replica.program("pg_basebackup").display()
            )
        })?;
        if !out.status.success() {
            bail!(
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        replica.start_server(&["fsync=off", "hot_standby=on", "max_connections=400"])?;
        replica.watch()?;
        Ok(replica)
    }

    /// A connection URL for database `db`.
    pub fn url(&self, db: &str) -> String {
        match &self.password {
            Some(pw) => format!(
                "postgres://{}:{}@127.0.0.1:{}/{}",
                self.user, pw, self.port, db
            ),
            None => format!("postgres://{}@127.0.0.1:{}/{}", self.user, self.port, db),
        }
    }

    /// The directory holding the server binaries (and pgbench).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The port the server listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether this process started the server (and so should stop it).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// Stop the server if this process started it, waiting for a clean
    /// shutdown.
    pub fn stop(&self) -> anyhow::Result<()> {
        if !self.started_here {
            return Ok(());
        }
        self.run(
            "pg_ctl",
            &[
                "stop",
                "-w",
                "-t",
                "60",
                "-m",
                "fast",
                "-D",
                path_str(&self.pgdata)?,
            ],
        )
    }
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("paths must be valid UTF-8")
}

/// Whether Linux's autogroups are on (`kernel.sched_autogroup_enabled`).
/// They share the CPUs between sessions before threads, and each
/// PostgreSQL backend is a session of its own, so on a host Lectern shares
/// with its PostgreSQL, Lectern's whole process weighs as much as one
/// backend (docs/DEPLOYMENT.md, "Sharing a host's CPUs with PostgreSQL").
pub fn autogroups_on() -> bool {
    fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled").is_ok_and(|v| v.trim() == "1")
}

/// Write `contents` to `path`, readable only by this user.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut f =
        fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// Create database `name` on the cluster at `admin_url` unless it exists.
pub async fn ensure_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT exists(SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE \"{}\"", name.replace('"', "")))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(())
}
