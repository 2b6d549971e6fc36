//! `lectern serve` as a real process the drills can kill, and the private
//! PostgreSQL they can stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The `lectern` binary beside the running one (`target/<profile>/`), which
/// is where cargo puts both.
pub fn sibling_lectern() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("the running binary's path")?;
    let dir = exe.parent().context("a directory")?;
    // A test binary lives one level further down, in `deps/`.
    for candidate in [dir.join("lectern"), dir.join("..").join("lectern")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no `lectern` binary beside {}; build it (`cargo build --release --bin lectern`) or pass --server-bin",
        exe.display()
    )
}

/// A free loopback address.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// How to start one `lectern serve` process. Restarts reuse the same
/// address, as a supervisor restarting a deployed process does, so clients
/// keep their URL; every process of a drill shares one `LECTERN_SECRET_KEY`,
/// as a deployment's processes do, so a token one issued works on all.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The `lectern` binary.
    pub bin: PathBuf,
    /// The primary's URL.
    pub database_url: String,
    /// `LECTERN_SECRET_KEY` (hex).
    pub secret_key: String,
    /// `LECTERN_DATA_DIR`.
    pub data_dir: PathBuf,
    /// `LECTERN_ADDR`.
    pub addr: SocketAddr,
    /// `LECTERN_METRICS_ADDR`.
    pub metrics_addr: SocketAddr,
    /// Further environment variables (settings a benchmark changes).
    pub env: Vec<(String, String)>,
}

impl ServerSpec {
    /// A spec on new free ports, with its data directory under `root`.
    pub fn new(
        bin: &Path,
        database_url: &str,
        secret_key: &str,
        root: &Path,
        name: &str,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            bin: bin.to_owned(),
            database_url: database_url.to_owned(),
            secret_key: secret_key.to_owned(),
            data_dir: root.join(name),
            addr: free_addr()?,
            metrics_addr: free_addr()?,
            env: Vec::new(),
        })
    }

    /// The base URL clients use.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Start the process; its log goes to `<data_dir>.log`.
    pub fn spawn(&self) -> anyhow::Result<Server> {
        std::fs::create_dir_all(&self.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .env("DATABASE_URL", &self.database_url)
            .env("LECTERN_SECRET_KEY", &self.secret_key)
            .env("LECTERN_DATA_DIR", &self.data_dir)
            .env("LECTERN_ADDR", self.addr.to_string())
            .env("LECTERN_METRICS_ADDR", self.metrics_addr.to_string())
            .env("LECTERN_LOG", "warn")
            .env_remove("LECTERN_READ_DATABASE_URL")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        Ok(Server {
            child,
            spec: self.clone(),
            started: Instant::now(),
        })
    }
}

/// A running `lectern serve`.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// How it was started.
    pub spec: ServerSpec,
    started: Instant,
}

impl Server {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `bound` until `/health/ready` answers 200; how long after
    /// the spawn it did.
    pub async fn ready(
        &mut self,
        client: &reqwest::Client,
        bound: Duration,
    ) -> anyhow::Result<Duration> {
        let url = format!("{}/health/ready", self.spec.base());
        let deadline = Instant::now() + bound;
        loop {
            let r = client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return Ok(self.started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "lectern serve exited ({status}); see {}",
                    self.spec.data_dir.with_extension("log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("lectern serve was not ready within {bound:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("kill -9")?;
        self.child.wait().context("reap")?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
