//! Identity and access through the real router: accounts, sessions, token
//! rotation and theft detection, revocation, devices, admin, the audit log.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use lectern_api::auth::tokens::Keyring;
use lectern_api::config::HttpConfig;
use lectern_tests::{spawn_app, spawn_app_on, TestApp, TestDb, Tokens, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

async fn problem(r: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    body
}

async fn events_of(app: &TestApp, aggregate_id: &str) -> Vec<(String, Value, Value)> {
    sqlx::query_as::<_, (String, Value, Value)>(
        "SELECT event_type, payload, metadata FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(aggregate_id)
    .fetch_all(&app.db.pool)
    .await
    .expect("events")
}

async fn count_events(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

fn email() -> String {
    format!("user-{}@example.com", Uuid::new_v4().simple())
}

/// The audit entries for `query`, once the audit projection has reached `position`.
async fn audit(app: &TestApp, token: &str, query: &str) -> Value {
    let head: (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("head");
    let r = app
        .get(
            &format!(
                "/api/v1/audit/events?consistent_with={}.{}&{query}",
                head.0, head.1
            ),
            token,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("json")
}

#[tokio::test]
async fn register_and_login_issue_tokens_and_store_only_hashes() {
    let app = spawn_app().await;
    let address = email();
    let r = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": format!("  {}", address.to_uppercase()), "password": PASSWORD, "display_name": "Ada", "role": "tutor"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.expect("json");
    let user_id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["version"], 1);

    let tokens = app.login(&address).await;
    let parts: Vec<&str> = tokens.access_token.split('.').collect();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["kid"], "test-1");
    assert!(
        URL_SAFE_NO_PAD
            .decode(&tokens.refresh_token)
            .expect("b64")
            .len()
            >= 32 + 32
    );

    let r = app.get("/api/v1/auth/verify", &tokens.access_token).await;
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["sub"], user_id.as_str());
    assert_eq!(v["sid"], tokens.session_id.to_string());
    assert_eq!(v["role"], "tutor");
    assert!(v["exp"].as_i64().expect("exp") - v["iat"].as_i64().expect("iat") == 900);

    let pos = tokens.position.clone().expect("a position");
    let me: Value = app
        .get(
            &format!("/api/v1/me?consistent_with={pos}"),
            &tokens.access_token,
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["email"], address.as_str(), "the email is normalised");
    assert_eq!(me["role"], "tutor");

    // What is stored: the PHC string and token hashes, never the secrets.
    let events = events_of(&app, &user_id).await;
    let types: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        types,
        ["UserRegistered", "LoginSucceeded", "SessionStarted"]
    );
    let phc = events[0].1["UserRegistered"]["password_hash"]
        .as_str()
        .expect("hash");
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    let all: String =
        sqlx::query_scalar("SELECT string_agg(payload::text || metadata::text, ' ') FROM events")
            .fetch_one(&app.db.pool)
            .await
            .expect("text");
    assert!(!all.contains(PASSWORD));
    assert!(!all.contains(&tokens.refresh_token));
    assert!(!all.contains(&tokens.access_token));
    assert_eq!(events[2].2["actor_role"], "anonymous");
    assert!(!events[2].2["request_id"].as_str().expect("id").is_empty());
}

#[tokio::test]
async fn twenty_simultaneous_registrations_with_one_email_give_one_account() {
    let app = spawn_app().await;
    let address = email();
    let attempts = (0..20).map(|i| {
        let app = &app;
        let address = address.clone();
        async move {
            app.post(
                "/api/v1/auth/register",
                None,
                json!({"email": address, "password": PASSWORD, "display_name": format!("n{i}"), "role": "student"}),
            )
            .await
            .status()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(count_events(&app, "UserRegistered").await, 1);
    assert_eq!(count_events(&app, "EmailClaimed").await, 1);
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_look_the_same() {
    let app = spawn_app().await;
    let address = email();
    app.register(&address, "student").await;
    let attempt = |email: String| {
        let app = &app;
        async move {
            let started = Instant::now();
            let r = app
                .post("/api/v1/auth/login", None, json!({"email": email, "password": "not the password!", "device_fingerprint": "d"}))
                .await;
            let status = r.status();
            let challenge = r.headers().get("www-authenticate").cloned();
            let mut body: Value = r.json().await.expect("json");
            body.as_object_mut().expect("object").remove("request_id");
            (status, challenge, body, started.elapsed())
        }
    };
    let mut unknown_times = Vec::new();
    let mut wrong_times = Vec::new();
    for _ in 0..3 {
        let unknown = attempt(email()).await;
        let wrong = attempt(address.clone()).await;
        assert_eq!(unknown.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            (&unknown.0, &unknown.1, &unknown.2),
            (&wrong.0, &wrong.1, &wrong.2)
        );
        unknown_times.push(unknown.3);
        wrong_times.push(wrong.3);
    }
    // Both paths do one Argon2id verification: the fastest of each stays
    // within a factor of three of the other.
    let (u, w) = (
        unknown_times.iter().min().expect("3"),
        wrong_times.iter().min().expect("3"),
    );
    assert!(
        u.as_secs_f64() < w.as_secs_f64() * 3.0 && w.as_secs_f64() < u.as_secs_f64() * 3.0,
        "{u:?} vs {w:?}"
    );
}

#[tokio::test]
async fn five_failed_logins_lock_the_account_and_the_audit_log_shows_it() {
    let app = spawn_app().await;
    let address = email();
    let user_id = app.register(&address, "student").await;
    let wrong =
        json!({"email": address, "password": "not the password!", "device_fingerprint": "d"});
    for _ in 0..4 {
        let r = app.post("/api/v1/auth/login", None, wrong.clone()).await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let r = app.post("/api/v1/auth/login", None, wrong.clone()).await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    problem(r, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    // Even the right password is refused while locked.
    let right = json!({"email": address, "password": PASSWORD, "device_fingerprint": "d"});
    problem(
        app.post("/api/v1/auth/login", None, right).await,
        StatusCode::TOO_MANY_REQUESTS,
        "account_locked",
    )
    .await;

    let types: Vec<String> = events_of(&app, &user_id.to_string())
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(types.iter().filter(|t| *t == "LoginFailed").count(), 6);
    assert_eq!(types.iter().filter(|t| *t == "AccountLocked").count(), 1);
    assert!(!types.contains(&"SessionStarted".to_owned()));

    let (_, auditor) = app.user("auditor").await;
    let log = audit(
        &app,
        &auditor.access_token,
        &format!("aggregate_id={user_id}&event_type=AccountLocked"),
    )
    .await;
    assert_eq!(log["results"].as_array().expect("results").len(), 1);
    assert_eq!(log["results"][0]["summary"]["lock_count"], 1);
}

#[tokio::test]
async fn a_reused_refresh_token_kills_the_whole_session_and_is_audited() {
    let app = spawn_app().await;
    let (user_id, first) = app.user("student").await;
    let r = app.refresh(&first.refresh_token, "test-device").await;
    assert_eq!(r.status(), StatusCode::OK);
    let second: Tokens = r.json().await.expect("tokens");
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.session_id, first.session_id);
    assert_eq!(
        app.get("/api/v1/auth/verify", &second.access_token)
            .await
            .status(),
        StatusCode::OK
    );

    // The thief (or the victim) presents the rotated token again.
    let r = app.refresh(&first.refresh_token, "test-device").await;
    problem(r, StatusCode::UNAUTHORIZED, "session_revoked").await;
    // Both refresh tokens and every access token of the family are dead.
    let r = app.refresh(&second.refresh_token, "test-device").await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    for token in [&first.access_token, &second.access_token] {
        problem(
            app.get("/api/v1/auth/verify", token).await,
            StatusCode::UNAUTHORIZED,
            "token_revoked",
        )
        .await;
    }

    let stored: Vec<(String, Value, Value)> = events_of(&app, &user_id.to_string()).await;
    let tail: Vec<&str> = stored.iter().rev().take(2).map(|e| e.0.as_str()).collect();
    assert_eq!(tail, ["SessionRevoked", "RefreshTokenReused"]);
    assert_eq!(
        stored.last().expect("events").1["SessionRevoked"]["reason"],
        "refresh_token_reuse"
    );

    let (_, admin) = app.user("admin").await;
    let log = audit(
        &app,
        &admin.access_token,
        &format!("aggregate_id={user_id}"),
    )
    .await;
    let actions: Vec<&str> = log["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        &actions[..3],
        ["SessionRevoked", "RefreshTokenReused", "SessionRefreshed"]
    );
    assert_eq!(
        log["results"][0]["summary"]["reason"],
        "refresh_token_reuse"
    );
    assert_eq!(
        log["results"][2]["summary"]["refresh_token_hash"],
        "[redacted]"
    );
}

#[tokio::test]
async fn two_simultaneous_refreshes_with_one_token_succeed_at_most_once() {
    let app = spawn_app().await;
    let (_, tokens) = app.user("student").await;
    let body = json!({"refresh_token": tokens.refresh_token, "device_fingerprint": "test-device"});
    let (a, b) = tokio::join!(
        app.post("/api/v1/auth/refresh", None, body.clone()),
        app.post("/api/v1/auth/refresh", None, body.clone())
    );
    let ok = [a.status(), b.status()]
        .iter()
        .filter(|s| **s == StatusCode::OK)
        .count();
    assert!(ok <= 1, "{} {}", a.status(), b.status());
    assert_eq!(count_events(&app, "SessionRefreshed").await, ok as i64);
    // The second use of one token is reuse: the session ended.
    assert_eq!(count_events(&app, "RefreshTokenReused").await, 1);
}

#[tokio::test]
async fn refresh_is_limited_to_ten_per_hour_per_session() {
    let app = spawn_app().await;
    let (_, mut tokens) = app.user("student").await;
    for _ in 0..10 {
        let r = app.refresh(&tokens.refresh_token, "test-device").await;
        assert_eq!(r.status(), StatusCode::OK);
        tokens = r.json().await.expect("tokens");
    }
    let r = app.refresh(&tokens.refresh_token, "test-device").await;
    let h = r.headers().clone();
    problem(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let retry: u64 = h["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!((300..=360).contains(&retry), "{retry}");
    assert_eq!(h["ratelimit-policy"], "\"auth.refresh\";q=10;w=3600");
    assert_eq!(
        h["ratelimit"].to_str().expect("ascii"),
        format!("\"auth.refresh\";r=0;t={retry}")
    );
    let denied = sqlx::query_as::<_, (String, Value)>(
        "SELECT aggregate_id, payload FROM events WHERE event_type = 'AccessDenied'",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("denials");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].0, "ip:127.0.0.1");
    assert_eq!(denied[0].1["AccessDenied"]["action"], "auth.refresh");
    assert_eq!(denied[0].1["AccessDenied"]["reason"], "rate_limited");
    // The limited attempt did not rotate: the token still works elsewhere.
    assert_eq!(count_events(&app, "SessionRefreshed").await, 10);
}

#[tokio::test]
async fn a_different_device_fingerprint_revokes_the_session() {
    let app = spawn_app().await;
    let (_, tokens) = app.user("tutor").await;
    let r = app.refresh(&tokens.refresh_token, "another-device").await;
    let body = problem(r, StatusCode::UNAUTHORIZED, "session_revoked").await;
    assert!(body["detail"]
        .as_str()
        .expect("detail")
        .contains("fingerprint_mismatch"));
    problem(
        app.get("/api/v1/auth/verify", &tokens.access_token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
}

#[tokio::test]
async fn a_sixth_login_ends_the_oldest_session() {
    let app = spawn_app().await;
    let address = email();
    app.register(&address, "student").await;
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(app.login(&address).await);
    }
    problem(
        app.get("/api/v1/auth/verify", &sessions[0].access_token)
            .await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    let newest = sessions.last().expect("6");
    let listed: Value = app
        .get(
            &format!(
                "/api/v1/me/sessions?consistent_with={}",
                newest.position.as_deref().expect("pos")
            ),
            &newest.access_token,
        )
        .await
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 5);
    assert!(!ids.contains(&sessions[0].session_id.to_string().as_str()));
    assert_eq!(listed[0]["current"], true);
    let revoked: String = sqlx::query_scalar("SELECT revoke_reason FROM sessions WHERE id = $1")
        .bind(sessions[0].session_id)
        .fetch_one(&app.db.pool)
        .await
        .expect("row");
    assert_eq!(revoked, "session_limit");
}

#[tokio::test]
async fn logout_and_ending_a_session_take_effect_at_once() {
    let app = spawn_app().await;
    let address = email();
    app.register(&address, "student").await;
    let (a, b, c) = (
        app.login(&address).await,
        app.login(&address).await,
        app.login(&address).await,
    );

    let r = app
        .post("/api/v1/auth/logout", Some(&a.access_token), json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    problem(
        app.get("/api/v1/me/permissions", &a.access_token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;

    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/me/sessions/{}", b.session_id),
            Some(&c.access_token),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    problem(
        app.get("/api/v1/me/permissions", &b.access_token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    // Someone else's (or an unknown) session is not found among one's own.
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/me/sessions/{}", Uuid::new_v4()),
            Some(&c.access_token),
            None,
        )
        .await;
    problem(r, StatusCode::NOT_FOUND, "session_not_found").await;

    let r = app
        .post("/api/v1/auth/logout-all", Some(&c.access_token), json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    problem(
        app.get("/api/v1/me/permissions", &c.access_token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    assert_eq!(count_events(&app, "SessionRevoked").await, 3);
}

#[tokio::test]
async fn another_process_rejects_a_revoked_token_within_a_second() {
    let db = TestDb::new().await;
    let keyring = || {
        Keyring::new(
            vec![("shared".to_owned(), vec![7u8; 32])],
            "lectern",
            "lectern-api",
        )
        .expect("keyring")
    };
    let state_a = lectern_api::AppState::new(db.pool.clone(), HttpConfig::for_tests(), keyring());
    let pool_b = db.second_pool().await;
    let state_b = lectern_api::AppState::new(pool_b, HttpConfig::for_tests(), keyring());
    // Process B serves requests and follows the log for revocations.
    let _workers_b = lectern_api::workers::Workers::start(
        &state_b,
        &lectern_api::config::WorkerConfig {
            run_projections: false,
            ..Default::default()
        },
        &db.cancel,
    )
    .await
    .expect("process B's background work");
    let app_b = lectern_tests::serve(lectern_api::router(state_b)).await;
    let app = spawn_app_on(db, state_a).await;
    let (_, tokens) = app.user("student").await;
    let via_b = |path: &str| {
        app.client
            .get(format!("http://{app_b}{path}"))
            .bearer_auth(&tokens.access_token)
            .send()
    };
    assert_eq!(
        via_b("/api/v1/auth/verify").await.expect("send").status(),
        StatusCode::OK
    );

    let r = app
        .post("/api/v1/auth/logout", Some(&tokens.access_token), json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let revoked_at = Instant::now();
    loop {
        let status = via_b("/api/v1/auth/verify").await.expect("send").status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "process B still accepts the token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_new_signing_key_takes_over_while_the_old_one_still_verifies() {
    let db = TestDb::new().await;
    let (k1, k2) = (
        ("k1".to_owned(), vec![1u8; 32]),
        ("k2".to_owned(), vec![2u8; 32]),
    );
    let old = lectern_api::AppState::new(
        db.pool.clone(),
        HttpConfig::for_tests(),
        Keyring::new(vec![k1.clone()], "lectern", "lectern-api").expect("k"),
    );
    let rotated = lectern_api::AppState::new(
        db.pool.clone(),
        HttpConfig::for_tests(),
        Keyring::new(vec![k2.clone(), k1], "lectern", "lectern-api").expect("k"),
    );
    let retired = lectern_api::AppState::new(
        db.pool.clone(),
        HttpConfig::for_tests(),
        Keyring::new(vec![k2], "lectern", "lectern-api").expect("k"),
    );
    let rotated_addr = lectern_tests::serve(lectern_api::router(rotated)).await;
    let retired_addr = lectern_tests::serve(lectern_api::router(retired)).await;
    let app = spawn_app_on(db, old).await;
    let (_, tokens) = app.user("student").await;
    let verify = |addr: std::net::SocketAddr, token: String| {
        let client = app.client.clone();
        async move {
            client
                .get(format!("http://{addr}/api/v1/auth/verify"))
                .bearer_auth(token)
                .send()
                .await
                .expect("send")
        }
    };
    // Signed with k1, verified by the rotated server.
    let v: Value = verify(rotated_addr, tokens.access_token.clone())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["kid"], "k1");
    // The rotated server signs with k2.
    let r = app
        .client
        .post(format!("http://{rotated_addr}/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": tokens.refresh_token, "device_fingerprint": "test-device"}))
        .send()
        .await
        .expect("send");
    let fresh: Tokens = r.json().await.expect("tokens");
    let v: Value = verify(rotated_addr, fresh.access_token.clone())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["kid"], "k2");
    // Once k1 is retired, its tokens are refused and k2's accepted.
    assert_eq!(
        verify(retired_addr, tokens.access_token.clone())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        verify(retired_addr, fresh.access_token).await.status(),
        StatusCode::OK
    );
}

fn sign(header: &Value, claims: &Value, key: &[u8]) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
    mac.update(format!("{h}.{c}").as_bytes());
    format!(
        "{h}.{c}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[tokio::test]
async fn forged_expired_and_confused_tokens_are_refused_with_problems() {
    let db = TestDb::new().await;
    let key = vec![9u8; 32];
    let state = lectern_api::AppState::new(
        db.pool.clone(),
        HttpConfig::for_tests(),
        Keyring::new(
            vec![("k".to_owned(), key.clone())],
            "lectern",
            "lectern-api",
        )
        .expect("k"),
    );
    let app = spawn_app_on(db, state).await;
    let (user_id, tokens) = app.user("student").await;
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64, aud: &str| {
        json!({"iss": "lectern", "aud": aud, "sub": user_id, "sid": tokens.session_id, "role": "admin",
               "jti": Uuid::new_v4(), "iat": now, "nbf": now - 5, "exp": exp, "uv": 1, "mcp": false})
    };
    let good_header = json!({"alg": "HS256", "typ": "at+jwt", "kid": "k"});
    // The test's own signature works, so the cases below fail for their one flaw.
    let control = sign(&good_header, &claims(now + 600, "lectern-api"), &key);
    assert_eq!(
        app.get("/api/v1/auth/verify", &control).await.status(),
        StatusCode::OK
    );

    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "at+jwt", "kid": "k"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims(now + 600, "lectern-api").to_string())
    );
    let cases = [
        ("alg none", none, "invalid_token"),
        (
            "wrong key",
            sign(&good_header, &claims(now + 600, "lectern-api"), &[8u8; 32]),
            "invalid_token",
        ),
        (
            "RS256 header over an HMAC signature",
            sign(
                &json!({"alg": "RS256", "typ": "at+jwt", "kid": "k"}),
                &claims(now + 600, "lectern-api"),
                &key,
            ),
            "invalid_token",
        ),
        (
            "HS384",
            sign(
                &json!({"alg": "HS384", "typ": "at+jwt", "kid": "k"}),
                &claims(now + 600, "lectern-api"),
                &key,
            ),
            "invalid_token",
        ),
        (
            "not an access token",
            sign(
                &json!({"alg": "HS256", "typ": "JWT", "kid": "k"}),
                &claims(now + 600, "lectern-api"),
                &key,
            ),
            "invalid_token",
        ),
        (
            "unknown kid",
            sign(
                &json!({"alg": "HS256", "typ": "at+jwt", "kid": "other"}),
                &claims(now + 600, "lectern-api"),
                &key,
            ),
            "invalid_token",
        ),
        (
            "another audience",
            sign(&good_header, &claims(now + 600, "someone-else"), &key),
            "invalid_token",
        ),
        (
            "expired",
            sign(&good_header, &claims(now - 120, "lectern-api"), &key),
            "token_expired",
        ),
        (
            "garbage",
            "garbage.garbage.garbage".to_owned(),
            "invalid_token",
        ),
    ];
    for (name, token, code) in &cases {
        let r = app.get("/api/v1/auth/verify", token).await;
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .expect("ascii")
                .starts_with("Bearer"),
            "{name}"
        );
        let body = problem(r, StatusCode::UNAUTHORIZED, code).await;
        assert!(body["request_id"].is_string(), "{name}");
    }
    problem(
        app.client
            .get(app.url("/api/v1/me"))
            .send()
            .await
            .expect("send"),
        StatusCode::UNAUTHORIZED,
        "missing_token",
    )
    .await;
    // Forgeries (not the expired token) are recorded as denials.
    let denials: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'AccessDenied' AND payload->'AccessDenied'->>'reason' = 'invalid_token'")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(denials, 8);
}

#[tokio::test]
async fn bad_credentials_input_gets_validation_problems_and_writes_nothing() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"email": email(), "password": "short", "display_name": "A", "role": "student"}),
            "#/password",
            "at least 12",
        ),
        (
            json!({"email": email(), "password": "x".repeat(16), "display_name": "A", "role": "student"}),
            "#/password",
            "too easy",
        ),
        (
            json!({"email": email(), "password": "ab1!".repeat(40), "display_name": "A", "role": "student"}),
            "#/password",
            "at most 128",
        ),
        (
            json!({"email": "not-an-email", "password": PASSWORD, "display_name": "A", "role": "student"}),
            "#/email",
            "email",
        ),
        (
            json!({"email": email(), "password": PASSWORD, "display_name": "", "role": "student"}),
            "#/display_name",
            "1 to 100",
        ),
        (
            json!({"email": email(), "password": PASSWORD, "display_name": "A", "role": "wizard"}),
            "#/role",
            "one of",
        ),
    ];
    for (body, pointer, detail) in cases {
        let problem = problem(
            app.post("/api/v1/auth/register", None, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["pointer"], pointer);
        assert!(
            problem["errors"][0]["detail"]
                .as_str()
                .expect("detail")
                .contains(detail),
            "{problem}"
        );
    }
    // Self-registration cannot create admins.
    let r = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": email(), "password": PASSWORD, "display_name": "A", "role": "admin"}),
        )
        .await;
    problem(r, StatusCode::FORBIDDEN, "role_not_allowed").await;
    assert_eq!(count_events(&app, "AccessDenied").await, 1);
    // Garbage refresh tokens.
    for token in ["", "garbage", &"A".repeat(86), &"x".repeat(5000)] {
        let r = app.refresh(token, "d").await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    }
    // An oversized login password is refused before any hashing.
    let r = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": email(), "password": "p".repeat(129), "device_fingerprint": "d"}),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type IN ('User', 'EmailClaim')",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn changing_the_password_ends_every_other_session() {
    let app = spawn_app().await;
    let address = email();
    let user_id = app.register(&address, "student").await;
    let (a, b) = (app.login(&address).await, app.login(&address).await);
    let new_password = "a brand new passphrase";
    let r = app
        .post(
            "/api/v1/auth/change-password",
            Some(&a.access_token),
            json!({"current_password": "wrong password here", "new_password": new_password}),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let r = app
        .post(
            "/api/v1/auth/change-password",
            Some(&a.access_token),
            json!({"current_password": PASSWORD, "new_password": new_password}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        app.get("/api/v1/auth/verify", &a.access_token)
            .await
            .status(),
        StatusCode::OK
    );
    problem(
        app.get("/api/v1/auth/verify", &b.access_token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    let r = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": address, "password": PASSWORD, "device_fingerprint": "d"}),
        )
        .await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let r = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": address, "password": new_password, "device_fingerprint": "d"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let types: Vec<String> = events_of(&app, &user_id.to_string())
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(types.contains(&"PasswordChanged".to_owned()));
}

#[tokio::test]
async fn a_password_reset_goes_through_the_outbox_and_works_once() {
    let app = spawn_app().await;
    let address = email();
    let user_id = app.register(&address, "tutor").await;
    let session = app.login(&address).await;
    for who in [email(), address.clone()] {
        let r = app
            .post(
                "/api/v1/auth/password-reset/request",
                None,
                json!({"email": who}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(
            r.json::<Value>().await.expect("json"),
            json!({"status": "accepted"})
        );
    }
    let messages: Vec<(String, String)> =
        sqlx::query_as("SELECT recipient, body FROM outbound_messages")
            .fetch_all(&app.db.pool)
            .await
            .expect("outbox");
    assert_eq!(messages.len(), 1, "only the real account gets mail");
    assert_eq!(messages[0].0, address);
    let token = messages[0]
        .1
        .lines()
        .find(|l| l.len() > 40 && !l.contains(' '))
        .expect("a token line")
        .to_owned();
    // Only the token's hash is in the log.
    let requested = events_of(&app, &user_id.to_string()).await;
    let hash = requested.last().expect("event").1["PasswordResetRequested"]["token_hash"]
        .as_str()
        .expect("hash")
        .to_owned();
    assert_eq!(hash, lectern_commands::identity::sha256_hex(&token));
    let all: String = sqlx::query_scalar("SELECT string_agg(payload::text, ' ') FROM events")
        .fetch_one(&app.db.pool)
        .await
        .expect("text");
    assert!(!all.contains(&token));

    let new_password = "reset passphrase 2026";
    let r = app
        .post(
            "/api/v1/auth/password-reset/confirm",
            None,
            json!({"token": token, "new_password": new_password}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .post(
            "/api/v1/auth/password-reset/confirm",
            None,
            json!({"token": token, "new_password": "another passphrase"}),
        )
        .await;
    let body = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["pointer"], "#/token");
    problem(
        app.get("/api/v1/auth/verify", &session.access_token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    let r = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": address, "password": new_password, "device_fingerprint": "d"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_forced_reset_allows_only_the_password_change_until_it_is_made() {
    let app = spawn_app().await;
    let address = email();
    let user_id = app.register(&address, "student").await;
    let tokens = app.login(&address).await;
    let (_, admin) = app.user("admin").await;
    let r = app
        .post(
            &format!("/api/v1/admin/users/{user_id}/reset-password"),
            Some(&admin.access_token),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    problem(
        app.get("/api/v1/me/permissions", &tokens.access_token)
            .await,
        StatusCode::FORBIDDEN,
        "password_change_required",
    )
    .await;
    // A new login is restricted too.
    let again = app.login(&address).await;
    problem(
        app.get("/api/v1/me/permissions", &again.access_token).await,
        StatusCode::FORBIDDEN,
        "password_change_required",
    )
    .await;
    let r = app
        .post(
            "/api/v1/auth/change-password",
            Some(&again.access_token),
            json!({"current_password": PASSWORD, "new_password": "my own new passphrase"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        app.get("/api/v1/me/permissions", &again.access_token)
            .await
            .status(),
        StatusCode::OK
    );
    let r = app.post("/api/v1/auth/login", None, json!({"email": address, "password": "my own new passphrase", "device_fingerprint": "d"})).await;
    let fresh: Tokens = r.json().await.expect("tokens");
    assert_eq!(
        app.get("/api/v1/me/permissions", &fresh.access_token)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn admins_list_users_change_roles_and_deactivate_accounts() {
    let app = spawn_app().await;
    let (_, admin) = app.user("admin").await;
    let mut students = Vec::new();
    for _ in 0..3 {
        students.push(app.user("student").await);
    }
    let (tutor_id, tutor) = app.user("tutor").await;
    let pos = tutor.position.clone().expect("pos");
    let page: Value = app
        .get(
            &format!("/api/v1/admin/users?role=student&page_size=2&consistent_with={pos}"),
            &admin.access_token,
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["total"], 3);
    assert_eq!(page["total_pages"], 2);
    assert_eq!(page["results"].as_array().expect("list").len(), 2);
    assert!(page["next"].as_str().expect("next").contains("page=2"));
    assert!(page["prev"].is_null());
    let r = app
        .get("/api/v1/admin/users?page_size=101", &admin.access_token)
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    // A role change outdates the user's tokens; a refresh carries the new role.
    let (student_id, student) = &students[0];
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/admin/users/{student_id}/role"),
            Some(&admin.access_token),
            Some(json!({"role": "tutor"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    problem(
        app.get("/api/v1/auth/verify", &student.access_token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    let r = app.refresh(&student.refresh_token, "test-device").await;
    let promoted: Tokens = r.json().await.expect("tokens");
    let v: Value = app
        .get("/api/v1/auth/verify", &promoted.access_token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["role"], "tutor");

    // Deactivation ends every session at once and blocks logins.
    let r = app
        .post(
            &format!("/api/v1/admin/users/{tutor_id}/deactivate"),
            Some(&admin.access_token),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    problem(
        app.get("/api/v1/auth/verify", &tutor.access_token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    let r = app.refresh(&tutor.refresh_token, "test-device").await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    let types: Vec<String> = events_of(&app, &tutor_id.to_string())
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        &types[types.len() - 2..],
        ["UserDeactivated", "SessionRevoked"]
    );

    // Students cannot do any of it, and the refusal is recorded.
    let (_, other) = &students[1];
    let r = app.get("/api/v1/admin/users", &other.access_token).await;
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    let denials: Vec<(String, Value)> = sqlx::query_as(
        "SELECT aggregate_id, payload->'AccessDenied' FROM events WHERE event_type = 'AccessDenied' ORDER BY global_position",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("denials");
    let reasons: Vec<&str> = denials
        .iter()
        .map(|d| d.1["reason"].as_str().expect("reason"))
        .collect();
    // The two uses of outdated tokens above, then this refusal.
    assert_eq!(reasons, ["revoked_token", "revoked_token", "forbidden"]);
    assert_eq!(denials[2].0, format!("user:{}", students[1].0));
    assert_eq!(denials[2].1["action"], "admin.users.read");
}

#[tokio::test]
async fn one_device_is_active_even_under_concurrent_activations() {
    let app = spawn_app().await;
    let address = email();
    let user_id = app.register(&address, "student").await;
    let tokens = app.login(&address).await;
    for i in 0..5 {
        let r = app
            .post("/api/v1/devices", Some(&tokens.access_token), json!({"device_id": format!("dev-{i}"), "name": format!("Phone {i}"), "platform": "android"}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = app
        .post(
            "/api/v1/devices",
            Some(&tokens.access_token),
            json!({"device_id": "dev-0", "name": "again", "platform": "web"}),
        )
        .await;
    problem(r, StatusCode::CONFLICT, "device_exists").await;
    let r = app
        .post(
            "/api/v1/devices",
            Some(&tokens.access_token),
            json!({"device_id": "dev-9", "name": "x", "platform": "toaster"}),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let paths: Vec<String> = (0..5)
        .map(|i| format!("/api/v1/devices/dev-{i}/activate"))
        .collect();
    let activations = paths
        .iter()
        .map(|p| app.post(p, Some(&tokens.access_token), json!({})));
    let results = futures::future::join_all(activations).await;
    let mut last_position: lectern_domain::Position = lectern_domain::Position::ZERO;
    for r in results {
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.expect("json");
        let p = body["position"]
            .as_str()
            .expect("position")
            .parse()
            .expect("token");
        last_position = last_position.max(p);
    }
    let state = app
        .state
        .identity
        .users
        .store()
        .load(&user_id.to_string())
        .await
        .expect("load");
    assert_eq!(
        state.aggregate.devices.iter().filter(|d| d.active).count(),
        1
    );
    let listed: Value = app
        .get(
            &format!("/api/v1/devices?consistent_with={last_position}"),
            &tokens.access_token,
        )
        .await
        .json()
        .await
        .expect("json");
    let active: Vec<&Value> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter(|d| d["active"] == true)
        .collect();
    assert_eq!(active.len(), 1);
    assert_eq!(count_events(&app, "ActiveDeviceTransferred").await, 5);

    // Revoking a device ends the sessions bound to it, and only those.
    let bound = app.login_from(&address, "dev-3").await;
    let r = app
        .call(
            Method::DELETE,
            "/api/v1/devices/dev-3",
            Some(&tokens.access_token),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    problem(
        app.get("/api/v1/auth/verify", &bound.access_token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    assert_eq!(
        app.get("/api/v1/auth/verify", &tokens.access_token)
            .await
            .status(),
        StatusCode::OK
    );
    let r = app
        .call(
            Method::DELETE,
            "/api/v1/devices/dev-3",
            Some(&tokens.access_token),
            None,
        )
        .await;
    problem(r, StatusCode::NOT_FOUND, "device_not_found").await;
}

#[tokio::test]
async fn the_mail_sender_delivers_each_message_once_and_clears_its_body() {
    let app = spawn_app().await;
    let address = email();
    app.register(&address, "student").await;
    let r = app
        .post(
            "/api/v1/auth/password-reset/request",
            None,
            json!({"email": address}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let dir = std::env::temp_dir().join(format!("lectern-mail-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("mail dir");
    let delivered = lectern_api::mail::deliver_batch(&app.db.pool, &dir)
        .await
        .expect("deliver");
    assert_eq!(delivered, 1);
    assert_eq!(
        lectern_api::mail::deliver_batch(&app.db.pool, &dir)
            .await
            .expect("deliver"),
        0
    );
    let (id, body, sent): (Uuid, Option<String>, bool) =
        sqlx::query_as("SELECT id, body, sent_at IS NOT NULL FROM outbound_messages")
            .fetch_one(&app.db.pool)
            .await
            .expect("row");
    assert!(sent);
    assert_eq!(
        body, None,
        "the token does not stay in the database once sent"
    );
    let file = dir.join(format!("{id}.eml"));
    let text = std::fs::read_to_string(&file).expect("the delivered mail");
    assert!(text.starts_with(&format!("To: {address}\r\n")));
    let token = text
        .lines()
        .find(|l| l.len() > 40 && !l.contains(' '))
        .expect("a token")
        .to_owned();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    let r = app
        .post(
            "/api/v1/auth/password-reset/confirm",
            None,
            json!({"token": token, "new_password": "delivered passphrase"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}
