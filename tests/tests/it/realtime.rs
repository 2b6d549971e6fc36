//! The realtime gateway, through a real WebSocket client against the real
//! router and PostgreSQL: resume from the log, the subscribe race, fan-out
//! across processes, revocation, slow consumers, limits, commands, acks and
//! channel access.

use std::time::{Duration, Instant};

use lectern_api::config::{HttpConfig, WorkerConfig};
use lectern_api::realtime::protocol::close;
use lectern_api::workers::Workers;
use lectern_api::AppState;
use lectern_tests::classroom::{draw, enrol, live_board, op, send};
use lectern_tests::realtime::{offsets, End, Ws};
use lectern_tests::{json_of, serve, spawn_app, spawn_app_on, spawn_app_tuned, TestApp, TestDb};
use serde_json::{json, Value};
use uuid::Uuid;

fn ops(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            op(
                "c1",
                &format!("{prefix}-{i}"),
                i as u64 + 1,
                "add",
                &format!("{prefix}-e{i}"),
                json!({"i": i}),
            )
        })
        .collect()
}

/// The live `pub` frames of `channel` until one at `offset` arrives.
async fn pubs_until(ws: &mut Ws, channel: &str, offset: u64) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let f = ws.next().await;
        if f["type"] == "pub" && f["channel"] == channel {
            let at = f["offset"].as_u64().expect("an offset");
            got.push(f);
            if at >= offset {
                return got;
            }
        }
    }
}

async fn board_top(app: &TestApp, board: Uuid) -> u64 {
    app.count(&format!(
        "SELECT coalesce(max(sequence), 0) FROM events WHERE aggregate_type = 'Board' AND aggregate_id = '{board}'"
    ))
    .await as u64
}

