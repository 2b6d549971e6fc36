//! Presence v2: HTTP heartbeats and their TTL, chosen statuses, lesson and
//! bulk reads, diffs batched to `lesson:` subscribers with no offline diff
//! for a reconnect inside the grace, and a killed node's users going offline
//! while nobody else does.

use std::time::{Duration, Instant};

use lectern_api::config::HttpConfig;
use lectern_tests::classroom::{create_lesson, enrol};
use lectern_tests::realtime::Ws;
use lectern_tests::{
    json_of, spawn_app_on, spawn_app_tuned, state_for, ServerProcess, TestApp, TestDb, Tokens,
    PASSWORD,
};
use serde_json::{json, Value};
use uuid::Uuid;

/// `(status, cause)` of every PresenceChanged of `user`, in order.
async fn changes(app: &TestApp, user: Uuid) -> Vec<(String, String)> {
    changes_in(&app.db.pool, user).await
}

async fn changes_in(pool: &sqlx::PgPool, user: Uuid) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT payload->'PresenceChanged'->>'to', payload->'PresenceChanged'->>'cause' FROM events
          WHERE aggregate_type = 'Presence' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(user.to_string())
    .fetch_all(pool)
    .await
    .expect("presence events")
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

async fn wait_for(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn heartbeats_keep_an_http_client_present_until_its_ttl_and_ghost_threshold() {
    let app = spawn_app_tuned(|h| {
        h.realtime.presence_ttl_secs = 1;
        h.realtime.presence_ghost_secs = 3;
    })
    .await;
    let (me, tokens) = app.user("student").await;
    let r = app
        .post(
            "/api/v1/heartbeat",
            Some(&tokens.access_token),
            json!({"device_id": "phone"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let beat = json_of(r).await;
    assert_eq!(beat["status"], "online");
    assert_eq!(beat["ttl"], 1);
    // Heartbeats that change nothing record nothing.
    for _ in 0..3 {
        app.post("/api/v1/heartbeat", Some(&tokens.access_token), json!({}))
            .await;
    }
    assert_eq!(changes(&app, me).await, pairs(&[("online", "connected")]));
    let mine = json_of(app.get("/api/v1/presence/me", &tokens.access_token).await).await;
    assert_eq!(mine["status"], "online");
    assert_eq!(mine["connections"][0]["kind"], "http");
    // Choosing away is a transition; an invalid choice is refused.
    let away = app
        .post(
            "/api/v1/presence/me",
            Some(&tokens.access_token),
            json!({"status": "away"}),
        )
        .await;
    assert_eq!(away.status(), 200);
    assert_eq!(json_of(away).await["status"], "away");
    let bad = app
        .post(
            "/api/v1/presence/me",
            Some(&tokens.access_token),
            json!({"status": "offline"}),
        )
        .await;
    assert_eq!(bad.status(), 422);
    // Then silence: reconnecting after the TTL, offline after the ghost threshold.
    wait_for("offline", Duration::from_secs(8), async || {
        changes(&app, me).await.last().map(|c| c.0.clone()) == Some("offline".into())
    })
    .await;
    assert_eq!(
        changes(&app, me).await,
        pairs(&[
            ("online", "connected"),
            ("away", "chosen"),
            ("reconnecting", "lost"),
            ("offline", "expired")
        ])
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM presence_connections WHERE user_id = '{me}'"
        ))
        .await,
        0
    );
    // A heartbeat within the reconnect window restores the chosen status.
    let back = json_of(
        app.post("/api/v1/heartbeat", Some(&tokens.access_token), json!({}))
            .await,
    )
    .await;
    assert_eq!(back["status"], "away");
    // Time travel: each presence state of the history equals a fresh replay.
    let (checked, _) = lectern_tests::assert_history_replays(&app.db.pool).await;
    assert!(checked.contains("Presence"), "{checked:?}");
}

#[tokio::test]
async fn lesson_presence_and_bulk_reads_show_only_what_the_caller_may_see() {
    let app = spawn_app_tuned(|_| {}).await;
    let (tutor_id, tutor) = app.user("tutor").await;
    let (student_id, student) = app.user("student").await;
    let (stranger_id, stranger) = app.user("student").await;
    let (lesson, _) = create_lesson(&app, &tutor, 5).await;
    enrol(&app, &student, lesson).await;
    app.post("/api/v1/heartbeat", Some(&student.access_token), json!({}))
        .await;
    app.post("/api/v1/heartbeat", Some(&stranger.access_token), json!({}))
        .await;
    // The projection catches up; the tutor sees the lesson's people.
    wait_for("projection", Duration::from_secs(5), async || {
        let page = json_of(
            app.get(
                &format!("/api/v1/presence/lessons/{lesson}"),
                &tutor.access_token,
            )
            .await,
        )
        .await;
        page["participants"][1]["status"] == "online"
    })
    .await;
    let page = json_of(
        app.get(
            &format!("/api/v1/presence/lessons/{lesson}"),
            &tutor.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(
        page["participants"][0],
        json!({"user_id": tutor_id, "role": "tutor", "status": "offline", "since": null})
    );
    assert_eq!(page["participants"][1]["user_id"], json!(student_id));
    assert_eq!(page["participants"].as_array().map(Vec::len), Some(2));
    // Someone outside the lesson may not look.
    let refused = app
        .get(
            &format!("/api/v1/presence/lessons/{lesson}"),
            &stranger.access_token,
        )
        .await;
    assert_eq!(refused.status(), 403);
    // Bulk: the student sees the tutor and themself, not the stranger.
    let bulk = json_of(
        app.post(
            "/api/v1/presence/bulk",
            Some(&student.access_token),
            json!({"user_ids": [tutor_id, stranger_id, student_id]}),
        )
        .await,
    )
    .await;
    let results = bulk["results"].as_array().expect("results");
    assert_eq!(results[0]["visible"], true);
    assert_eq!(results[0]["status"], "offline");
    assert_eq!(
        results[1],
        json!({"user_id": stranger_id, "visible": false})
    );
    assert_eq!(results[2]["status"], "online");
    let too_many: Vec<Uuid> = (0..101).map(|_| Uuid::new_v4()).collect();
    let r = app
        .post(
            "/api/v1/presence/bulk",
            Some(&student.access_token),
            json!({"user_ids": too_many}),
        )
        .await;
    assert_eq!(r.status(), 422);
}

/// A socket that authenticates and is then dropped without a close frame.
async fn raw_socket(
    addr: std::net::SocketAddr,
    token: &str,
    device: &str,
) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let handshake = format!(
        "GET /api/v1/realtime HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(handshake.as_bytes())
        .await
        .expect("handshake");
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).await.expect("the 101");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    let payload = json!({"type": "connect", "token": token, "device": device})
        .to_string()
        .into_bytes();
    let mask = [7u8, 1, 9, 3];
    let mut frame = vec![0x81u8, 0x80 | 126];
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).await.expect("the connect frame");
    // Wait for `connected`.
    let n = tcp.read(&mut buf).await.expect("connected");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("connected"));
    tcp
}

/// Every presence diff `ws` receives within `within`.
async fn diffs(ws: &mut Ws, within: Duration) -> Vec<Value> {
    let until = Instant::now() + within;
    let mut got = Vec::new();
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match ws.maybe_next(left).await {
            Some(f) if f["type"] == "presence" => got.push(f),
            Some(_) => {}
            None => break,
        }
    }
    got
}

