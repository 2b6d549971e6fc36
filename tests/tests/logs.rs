//! The logs firewall: drive every identity flow with known secrets while
//! capturing the server's logs at debug level, then check that no secret and
//! no unmasked personal data reached them. Its own test binary, because the
//! log capture is process-wide.

use std::io::Write;
use std::sync::{Arc, Mutex};

use lectern_tests::{spawn_app, Tokens, PASSWORD};
use reqwest::StatusCode;
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[tokio::test]
async fn no_secret_or_personal_data_reaches_the_logs() {
    let capture = Capture::default();
    lectern_api::telemetry::init_logging_to(
        capture.clone(),
        tracing_subscriber::EnvFilter::new("debug"),
    );
    let app = spawn_app().await;
    let email = "jane.doe.secret@example.com";
    let new_password = "a rather new passphrase";

    app.register(email, "student").await;
    let tokens = app.login(email).await;
    let r = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": "Wrong-Password-123", "device_fingerprint": "d"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app.refresh(&tokens.refresh_token, "test-device").await;
    let rotated: Tokens = r.json().await.expect("tokens");
    assert_eq!(
        app.get("/api/v1/me/permissions", &rotated.access_token)
            .await
            .status(),
        StatusCode::OK
    );
    // A forged token, and the reuse of a rotated refresh token.
    let forged = format!("{}x", rotated.access_token);
    assert_eq!(
        app.get("/api/v1/auth/verify", &forged).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = app.refresh(&tokens.refresh_token, "test-device").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A password reset from request to confirmation.
    let r = app
        .post(
            "/api/v1/auth/password-reset/request",
            None,
            json!({"email": email}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: String = sqlx::query_scalar("SELECT body FROM outbound_messages")
        .fetch_one(&app.db.pool)
        .await
        .expect("the reset mail");
    let reset_token = body
        .lines()
        .find(|l| l.len() > 40 && !l.contains(' '))
        .expect("a token")
        .to_owned();
    let r = app
        .post(
            "/api/v1/auth/password-reset/confirm",
            None,
            json!({"token": reset_token, "new_password": new_password}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // Malformed input that echoes nothing back.
    let r = app
        .post("/api/v1/auth/register", None, json!({"email": "not an email jane.doe.secret", "password": "short", "display_name": "x", "role": "student"}))
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Let the projections and the watcher log whatever they log.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let logs = String::from_utf8(capture.0.lock().expect("not poisoned").clone()).expect("utf-8");
    assert!(logs.contains("request handled"), "the capture works");
    assert!(
        logs.contains("j***t@e***.com"),
        "the reset mail is logged with the address masked"
    );
    for (what, secret) in [
        ("email", email),
        ("password", PASSWORD),
        ("new password", new_password),
        ("wrong password", "Wrong-Password-123"),
        ("access token", &tokens.access_token),
        ("rotated access token", &rotated.access_token),
        ("refresh token", &tokens.refresh_token),
        ("rotated refresh token", &rotated.refresh_token),
        ("reset token", &reset_token),
    ] {
        assert!(!logs.contains(secret), "the {what} reached the logs");
    }
    // Nor does any Argon2 hash.
    assert!(
        !logs.contains("$argon2id$"),
        "a password hash reached the logs"
    );
}