#[tokio::test]
async fn a_resume_delivers_exactly_the_missed_ops_in_order_then_goes_live() {
    let app = spawn_app().await;
    let live = live_board(&app).await;
    let channel = format!("board:{}", live.board);
    let (mut ws, connected) = Ws::connect(app.addr, &live.student.access_token).await;
    let subscribed = ws.sub(&channel, None).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let epoch = subscribed["epoch"].as_str().expect("an epoch").to_owned();
    assert_eq!(connected["epoch"], epoch);
    let top = subscribed["top"].as_u64().expect("a top");
    assert_eq!(top, board_top(&app, live.board).await);
    assert!(
        subscribed.get("recovered").is_none(),
        "a fresh subscribe recovers nothing"
    );

    // Live: an op drawn over HTTP arrives at the next offset.
    let (status, _) = draw(&app, &live.tutor, live.board, ops("live", 1)).await;
    assert_eq!(status, 200);
    let first = pubs_until(&mut ws, &channel, top + 1).await;
    assert_eq!(offsets(&first), vec![top + 1]);
    assert_eq!(first[0]["event"], "OpApplied");
    assert_eq!(first[0]["data"]["op_id"], "live-0");
    assert!(first[0].get("metadata").is_none());
    ws.close().await;

    // Missed while away: 20 ops in 4 requests.
    for batch in 0..4 {
        let (status, _) = draw(
            &app,
            &live.tutor,
            live.board,
            ops(&format!("away{batch}"), 5),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (mut ws, _) = Ws::connect(app.addr, &live.student.access_token).await;
    let resumed = ws.sub(&channel, Some((&epoch, top + 1))).await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    let pubs = resumed["pubs"].as_array().expect("pubs").clone();
    assert_eq!(offsets(&pubs), ((top + 2)..=(top + 21)).collect::<Vec<_>>());
    let ids: Vec<&str> = pubs
        .iter()
        .map(|p| p["data"]["op_id"].as_str().expect("an op id"))
        .collect();
    let expected: Vec<String> = (0..4)
        .flat_map(|b| (0..5).map(move |i| format!("away{b}-{i}")))
        .collect();
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(resumed["top"], top + 21);
    assert_eq!(board_top(&app, live.board).await, top + 21);

    // Then live again, with no duplicate and no gap.
    let (status, _) = draw(&app, &live.tutor, live.board, ops("after", 1)).await;
    assert_eq!(status, 200);
    let next = pubs_until(&mut ws, &channel, top + 22).await;
    assert_eq!(offsets(&next), vec![top + 22]);
    assert_eq!(next[0]["data"]["op_id"], "after-0");
}

#[tokio::test]
async fn a_resume_past_the_cap_or_from_another_epoch_is_not_recovered() {
    let app = spawn_app_tuned(|h| h.realtime.resume_max_events = 5).await;
    let live = live_board(&app).await;
    let channel = format!("board:{}", live.board);
    let (mut ws, connected) = Ws::connect(app.addr, &live.student.access_token).await;
    let epoch = connected["epoch"].as_str().expect("an epoch").to_owned();
    let top = ws.sub(&channel, None).await["top"].as_u64().expect("a top");
    ws.close().await;
    let (status, _) = draw(&app, &live.tutor, live.board, ops("gap", 6)).await;
    assert_eq!(status, 200);

    let (mut ws, _) = Ws::connect(app.addr, &live.student.access_token).await;
    let past_cap = ws.sub(&channel, Some((&epoch, top))).await;
    assert_eq!(past_cap["recovered"], false, "{past_cap}");
    assert_eq!(past_cap["reason"], "too_many");
    assert_eq!(past_cap["pubs"], json!([]));
    assert_eq!(past_cap["top"], top + 6);
    // Five missed is within the cap.
    let within = ws.sub(&channel, Some((&epoch, top + 1))).await;
    assert_eq!(within["recovered"], true, "{within}");
    assert_eq!(
        offsets(within["pubs"].as_array().expect("pubs")),
        ((top + 2)..=(top + 6)).collect::<Vec<_>>()
    );
    // Another epoch's offsets mean nothing here.
    let other = ws.sub(&channel, Some(("0123456789abcdef", top + 5))).await;
    assert_eq!(other["recovered"], false, "{other}");
    assert_eq!(other["reason"], "epoch");
    assert_eq!(other["pubs"], json!([]));
    // An offset past the end cannot be resumed either.
    let ahead = ws.sub(&channel, Some((&epoch, top + 100))).await;
    assert_eq!(ahead["recovered"], false);
    assert_eq!(ahead["reason"], "offset_ahead");
}

#[tokio::test]
async fn a_resume_over_the_byte_cap_is_not_recovered() {
    let app = spawn_app_tuned(|h| h.realtime.resume_max_bytes = 4096).await;
    let live = live_board(&app).await;
    let channel = format!("board:{}", live.board);
    let (mut ws, connected) = Ws::connect(app.addr, &live.student.access_token).await;
    let epoch = connected["epoch"].as_str().expect("an epoch").to_owned();
    let top = ws.sub(&channel, None).await["top"].as_u64().expect("a top");
    let big = op(
        "c1",
        "big",
        1,
        "add",
        "big",
        json!({"blob": "x".repeat(5000)}),
    );
    assert_eq!(draw(&app, &live.tutor, live.board, vec![big]).await.0, 200);
    let too_large = ws.sub(&channel, Some((&epoch, top))).await;
    assert_eq!(too_large["recovered"], false, "{too_large}");
    assert_eq!(too_large["reason"], "too_large");
}

#[tokio::test]
async fn ops_committed_during_the_backlog_read_arrive_exactly_once() {
    let app = spawn_app().await;
    let live = live_board(&app).await;
    let channel = format!("board:{}", live.board);
    let (mut ws, connected) = Ws::connect(app.addr, &live.student.access_token).await;
    let epoch = connected["epoch"].as_str().expect("an epoch").to_owned();
    // A drawer commits ops one request at a time while the client resumes
    // from the start of the board.
    let drawer = {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/api/v1/boards/{}/ops/batch", live.board)),
            live.tutor.access_token.clone(),
        );
        tokio::spawn(async move {
            for i in 0..60 {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"ops": ops(&format!("race{i}"), 1)}))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(r.status(), 200);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let subscribed = ws.sub(&channel, Some((&epoch, 0))).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let mut seen: Vec<Value> = subscribed["pubs"].as_array().expect("pubs").clone();
    drawer.await.expect("the drawer finished");
    let last = board_top(&app, live.board).await;
    if offsets(&seen).last().copied().unwrap_or(0) < last {
        seen.extend(pubs_until(&mut ws, &channel, last).await);
    }
    assert_eq!(
        offsets(&seen),
        (1..=last).collect::<Vec<_>>(),
        "every offset once, in order"
    );
    // Nothing more arrives: no duplicate after the last.
    assert!(ws.maybe_next(Duration::from_millis(500)).await.is_none());
    let applied: Vec<&str> = seen
        .iter()
        .filter(|p| p["event"] == "OpApplied")
        .map(|p| p["data"]["op_id"].as_str().expect("an op id"))
        .collect();
    assert_eq!(
        applied,
        (0..60).map(|i| format!("race{i}-0")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_client_on_one_process_gets_ops_committed_through_another() {
    let db = TestDb::new().await;
    let key: [u8; 32] = rand::random();
    let ring = || {
        lectern_api::auth::tokens::Keyring::new(
            vec![("test-1".to_owned(), key.to_vec())],
            "lectern",
            "lectern-api",
        )
        .expect("a keyring")
    };
    let state_b = AppState::new(db.second_pool().await, HttpConfig::for_tests(), ring());
    let state_a = AppState::new(db.pool.clone(), HttpConfig::for_tests(), ring());
    let app = spawn_app_on(db, state_a).await;
    let _workers_b = Workers::start(&state_b, &WorkerConfig::default(), &app.db.cancel)
        .await
        .expect("process B's background work");
    let addr_b = serve(lectern_api::router(state_b.clone())).await;

    let live = live_board(&app).await;
    let channel = format!("board:{}", live.board);
    let (mut on_b, _) = Ws::connect(addr_b, &live.student.access_token).await;
    let top = on_b.sub(&channel, None).await["top"]
        .as_u64()
        .expect("a top");
    let (mut on_a, _) = Ws::connect(app.addr, &live.student.access_token).await;
    on_a.sub(&channel, None).await;
    assert_eq!(
        draw(&app, &live.tutor, live.board, ops("cross", 3)).await.0,
        200
    );
    let got_b = pubs_until(&mut on_b, &channel, top + 3).await;
    assert_eq!(offsets(&got_b), vec![top + 1, top + 2, top + 3]);
    assert_eq!(got_b[2]["data"]["op_id"], "cross-2");
    let got_a = pubs_until(&mut on_a, &channel, top + 3).await;
    assert_eq!(got_a, got_b, "both processes send the same frames");

    // Revoking the session on A closes its sockets on both, within a second.
    let started = Instant::now();
    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/me/sessions/{}", live.student.session_id),
            Some(&live.student.access_token),
            None,
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_eq!(
        on_b.end(Duration::from_secs(2)).await,
        End::Code(close::REVOKED)
    );
    assert_eq!(
        on_a.end(Duration::from_secs(2)).await,
        End::Code(close::REVOKED)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(state_b.realtime.closes.count(close::REVOKED), 1);
    assert_eq!(app.state.realtime.closes.count(close::REVOKED), 1);
    // The revoked token cannot connect again.
    let mut again = Ws::open(addr_b).await;
    again
        .send(json!({"type": "connect", "token": live.student.access_token}))
        .await;
    assert_eq!(again.next().await["error"]["code"], "token_revoked");
    assert_eq!(
        again.end(Duration::from_secs(2)).await,
        End::Code(close::INVALID_TOKEN)
    );
}

#[tokio::test]
async fn a_burst_of_hundreds_of_ops_reaches_a_reading_client_whole() {
    let app = spawn_app().await;
    let live = live_board(&app).await;
    let channel = format!("board:{}", live.board);
    let (mut ws, _) = Ws::connect(app.addr, &live.student.access_token).await;
    let top = ws.sub(&channel, None).await["top"].as_u64().expect("a top");
    // Five requests of 100 ops at once: the board's queue commits them
    // together, and the tailer hands the socket hundreds of events in one
    // read, more than a queue of 256 frames holds. A client that reads is
    // not slow for that.
    let batch = |r: usize| -> Vec<Value> {
        (0..100)
            .map(|i| {
                let id = format!("burst{r}-{i}");
                op(
                    &format!("c{r}"),
                    &id,
                    i as u64 + 1,
                    "add",
                    &id,
                    json!({"i": i}),
                )
            })
            .collect()
    };
    let answers =
        futures::future::join_all((0..5).map(|r| draw(&app, &live.tutor, live.board, batch(r))))
            .await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    let pubs = pubs_until(&mut ws, &channel, top + 500).await;
    assert_eq!(
        offsets(&pubs),
        ((top + 1)..=(top + 500)).collect::<Vec<_>>()
    );
    assert!(pubs.iter().all(|p| p["event"] == "OpApplied"));
    assert_eq!(board_top(&app, live.board).await, top + 500);
    assert_eq!(app.state.realtime.closes.count(close::SLOW), 0);
    // The socket is still open and live.
    let (status, _) = draw(&app, &live.tutor, live.board, ops("after", 1)).await;
    assert_eq!(status, 200);
    assert_eq!(
        offsets(&pubs_until(&mut ws, &channel, top + 501).await),
        vec![top + 501]
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_slow_with_its_queue_bounded() {
    let app = spawn_app().await;
    let live = live_board(&app).await;
    let channel = format!("board:{}", live.board);
    // A client with a small receive buffer, as a stalled phone would have.
    let (mut ws, _) = Ws::connect_small(app.addr, &live.student.access_token).await;
    ws.sub(&channel, None).await;
    // The client reads nothing from here on. Three drawers send 30 KB ops.
    let limit = app.state.http.realtime.outbound_bytes;
    let started = Instant::now();
    let drawers: Vec<_> = (0..3)
        .map(|d| {
            let (client, url, token) = (
                app.client.clone(),
                app.url(&format!("/api/v1/boards/{}/ops/batch", live.board)),
                live.tutor.access_token.clone(),
            );
            let hub = std::sync::Arc::clone(&app.state.realtime);
            tokio::spawn(async move {
                let mut i = 0;
                while hub.connections() > 0 && started.elapsed() < Duration::from_secs(8) {
                    let batch: Vec<Value> = (0..25)
                        .map(|j| {
                            let id = format!("slow{d}-{i}-{j}");
                            op(
                                "c1",
                                &id,
                                1,
                                "add",
                                &id,
                                json!({"blob": "y".repeat(30_000)}),
                            )
                        })
                        .collect();
                    i += 1;
                    let r = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({ "ops": batch }))
                        .send()
                        .await
                        .expect("sent");
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    // Closed as slow within 5 s: when its queue overflows, or when a write
    // stalls past the write timeout because the kernel's buffers are full.
    let mut peak = 0;
    while app.state.realtime.connections() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not closed within 5 s"
        );
        peak = peak.max(app.state.realtime.queued_bytes());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let closed_after = started.elapsed();
    for d in drawers {
        d.await.expect("a drawer");
    }
    assert!(peak <= limit, "queued {peak} bytes, over the {limit} limit");
    assert_eq!(
        app.state.realtime.closes.count(close::SLOW),
        1,
        "closed after {closed_after:?}"
    );
    assert_eq!(app.state.realtime.queued_bytes(), 0);
    // Other clients are unaffected: a new socket subscribes and reads.
    let (mut other, _) = Ws::connect(app.addr, &live.tutor.access_token).await;
    assert_eq!(other.sub(&channel, None).await["type"], "subscribed");
}

#[tokio::test]
async fn the_socket_limits_hold() {
    let app = spawn_app_tuned(|h| {
        h.realtime.auth_timeout_secs = 1;
        h.realtime.max_connections_per_user = 2;
        h.realtime.max_channels = 2;
        h.realtime.max_frame_bytes = 1024;
        h.realtime.frames_per_sec = 5;
    })
    .await;
    let live = live_board(&app).await;
    let token = live.student.access_token.clone();

    // No connect within the deadline.
    let started = Instant::now();
    let mut idle = Ws::open(app.addr).await;
    assert_eq!(
        idle.end(Duration::from_secs(5)).await,
        End::Code(close::AUTH_TIMEOUT)
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // A first frame that is not connect, and a bad token.
    let mut early = Ws::open(app.addr).await;
    early
        .send(json!({"type": "sub", "channel": format!("board:{}", live.board)}))
        .await;
    assert_eq!(early.next().await["type"], "error");
    assert_eq!(
        early.end(Duration::from_secs(2)).await,
        End::Code(close::PROTOCOL)
    );
    let mut forged = Ws::open(app.addr).await;
    forged
        .send(json!({"type": "connect", "token": "not-a-token"}))
        .await;
    assert_eq!(forged.next().await["error"]["code"], "invalid_token");
    assert_eq!(
        forged.end(Duration::from_secs(2)).await,
        End::Code(close::INVALID_TOKEN)
    );

    // Two sockets per user; the third is refused.
    let (mut one, _) = Ws::connect(app.addr, &token).await;
    let (_two, _) = Ws::connect(app.addr, &token).await;
    let mut three = Ws::open(app.addr).await;
    three.send(json!({"type": "connect", "token": token})).await;
    assert_eq!(three.next().await["error"]["code"], "too_many_connections");
    assert_eq!(
        three.end(Duration::from_secs(2)).await,
        End::Code(close::TOO_MANY_CONNECTIONS)
    );

    // Two channels per socket.
    assert_eq!(
        one.sub(&format!("board:{}", live.board), None).await["type"],
        "subscribed"
    );
    assert_eq!(
        one.sub(&format!("chat:{}", live.board), None).await["type"],
        "subscribed"
    );
    let third = one.sub(&format!("lesson:{}", live.board), None).await;
    assert_eq!(third["error"]["code"], "too_many_channels", "{third}");
    // Unknown channels and frames.
    let unknown = one.sub("video:nope", None).await;
    assert_eq!(unknown["error"]["code"], "unknown_channel");

    // A frame over the limit closes the socket.
    one.send_text(
        json!({"type": "cursor", "channel": "x", "x": 1, "y": 2, "pad": "z".repeat(2000)})
            .to_string(),
    )
    .await;
    assert_eq!(
        one.end(Duration::from_secs(2)).await,
        End::Code(close::FRAME_TOO_LARGE)
    );

    // A frame that is not JSON breaks the protocol.
    let (mut garbled, _) = Ws::connect(app.addr, &token).await;
    garbled.send_text("not json".to_owned()).await;
    assert_eq!(garbled.next().await["error"]["code"], "bad_request");
    assert_eq!(
        garbled.end(Duration::from_secs(2)).await,
        End::Code(close::PROTOCOL)
    );

    // Frames faster than the socket's rate close it (4429).
    let (mut chatty, _) = Ws::connect(app.addr, &token).await;
    for _ in 0..11 {
        chatty
            .send(json!({"type": "cursor", "channel": format!("board:{}", live.board), "x": 1, "y": 2}))
            .await;
    }
    assert_eq!(chatty.next().await["error"]["code"], "rate_limited");
    assert_eq!(
        chatty.end(Duration::from_secs(2)).await,
        End::Code(close::RATE_LIMITED)
    );
    assert_eq!(app.state.realtime.closes.count(close::RATE_LIMITED), 1);

    // A plain GET is told to upgrade.
    let r = app.get("/api/v1/realtime", &token).await;
    assert_eq!(r.status(), 426);
    assert_eq!(json_of(r).await["code"], "websocket_upgrade_required");
}

#[tokio::test]
async fn an_unanswered_ping_closes_the_socket_and_a_token_expiry_too() {
    let app = spawn_app_tuned(|h| {
        h.realtime.ping_secs = 1;
        h.realtime.pong_timeout_secs = 1;
    })
    .await;
    let (_, tutor) = app.user("tutor").await;
    // A client that answers pings (tungstenite does, as browsers do) stays.
    let (mut alive, _) = Ws::connect(app.addr, &tutor.access_token).await;
    assert!(alive
        .maybe_next(Duration::from_millis(3500))
        .await
        .is_none());
    assert_eq!(app.state.realtime.connections(), 1);
    // A raw TCP client that completed the handshake and then never reads
    // (so never answers a ping) is dropped.
    let ghost = raw_ghost(app.addr, &tutor.access_token).await;
    let started = Instant::now();
    while app.state.realtime.closes.count(close::PONG_TIMEOUT) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the ghost was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(ghost);
    assert_eq!(app.state.realtime.connections(), 1);
    alive.close().await;

    // A token that expires closes the socket with 4401.
    let claims_token = short_token(&app, &tutor, 2).await;
    let (mut expiring, connected) = Ws::connect(app.addr, &claims_token).await;
    assert!(
        connected["expires_at"].as_i64().expect("expires_at") <= chrono::Utc::now().timestamp() + 2
    );
    assert_eq!(
        expiring.end(Duration::from_secs(6)).await,
        End::Code(close::TOKEN_EXPIRED)
    );
    // A refresh before expiry keeps it open.
    let (mut refreshed, _) = Ws::connect(app.addr, &short_token(&app, &tutor, 2).await).await;
    refreshed
        .send(json!({"type": "refresh", "id": 9, "token": tutor.access_token}))
        .await;
    let answer = refreshed.next_of("refreshed").await;
    assert_eq!(answer["id"], 9);
    assert!(refreshed.maybe_next(Duration::from_secs(3)).await.is_none());
    assert_eq!(
        app.state.realtime.connections(),
        1,
        "the refreshed socket is open"
    );
    assert_eq!(app.state.realtime.closes.count(close::TOKEN_EXPIRED), 1);
}

/// A WebSocket client that sends `connect` and then never reads again.
async fn raw_ghost(addr: std::net::SocketAddr, token: &str) -> tokio::net::TcpStream {
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
    // One masked text frame: the connect.
    let payload = json!({"type": "connect", "token": token})
        .to_string()
        .into_bytes();
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81u8];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).await.expect("the connect frame");
    tcp
}

/// An access token for `tokens`' user and session that expires in `secs`.
async fn short_token(app: &TestApp, tokens: &lectern_tests::Tokens, secs: i64) -> String {
    let (claims, _) = app
        .state
        .auth
        .keyring
        .verify(&tokens.access_token)
        .expect("a valid token");
    let mut claims = claims;
    claims.exp = chrono::Utc::now().timestamp() + secs;
    claims.jti = Uuid::new_v4();
    app.state.auth.keyring.sign(&claims)
}

#[tokio::test]
async fn commands_over_the_socket_run_as_over_http() {
    let app = spawn_app().await;
    let live = live_board(&app).await;
    let (mut ws, _) = Ws::connect(app.addr, &live.student.access_token).await;
    let chat = format!("chat:{}", live.board);
    ws.send(
        json!({"type": "cmd", "id": 11, "op": "chat.send", "channel": chat,
                   "data": {"client_message_id": "ws-1", "text": "over the socket"}}),
    )
    .await;
    let reply = ws.next_of("reply").await;
    assert_eq!(reply["id"], 11);
    assert_eq!(reply["status"], 201, "{reply}");
    assert_eq!(reply["data"]["seq"], 1);
    let stored: (String, String) = sqlx::query_as(
        "SELECT payload->'MessageSent'->>'text', metadata->>'request_id' FROM events
          WHERE aggregate_type = 'Channel' AND aggregate_id = $1 AND event_type = 'MessageSent'",
    )
    .bind(live.board.to_string())
    .fetch_one(&app.db.pool)
    .await
    .expect("the message is stored");
    assert_eq!(stored.0, "over the socket");
    assert!(stored.1.starts_with("ws-"), "{}", stored.1);
    // The same client_message_id again is the same message (200, duplicate).
    ws.send(
        json!({"type": "cmd", "id": 12, "op": "chat.send", "channel": chat,
                   "data": {"client_message_id": "ws-1", "text": "over the socket"}}),
    )
    .await;
    let again = ws.next_of("reply").await;
    assert_eq!(
        (again["status"].clone(), again["data"]["duplicate"].clone()),
        (json!(200), json!(true))
    );
    // Bad input is a problem in the reply, and nothing is written.
    ws.send(
        json!({"type": "cmd", "id": 13, "op": "chat.send", "channel": chat,
                   "data": {"client_message_id": "ws-2", "text": ""}}),
    )
    .await;
    let bad = ws.next_of("reply").await;
    assert_eq!(bad["error"]["status"], 422, "{bad}");
    assert_eq!(bad["error"]["errors"][0]["pointer"], "#/text");
    // Board ops.
    ws.send(json!({"type": "cmd", "id": 14, "op": "board.ops", "channel": format!("board:{}", live.board),
                   "data": {"ops": ops("ws", 2)}}))
        .await;
    let drawn = ws.next_of("reply").await;
    assert_eq!(drawn["status"], 200, "{drawn}");
    assert_eq!(drawn["data"]["results"][1]["status"], "applied");
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM events WHERE aggregate_id = '{}' AND event_type IN ('MessageSent', 'OpApplied')", live.board)).await,
        3
    );
    // Someone who does not take part is refused, and the refusal recorded.
    let (_, outsider) = app.user("student").await;
    let (mut out, _) = Ws::connect(app.addr, &outsider.access_token).await;
    out.send(
        json!({"type": "cmd", "id": 15, "op": "chat.send", "channel": chat,
                    "data": {"client_message_id": "x", "text": "let me in"}}),
    )
    .await;
    let refused = out.next_of("reply").await;
    assert_eq!(refused["error"]["code"], "not_participant", "{refused}");
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'AccessDenied'")
            .await,
        1
    );
    // An unknown command.
    out.send(json!({"type": "cmd", "id": 16, "op": "lesson.delete", "channel": chat, "data": {}}))
        .await;
    assert_eq!(
        out.next_of("reply").await["error"]["code"],
        "unknown_command"
    );
}

#[tokio::test]
async fn a_hundred_acks_in_a_second_write_at_most_one_event_per_second() {
    let app = spawn_app().await;
    let live = live_board(&app).await;
    for i in 0..3 {
        assert_eq!(
            send(&app, live.board, &live.tutor, &format!("m{i}"), "hi")
                .await
                .status(),
            201
        );
    }
    let (mut ws, _) = Ws::connect(app.addr, &live.student.access_token).await;
    let chat = format!("chat:{}", live.board);
    let started = Instant::now();
    for i in 0..100u64 {
        let recv = 1 + (i * 3 / 100).min(2);
        ws.send(json!({"type": "ack", "channel": chat, "recv": recv, "read": if i >= 90 { 3 } else { 1 }})).await;
        tokio::time::sleep(Duration::from_millis(9)).await;
    }
    assert!(started.elapsed() < Duration::from_millis(1500));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let rows: Vec<(String, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT payload->'DeliveriesAcknowledged'->>'status', (payload->'DeliveriesAcknowledged'->>'up_to_seq')::bigint, recorded_at
           FROM events WHERE event_type = 'DeliveriesAcknowledged' ORDER BY global_position",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("acks");
    assert!(!rows.is_empty() && rows.len() <= 3, "{rows:?}");
    for pair in rows.windows(2) {
        let gap = pair[1].2 - pair[0].2;
        assert!(
            gap >= chrono::Duration::milliseconds(950),
            "two ack events {gap} apart: {rows:?}"
        );
    }
    let last = rows.last().expect("an ack");
    assert_eq!(
        (last.0.as_str(), last.1),
        ("read", 3),
        "the last marks win: {rows:?}"
    );
}

#[tokio::test]
async fn stubs_keep_offsets_contiguous_and_hide_what_a_subscriber_may_not_see() {
    let app = spawn_app().await;
    let live = live_board(&app).await;
    let channel = format!("board:{}", live.board);
    let (mut student, _) = Ws::connect(app.addr, &live.student.access_token).await;
    let (mut tutor, _) = Ws::connect(app.addr, &live.tutor.access_token).await;
    let top = student.sub(&channel, None).await["top"]
        .as_u64()
        .expect("a top");
    tutor.sub(&channel, None).await;
    // The tutor's op on an element that does not exist is rejected: only
    // the tutor sees why.
    let bad = op("c1", "nope", 1, "update", "missing", json!({}));
    let (status, answer) = draw(&app, &live.tutor, live.board, vec![bad]).await;
    assert_eq!(status, 200);
    assert_eq!(answer["results"][0]["status"], "rejected");
    // The roster copies landed before `top`: the rejection comes next.
    let rejected_at = app
        .count(&format!(
            "SELECT sequence FROM events WHERE aggregate_id = '{}' AND event_type = 'OpRejected'",
            live.board
        ))
        .await as u64;
    assert_eq!(rejected_at, top + 1);
    let seen_by_student = pubs_until(&mut student, &channel, rejected_at).await;
    assert_eq!(
        seen_by_student.last(),
        Some(&json!({"type": "pub", "channel": channel, "offset": rejected_at, "skip": true}))
    );
    assert_eq!(
        offsets(&seen_by_student),
        ((top + 1)..=rejected_at).collect::<Vec<_>>()
    );
    let seen_by_tutor = pubs_until(&mut tutor, &channel, rejected_at).await;
    let last = seen_by_tutor.last().expect("the rejection");
    assert_eq!(last["event"], "OpRejected");
    assert_eq!(last["data"]["reason"], "unknown_element", "{last}");
    // A resume from the start shows the same, every offset once.
    let (mut again, connected) = Ws::connect(app.addr, &live.student.access_token).await;
    let resumed = again
        .sub(
            &channel,
            Some((connected["epoch"].as_str().expect("epoch"), 0)),
        )
        .await;
    let pubs = resumed["pubs"].as_array().expect("pubs");
    let end = board_top(&app, live.board).await;
    assert_eq!(offsets(pubs), (1..=end).collect::<Vec<_>>());
    assert_eq!(pubs[rejected_at as usize - 1]["skip"], true);
    let roster_copies = app
        .count(&format!(
            "SELECT count(*) FROM events WHERE aggregate_id = '{}' AND event_type = 'RosterSynced' AND aggregate_type = 'Board'",
            live.board
        ))
        .await;
    assert!(roster_copies >= 1);
    assert_eq!(
        pubs.iter().filter(|p| p["skip"] == true).count() as i64,
        roster_copies + 1,
        "the roster copies and the rejection are stubs, and nothing else"
    );
}

#[tokio::test]
async fn an_unenrolled_student_is_unsubscribed() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (student_id, student) = app.user("student").await;
    let (lesson, _) = lectern_tests::classroom::create_lesson(&app, &tutor, 5).await;
    enrol(&app, &student, lesson).await;
    let (mut ws, _) = Ws::connect(app.addr, &student.access_token).await;
    let chat = format!("chat:{lesson}");
    assert_eq!(ws.sub(&chat, None).await["type"], "subscribed");
    let lesson_channel = format!("lesson:{lesson}");
    assert_eq!(ws.sub(&lesson_channel, None).await["type"], "subscribed");
    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/lessons/{lesson}/enrollments/{student_id}"),
            Some(&tutor.access_token),
            None,
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let unsub = ws.next_of("unsub").await;
    assert_eq!(unsub["channel"], chat);
    assert_eq!(unsub["reason"], "not_participant");
    // The lesson channel stays: anyone may read lessons.
    assert_eq!(
        ws.sub(&chat, None).await["error"]["code"],
        "not_participant"
    );
}

/// Which channel kinds each role may subscribe to, on a lesson it does not
/// take part in. Columns: admin, auditor, tutor, student, guest.
const CHANNELS: &[(&str, [&str; 5])] = &[
    (
        "board",
        [
            "ok",
            "ok",
            "not_participant",
            "not_participant",
            "forbidden",
        ],
    ),
    (
        "chat",
        [
            "ok",
            "ok",
            "not_participant",
            "not_participant",
            "forbidden",
        ],
    ),
    ("lesson", ["ok", "ok", "ok", "ok", "ok"]),
    ("user:self", ["ok", "ok", "ok", "ok", "ok"]),
    (
        "user:other",
        [
            "not_owner",
            "not_owner",
            "not_owner",
            "not_owner",
            "not_owner",
        ],
    ),
];

#[tokio::test]
async fn every_channel_kind_answers_every_role_as_the_matrix_says() {
    let app = spawn_app().await;
    let (owner_id, owner) = app.user("tutor").await;
    let (lesson, _) = lectern_tests::classroom::create_lesson(&app, &owner, 5).await;
    let mut failures = Vec::new();
    let mut refusals = 0;
    for (column, role) in ["admin", "auditor", "tutor", "student", "guest"]
        .into_iter()
        .enumerate()
    {
        let (me, tokens) = app.user(role).await;
        let (mut ws, _) = Ws::connect(app.addr, &tokens.access_token).await;
        for (kind, expected) in CHANNELS {
            let channel = match *kind {
                "user:self" => format!("user:{me}"),
                "user:other" => format!("user:{owner_id}"),
                k => format!("{k}:{lesson}"),
            };
            let answer = ws.sub(&channel, None).await;
            let got = if answer["type"] == "subscribed" {
                "ok".to_owned()
            } else {
                answer["error"]["code"].as_str().unwrap_or("?").to_owned()
            };
            if got != expected[column] {
                failures.push(format!(
                    "{role} {kind}: expected {}, got {got}",
                    expected[column]
                ));
            }
            if got != "ok" {
                refusals += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Every refusal is an AccessDenied event.
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'AccessDenied'")
            .await,
        refusals
    );
    // Without connect, nothing: an anonymous sub breaks the protocol.
    let mut anonymous = Ws::open(app.addr).await;
    anonymous
        .send(json!({"type": "sub", "channel": format!("lesson:{lesson}")}))
        .await;
    assert_eq!(anonymous.next().await["type"], "error");
    assert_eq!(
        anonymous.end(Duration::from_secs(2)).await,
        End::Code(close::PROTOCOL)
    );
}