#[tokio::test]
async fn a_reconnect_inside_the_grace_sends_no_offline_diff() {
    let app = spawn_app_tuned(|h| {
        h.realtime.presence_grace_secs = 4;
        h.realtime.presence_batch_ms = 300;
    })
    .await;
    let (_, tutor) = app.user("tutor").await;
    let (student_id, student) = app.user("student").await;
    let (lesson, _) = create_lesson(&app, &tutor, 5).await;
    enrol(&app, &student, lesson).await;
    let channel = format!("lesson:{lesson}");
    let (mut watcher, _) = Ws::connect(app.addr, &tutor.access_token).await;
    let subscribed = watcher.sub(&channel, None).await;
    assert_eq!(
        subscribed["presence"][student_id.to_string()],
        "offline",
        "{subscribed}"
    );
    let key = student_id.to_string();

    let dropped = raw_socket(app.addr, &student.access_token, "laptop").await;
    let online = diffs(&mut watcher, Duration::from_secs(2)).await;
    assert_eq!(
        online.last().map(|d| d["diff"][&key].clone()),
        Some(json!("online")),
        "{online:?}"
    );
    // Lost without a close, back within the grace from the same device.
    drop(dropped);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (back, _) = Ws::connect(app.addr, &student.access_token).await;
    let after = diffs(&mut watcher, Duration::from_secs(6)).await;
    assert!(
        after.iter().all(|d| d["diff"][&key] != "offline"),
        "an offline diff was sent: {after:?}"
    );
    assert!(changes(&app, student_id)
        .await
        .iter()
        .all(|c| c.0 != "offline"));
    // A clean goodbye is offline at once; and a loss past the grace too.
    back.close().await;
    let gone = diffs(&mut watcher, Duration::from_secs(2)).await;
    assert_eq!(
        gone.last().map(|d| d["diff"][&key].clone()),
        Some(json!("offline")),
        "{gone:?}"
    );
    let lost = raw_socket(app.addr, &student.access_token, "laptop").await;
    drop(lost);
    let expired = diffs(&mut watcher, Duration::from_secs(8)).await;
    let seen: Vec<Value> = expired
        .iter()
        .map(|d| d["diff"][&key].clone())
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(seen.last(), Some(&json!("offline")), "{expired:?}");
    assert!(
        seen.contains(&json!("reconnecting")) || seen.contains(&json!("online")),
        "{expired:?}"
    );
    // Counts only, for a large lesson.
    let (mut counter, _) = Ws::connect(app.addr, &tutor.access_token).await;
    counter
        .send(json!({"type": "sub", "id": 2, "channel": channel, "presence": "counts"}))
        .await;
    let counted = counter.next_of("subscribed").await;
    // The tutor is online (watching), the student is gone.
    assert_eq!(
        counted["presence"],
        json!({"online": 1, "busy": 0, "away": 0, "reconnecting": 0, "offline": 1})
    );
}

