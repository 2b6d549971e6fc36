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
        "users",
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("lectern-cli-{}", uuid::Uuid::new_v4().simple())))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn serve_on_the_embedded_default_persists_its_cluster_and_stops_it_on_sigterm() {
    let dir = TempDir::new();
    // The first admin, with the password on standard input only.
    let password = "first admin passphrase";
    let mut create = lectern()
        .args(["users", "create-admin", "--email", "Root@Example.com"])
        .env("LECTERN_DATA_DIR", &dir.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run users create-admin");
    {
        use std::io::Write;
        let mut stdin = create.stdin.take().expect("stdin");
        writeln!(stdin, "{password}").expect("write the password");
    }
    let out = create.wait_with_output().expect("create-admin finishes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(created["role"], "admin");

    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = lectern()
        .arg("serve")
        .env("LECTERN_DATA_DIR", &dir.0)
        .env("LECTERN_ADDR", format!("127.0.0.1:{port}"))
        .env("LECTERN_METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
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
    // The admin logs in and sees itself in the user list.
    let login: serde_json::Value = client
        .post(format!("http://127.0.0.1:{port}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": "root@example.com", "password": password, "device_fingerprint": "cli-test"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("tokens");
    let token = login["access_token"].as_str().expect("an access token");
    let users: serde_json::Value = client
        .get(format!(
            "http://127.0.0.1:{port}/api/v1/admin/users?consistent_with={}",
            login["position"].as_str().expect("position")
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("list users")
        .json()
        .await
        .expect("page");
    assert_eq!(users["total"], 1);
    assert_eq!(users["results"][0]["id"], created["id"]);
    assert_eq!(users["results"][0]["role"], "admin");

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

#[test]
fn serve_that_cannot_listen_stops_its_cluster_and_says_why_in_one_line() {
    let dir = TempDir::new();
    // The address is taken for as long as this listener lives.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let out = lectern()
        .arg("serve")
        .env("LECTERN_DATA_DIR", &dir.0)
        .env("LECTERN_ADDR", addr.to_string())
        .env("LECTERN_METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .expect("run lectern serve");
    assert!(!out.status.success(), "serve on a taken address fails");
    assert!(
        dir.0.join("postgres/PG_VERSION").exists(),
        "the embedded cluster was started before the listener failed"
    );
    assert!(
        !dir.0.join("postgres/postmaster.pid").exists(),
        "the embedded cluster it started is stopped again"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with('{')) // JSON log lines
        .collect();
    assert_eq!(
        said,
        [format!(
            "lectern: cannot listen on {addr}: Address already in use (os error 98)"
        )],
        "one line that says what failed: {stderr}"
    );
}
