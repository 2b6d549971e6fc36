//! The `lectern` binary end to end: `--help`, and `serve` on the embedded
//! default (no DATABASE_URL), which creates a private cluster, persists it
//! across runs and stops it cleanly on SIGTERM.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn lectern() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lectern"));
    cmd.env_remove("DATABASE_URL").env("LECTERN_LOG", "warn");
    cmd
}

#[test]
fn help_documents_every_command() {
    let out = lectern()
        .arg("--help")
        .output()
        .expect("run lectern --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for command in [
        "serve",
        "migrate",
        "projections",
        "bench",
        "DATABASE_URL",
        "LECTERN_DATA_DIR",
    ] {
        assert!(text.contains(command), "--help lacks {command}:\n{text}");
    }
    let out = lectern()
        .args(["projections", "--help"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("status") && text.contains("rebuild"),
        "{text}"
    );
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn serve_on_the_embedded_default_persists_its_cluster_and_stops_it_on_sigterm() {
    let dir = TempDir(
        std::env::temp_dir().join(format!("lectern-cli-{}", uuid::Uuid::new_v4().simple())),
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = lectern()
        .arg("serve")
        .env("LECTERN_DATA_DIR", &dir.0)
        .env("LECTERN_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lectern serve");

    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let ready = loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/health/ready"))
            .send()
            .await
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "lectern serve did not answer in time"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "lectern serve exited early"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ready.status(), 200);
    assert!(
        dir.0.join("postgres/PG_VERSION").exists(),
        "the cluster lives in the data directory"
    );
    assert!(
        dir.0.join("postgres/postmaster.pid").exists(),
        "and is running"
    );
    let key =
        std::fs::metadata(dir.0.join("secret-key")).expect("a development secret was generated");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "lectern serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "clean exit: {exit:?}");
    assert!(
        !dir.0.join("postgres/postmaster.pid").exists(),
        "the cluster was stopped"
    );

    // A second run finds what the first one stored.
    let out = lectern()
        .args(["projections", "status"])
        .env("LECTERN_DATA_DIR", &dir.0)
        .output()
        .expect("run projections status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON status");
    let names: Vec<&str> = status
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(names.contains(&"analytics_daily_event_counts"), "{names:?}");
    assert!(
        !dir.0.join("postgres/postmaster.pid").exists(),
        "the CLI stops the cluster it started"
    );
}