/// Register and log in through a server process's HTTP API.
async fn user_on(base: &str, role: &str) -> (Uuid, Tokens) {
    let client = reqwest::Client::new();
    let email = format!("{role}-{}@example.com", Uuid::new_v4().simple());
    let r = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD, "display_name": "Node User", "role": role}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), 201);
    let id: Uuid = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an id");
    let tokens: Tokens = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD, "device_fingerprint": "d"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("tokens");
    (id, tokens)
}

#[tokio::test]
async fn a_killed_nodes_users_go_offline_within_20_s_and_nobody_else_does() {
    let db = TestDb::new().await;
    let data_dir = tempdir();
    let mut server = ServerProcess::start(&db, &data_dir).await;
    let base = format!("http://{}", server.addr);
    let (on_killed, killed_tokens) = user_on(&base, "student").await;
    let state = state_for(&db, HttpConfig::for_tests());
    let app = spawn_app_on(db, state).await;
    let (survivor, survivor_tokens) = app.user("student").await;

    let (_doomed, _) = Ws::connect(server.addr, &killed_tokens.access_token).await;
    let (_alive, _) = Ws::connect(app.addr, &survivor_tokens.access_token).await;
    wait_for("both online", Duration::from_secs(5), async || {
        changes(&app, on_killed).await.len() == 1 && changes(&app, survivor).await.len() == 1
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM realtime_nodes").await, 2);

    server.kill9();
    let killed_at = Instant::now();
    wait_for(
        "the killed node's user offline",
        Duration::from_secs(20),
        async || {
            changes(&app, on_killed).await.last().map(|c| c.0.clone()) == Some("offline".into())
        },
    )
    .await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(20), "offline after {took:?}");
    assert_eq!(
        changes(&app, on_killed).await,
        pairs(&[
            ("online", "connected"),
            ("reconnecting", "lost"),
            ("offline", "expired")
        ])
    );
    // Nobody else changed.
    assert_eq!(
        changes(&app, survivor).await,
        pairs(&[("online", "connected")])
    );
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE aggregate_type = 'Presence'")
            .await,
        4
    );
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lectern-presence-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a data dir");
    dir
}
