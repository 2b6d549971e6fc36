//! Bad input at the edges: refused alone, with a clear problem, and
//! nothing half-written.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use lectern_tests::classroom::{create_lesson, draw, enrol, live_board, op};
use lectern_tests::{json_of, spawn_app, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// Events requests write (the roster copies and invoices that process
/// managers make after a lesson command land whenever they get to them, so
/// they are left out).
async fn events(app: &TestApp) -> i64 {
    app.count(lectern_tests::classroom::EVENTS_BY_REQUESTS)
        .await
}

fn first_pointer(body: &Value) -> &str {
    body["errors"][0]["pointer"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_nul_character_anywhere_in_a_body_is_422_with_its_pointer_and_writes_nothing() {
    let app = spawn_app().await;
    let b = live_board(&app).await;
    let board = b.board;
    let before = events(&app).await;
    let cases: Vec<(String, Value, &str)> = vec![
        (
            "/api/v1/lessons".to_owned(),
            json!({"title": "Algebra", "description": "a\u{0}b",
                   "starts_at": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
                   "duration_minutes": 60, "capacity": 5,
                   "price": {"amount_minor": 100, "currency": "eur"}}),
            "#/description",
        ),
        (
            format!("/api/v1/lessons/{board}/messages"),
            json!({"client_message_id": "m1", "text": "hi\u{0}"}),
            "#/text",
        ),
        (
            format!("/api/v1/boards/{board}/ops/batch"),
            json!({"ops": [op("t", "1", 1, "add", "a", json!({"x": "v\u{0}"}))]}),
            "#/ops/0/data/x",
        ),
        (
            format!("/api/v1/boards/{board}/ops/batch"),
            json!({"ops": [op("t", "1", 1, "add", "a", json!({"k\u{0}": 1}))]}),
            "#/ops/0/data",
        ),
        (
            format!("/api/v1/boards/{board}/ops/batch"),
            json!({"ops": [op("t", "1", 1, "add", "e\u{0}", json!({}))]}),
            "#/ops/0/element_id",
        ),
        (
            format!("/api/v1/boards/{board}/ops"),
            op("t\u{0}", "1", 1, "add", "a", json!({})),
            "#/client_id",
        ),
    ];
    for (path, body, pointer) in cases {
        let r = app.post(&path, Some(&b.tutor.access_token), body).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        let problem = json_of(r).await;
        assert_eq!(first_pointer(&problem), pointer, "{path}: {problem}");
    }
    // Anonymous bodies too.
    let r = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "n@example.com", "password": "a long enough passphrase",
                   "display_name": "Nu\u{0}l", "role": "student"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_pointer(&json_of(r).await), "#/display_name");
    assert_eq!(events(&app).await, before, "nothing was written");
    // A literal backslash-u-zero text is not a NUL and goes through.
    let (status, body) = draw(
        &app,
        &b.tutor,
        board,
        vec![op("t", "1", 1, "add", "a", json!({"note": "\\u0000"}))],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["status"], "applied");
}

#[tokio::test]
async fn a_nul_or_an_impossible_date_in_a_query_is_400_not_500() {
    let app = spawn_app().await;
    let (_, admin) = app.user("admin").await;
    for path in [
        "/api/v1/audit/events?actor=%00",
        "/api/v1/audit/events?event_type=a%00b",
        "/api/v1/audit/events?from=-0001-01-01T00:00:00Z",
        "/api/v1/audit/events?to=-2000-06-01T00:00:00Z",
        "/api/v1/lessons?starts_from=-0001-01-01T00:00:00Z",
        "/api/v1/lessons?starts_before=-0001-01-01T00:00:00Z",
        "/api/v1/lessons?status=live%00",
    ] {
        let r = app.get(path, &admin.access_token).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(json_of(r).await["code"], "invalid_query", "{path}");
    }
    let r = app
        .get(
            "/api/v1/audit/events?from=2020-01-01T00:00:00Z",
            &admin.access_token,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// Make the database refuse board ops on elements named `poison*`, as it
/// refuses a value it cannot store.
async fn poison(app: &TestApp) {
    for sql in [
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.payload->'OpApplied'->>'element_id' LIKE 'poison%' THEN
             RAISE EXCEPTION 'cannot store this value';
           END IF;
           RETURN NEW;
         END $$",
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON events
         FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ] {
        sqlx::query(sql)
            .execute(&app.db.pool)
            .await
            .expect("install the poison trigger");
    }
}

#[tokio::test]
async fn ops_the_database_refuses_fail_alone_and_never_take_concurrent_valid_ones_down() {
    let app = spawn_app().await;
    // Two live boards, so that appends share statements within a board (one
    // aggregate's queue) and across boards (the committer).
    let one = live_board(&app).await;
    let (board_two, _) = create_lesson(&app, &one.tutor, 5).await;
    enrol(&app, &one.student, board_two).await;
    let started = app
        .post(
            &format!("/api/v1/lessons/{board_two}/start"),
            Some(&one.tutor.access_token),
            json!({}),
        )
        .await;
    assert_eq!(started.status(), StatusCode::OK);
    poison(&app).await;

    let mut tasks = Vec::new();
    for round in 0..8 {
        for (board, who, client) in [
            (one.board, &one.tutor, "t"),
            (one.board, &one.student, "s"),
            (board_two, &one.tutor, "t2"),
        ] {
            let (url, token) = (
                app.url(&format!("/api/v1/boards/{board}/ops")),
                who.access_token.clone(),
            );
            let client = client.to_owned();
            let http = app.client.clone();
            let poisoned = round % 3 == 1 && client == "s";
            tasks.push(tokio::spawn(async move {
                let element = if poisoned {
                    format!("poison-{round}")
                } else {
                    format!("{client}-{round}")
                };
                let r = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&op(
                        &client,
                        &round.to_string(),
                        1,
                        "add",
                        &element,
                        json!({}),
                    ))
                    .send()
                    .await
                    .expect("sent");
                let status = r.status();
                (
                    poisoned,
                    status,
                    r.json::<Value>().await.unwrap_or(Value::Null),
                )
            }));
        }
    }
    let mut valid = 0;
    let mut refused = 0;
    for t in tasks {
        let (poisoned, status, body) = t.await.expect("a request");
        if poisoned {
            refused += 1;
            assert_ne!(
                status,
                StatusCode::OK,
                "the poisoned op is not applied: {body}"
            );
        } else {
            valid += 1;
            assert_eq!(status, StatusCode::OK, "a valid op: {body}");
            assert_eq!(body["results"][0]["status"], "applied", "{body}");
        }
    }
    assert_eq!((valid, refused), (21, 3));
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'OpApplied'")
            .await,
        21,
        "every valid op, and only those, is stored"
    );
}

#[tokio::test]
async fn a_lamport_time_past_2_to_the_53_is_422() {
    let app = spawn_app().await;
    let b = live_board(&app).await;
    for lamport in [1_u64 << 53, u64::MAX] {
        let r = app
            .post(
                &format!("/api/v1/boards/{}/ops", b.board),
                Some(&b.tutor.access_token),
                op("t", "1", lamport, "add", "a", json!({})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{lamport}");
        assert_eq!(first_pointer(&json_of(r).await), "#/lamport");
    }
    let (_, body) = draw(
        &app,
        &b.tutor,
        b.board,
        vec![op("t", "2", (1 << 53) - 1, "add", "a", json!({}))],
    )
    .await;
    assert_eq!(
        body["results"][0]["reason"], "lamport_out_of_range",
        "allowed by type, but too far ahead of the board's clock"
    );
}

#[tokio::test]
async fn the_last_active_admin_can_neither_deactivate_nor_demote_itself() {
    let app = spawn_app().await;
    let (me, admin) = app.user("admin").await;
    let deactivate = format!("/api/v1/admin/users/{me}/deactivate");
    let demote = format!("/api/v1/admin/users/{me}/role");
    let before = events(&app).await;
    let r = app
        .post(&deactivate, Some(&admin.access_token), json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(json_of(r).await["code"], "last_admin");
    let r = app
        .call(
            Method::PATCH,
            &demote,
            Some(&admin.access_token),
            Some(json!({"role": "tutor"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(events(&app).await, before, "nothing was written");
    // With another active admin, it may step down.
    app.user("admin").await;
    let r = app
        .call(
            Method::PATCH,
            &demote,
            Some(&admin.access_token),
            Some(json!({"role": "tutor"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_huge_content_length_is_413_at_once() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let mut socket = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let request = format!(
        "POST /api/v1/lessons HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{{}}",
        tutor.access_token
    );
    let started = Instant::now();
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("answered within 5 s")
        .expect("read");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn consistent_with_past_the_head_of_the_log_is_refused_at_once() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (_, position) = create_lesson(&app, &tutor, 5).await;
    let started = Instant::now();
    let r = app
        .get(
            "/api/v1/lessons?consistent_with=1.999999999",
            &tutor.access_token,
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(first_pointer(&json_of(r).await), "#/consistent_with");
    assert!(started.elapsed() < Duration::from_secs(1));
    // A position a command answered still waits and answers.
    let r = app
        .get(
            &format!("/api/v1/lessons?consistent_with={position}"),
            &tutor.access_token,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// A token signed with `key`, for the claims given.
fn sign(claims: &Value, key: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": "k"});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("a key");
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[tokio::test]
async fn a_token_is_trusted_for_who_it_is_not_for_what_it_claims_or_how_long() {
    let db = lectern_tests::TestDb::new().await;
    let key = vec![9u8; 32];
    let state = lectern_api::AppState::new(
        db.pool.clone(),
        lectern_api::config::HttpConfig::for_tests(),
        lectern_api::auth::tokens::Keyring::new(
            vec![("k".to_owned(), key.clone())],
            "lectern",
            "lectern-api",
        )
        .expect("a keyring"),
    );
    let app = lectern_tests::spawn_app_on(db, state).await;
    let (user_id, tokens) = app.user("student").await;
    let now = chrono::Utc::now().timestamp();
    let claims = |iat: i64, exp: i64, role: &str| {
        json!({"iss": "lectern", "aud": "lectern-api", "sub": user_id, "sid": tokens.session_id,
               "role": role, "jti": Uuid::new_v4(), "iat": iat, "nbf": iat, "exp": exp,
               "uv": 1, "mcp": false})
    };
    // A student's token that claims admin acts as the student it is for.
    let claims_admin = sign(&claims(now, now + 600, "admin"), &key);
    let r = app.get("/api/v1/admin/users", &claims_admin).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'AccessDenied' AND payload->'AccessDenied'->>'action' = 'admin.users.read'").await,
        1,
        "the refusal is recorded"
    );
    let me = format!(
        "/api/v1/me?consistent_with={}",
        tokens
            .position
            .as_deref()
            .expect("a login answers a position")
    );
    let r = app.get(&me, &claims_admin).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(json_of(r).await["role"], "student");
    // A lifetime past the 15 minutes this server issues is refused.
    let long = sign(&claims(now, now + 3600, "student"), &key);
    assert_eq!(
        app.get("/api/v1/me", &long).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Expired 10 s ago: past the 5 s leeway.
    let stale = sign(&claims(now - 900, now - 10, "student"), &key);
    let r = app.get("/api/v1/me", &stale).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(r).await["code"], "token_expired");
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off_while_others_are_served() {
    let app = spawn_app().await;
    let mut slow = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /health/live HTTP/1.1\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        // One header byte every 300 ms: never a whole head within 2 s.
        let mut sent = 0;
        for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            sent += 1;
        }
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
        (sent, rest)
    });
    // Meanwhile, ordinary requests are answered at once.
    for _ in 0..5 {
        let t = Instant::now();
        let r = app
            .client
            .get(app.url("/health/live"))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(t.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (sent, rest) = trickle.await.expect("the trickling client");
    let elapsed = started.elapsed();
    assert!(
        sent < 30,
        "the server stopped reading long before the header was done ({sent} bytes)"
    );
    assert!(
        elapsed < Duration::from_secs(12),
        "cut off after the 2 s header timeout, not left open: {elapsed:?}"
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(
        !text.contains("200 OK"),
        "the trickled request was never served: {text}"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_per_address_limits_and_records_name_the_forwarded_client() {
    for trusted in ["127.0.0.1", ""] {
        let db = lectern_tests::TestDb::new().await;
        let http = lectern_api::config::HttpConfig {
            trusted_proxies: trusted.parse().expect("a valid list"),
            ..lectern_api::config::HttpConfig::for_tests()
        };
        let state = lectern_tests::state_for(&db, http);
        let app = lectern_tests::spawn_app_on(db, state).await;
        // Invalid registrations: each passes the per-address limit (20 a
        // minute) and is then refused, writing nothing.
        let register = |from: &'static str| {
            app.client
                .post(app.url("/api/v1/auth/register"))
                .header("x-forwarded-for", from)
                .json(&json!({"email": "not an email", "password": "", "display_name": "", "role": "student"}))
                .send()
        };
        for _ in 0..20 {
            let r = register("198.51.100.1, 203.0.113.7").await.expect("sent");
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        }
        let r = register("198.51.100.1, 203.0.113.7").await.expect("sent");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let other = register("203.0.113.8").await.expect("sent").status();
        let denied: Vec<String> = sqlx::query_scalar(
            "SELECT aggregate_id FROM events WHERE event_type = 'AccessDenied' ORDER BY global_position",
        )
        .fetch_all(&app.db.pool)
        .await
        .expect("denials");
        if trusted.is_empty() {
            // No proxy is trusted: the header is ignored, and every request
            // counts against the connection's address.
            assert_eq!(other, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(denied, ["ip:127.0.0.1", "ip:127.0.0.1"]);
        } else {
            // The proxy's last entry names the client (the first one was
            // forged by the client); another client has its own limit.
            assert_eq!(other, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(denied, ["ip:203.0.113.7"]);
        }
    }
}
