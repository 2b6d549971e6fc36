//! Video sessions: the active-device and participant checks, one device at
//! a time (refused by default, taken over under the takeover policy with
//! `video.stop` pushed to the old device's user channel), signed playback
//! URLs, heartbeats, lease expiry and watch time.

use std::time::{Duration, Instant};

use lectern_tests::classroom::{create_lesson, enrol};
use lectern_tests::realtime::Ws;
use lectern_tests::{json_of, spawn_app_tuned, TestApp, Tokens};
use serde_json::{json, Value};
use uuid::Uuid;

async fn device(app: &TestApp, t: &Tokens, id: &str, activate: bool) {
    let r = app
        .post(
            "/api/v1/devices",
            Some(&t.access_token),
            json!({"device_id": id, "name": id, "platform": "web"}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    if activate {
        let r = app
            .post(
                &format!("/api/v1/devices/{id}/activate"),
                Some(&t.access_token),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }
}

async fn start(app: &TestApp, t: &Tokens, lesson: Uuid, device: &str) -> (u16, Value) {
    let r = app
        .post(
            "/api/v1/video/sessions",
            Some(&t.access_token),
            json!({"lesson_id": lesson, "device_id": device}),
        )
        .await;
    let status = r.status().as_u16();
    (status, json_of(r).await)
}

async fn playback_events(app: &TestApp, user: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM events WHERE aggregate_type = 'Playback' AND aggregate_id = $1 ORDER BY sequence")
        .bind(user.to_string())
        .fetch_all(&app.db.pool)
        .await
        .expect("events")
}

/// A lesson with an enrolled student who has `phone` (active) and `laptop`.
async fn setup(app: &TestApp) -> (Uuid, Uuid, Tokens) {
    let (_, tutor) = app.user("tutor").await;
    let (student_id, student) = app.user("student").await;
    let (lesson, _) = create_lesson(app, &tutor, 5).await;
    enrol(app, &student, lesson).await;
    device(app, &student, "phone", true).await;
    device(app, &student, "laptop", false).await;
    (lesson, student_id, student)
}

#[tokio::test]
async fn one_device_plays_at_a_time_and_a_second_is_refused_by_default() {
    let app = spawn_app_tuned(|_| {}).await;
    let (lesson, student_id, student) = setup(&app).await;
    // Only the active device, only a participant.
    let (status, body) = start(&app, &student, lesson, "laptop").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("device_not_active"))
    );
    let (_, outsider) = app.user("student").await;
    device(&app, &outsider, "tablet", true).await;
    let (status, body) = start(&app, &outsider, lesson, "tablet").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_participant"))
    );

    let (status, first) = start(&app, &student, lesson, "phone").await;
    assert_eq!(status, 201, "{first}");
    let session = first["session_id"].as_str().expect("a session").to_owned();
    // The playback URL is signed and verifies; a changed byte does not.
    let url = first["playback_url"].as_str().expect("a url");
    let base = &app.state.http.realtime.video_base_url;
    assert!(lectern_api::routes::video::verify_playback_url(
        &app.state.auth.keyring,
        base,
        url
    ));
    let tampered = url.replace(&session, &Uuid::new_v4().to_string());
    assert!(!lectern_api::routes::video::verify_playback_url(
        &app.state.auth.keyring,
        base,
        &tampered
    ));
    assert!(first["session_token"]
        .as_str()
        .is_some_and(|t| t.starts_with(&session)));

    // The laptop becomes the active device; it may not start while the phone plays.
    let r = app
        .post(
            "/api/v1/devices/laptop/activate",
            Some(&student.access_token),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (status, refused) = start(&app, &student, lesson, "laptop").await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], "playback_active_elsewhere");
    assert_eq!(refused["session_id"], json!(session));
    assert_eq!(
        playback_events(&app, student_id).await,
        vec!["VideoStarted"]
    );

    // Heartbeats renew the lease; ending it frees the account.
    let beat = app
        .post(
            &format!("/api/v1/video/sessions/{session}/heartbeat"),
            Some(&student.access_token),
            json!({"position_ms": 15_000}),
        )
        .await;
    assert_eq!(beat.status(), 200);
    let ended = app
        .post(
            &format!("/api/v1/video/sessions/{session}/end"),
            Some(&student.access_token),
            json!({"position_ms": 16_000}),
        )
        .await;
    assert_eq!(ended.status(), 200);
    let again = app
        .post(
            &format!("/api/v1/video/sessions/{session}/heartbeat"),
            Some(&student.access_token),
            json!({"position_ms": 17_000}),
        )
        .await;
    assert_eq!(json_of(again).await["code"], "video_session_not_playing");
    let (status, _) = start(&app, &student, lesson, "laptop").await;
    assert_eq!(status, 201);
    assert_eq!(
        playback_events(&app, student_id).await,
        vec!["VideoStarted", "VideoEnded", "VideoStarted"]
    );
    let stored: (i64, String) = sqlx::query_as(
        "SELECT (payload->'VideoEnded'->>'position_ms')::bigint, metadata->>'actor_id' FROM events WHERE event_type = 'VideoEnded'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("the end");
    assert_eq!(stored, (16_000, student_id.to_string()));
    // Time travel: each playback state of the history equals a fresh replay.
    let (checked, _) = lectern_tests::assert_history_replays(&app.db.pool).await;
    assert!(checked.contains("Playback"), "{checked:?}");
}

#[tokio::test]
async fn under_the_takeover_policy_the_new_device_wins_and_the_old_is_told_to_stop() {
    let app = spawn_app_tuned(|h| h.realtime.video_policy = "takeover".into()).await;
    let (lesson, student_id, student) = setup(&app).await;
    let (status, first) = start(&app, &student, lesson, "phone").await;
    assert_eq!(status, 201);
    let old = first["session_id"].as_str().expect("a session").to_owned();
    // The phone listens on its user channel.
    let (mut phone, _) = Ws::connect(app.addr, &student.access_token).await;
    assert_eq!(
        phone.sub(&format!("user:{student_id}"), None).await["type"],
        "subscribed"
    );
    let r = app
        .post(
            "/api/v1/devices/laptop/activate",
            Some(&student.access_token),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (status, second) = start(&app, &student, lesson, "laptop").await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["took_over"], json!(old));
    let stop = phone.next_of("video.stop").await;
    assert_eq!(stop["session_id"], json!(old));
    assert_eq!(stop["device_id"], "phone");
    assert_eq!(stop["reason"], "taken_over");
    assert_eq!(
        playback_events(&app, student_id).await,
        vec!["VideoStarted", "VideoTakenOver", "VideoStarted"]
    );
    // The old session is over; heartbeats on the new one go over the socket too.
    let r = app
        .post(
            &format!("/api/v1/video/sessions/{old}/heartbeat"),
            Some(&student.access_token),
            json!({"position_ms": 1}),
        )
        .await;
    assert_eq!(r.status(), 409);
    let new = second["session_id"].as_str().expect("a session");
    phone
        .send(json!({"type": "cmd", "id": 3, "op": "video.heartbeat", "data": {"session_id": new, "position_ms": 5000}}))
        .await;
    let reply = phone.next_of("reply").await;
    assert_eq!(reply["status"], 200, "{reply}");
    assert_eq!(reply["data"]["session_id"], json!(new));
}

#[tokio::test]
async fn an_expired_lease_ends_the_session_with_an_event_and_counts_its_watch_time() {
    let app = spawn_app_tuned(|h| h.realtime.video_lease_secs = 2).await;
    let (lesson, student_id, student) = setup(&app).await;
    let (status, started) = start(&app, &student, lesson, "phone").await;
    assert_eq!(status, 201);
    let session = started["session_id"]
        .as_str()
        .expect("a session")
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let beat = json_of(
        app.post(
            &format!("/api/v1/video/sessions/{session}/heartbeat"),
            Some(&student.access_token),
            json!({"position_ms": 1200}),
        )
        .await,
    )
    .await;
    let watched = beat["watched_ms"].as_i64().expect("watched");
    assert!((1000..=3000).contains(&watched), "{beat}");
    // No more heartbeats: the lease runs out, and the session ends by itself.
    let started_waiting = Instant::now();
    while playback_events(&app, student_id).await.len() < 2 {
        assert!(
            started_waiting.elapsed() < Duration::from_secs(8),
            "the lease did not expire"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        playback_events(&app, student_id).await,
        vec!["VideoStarted", "VideoExpired"]
    );
    let r = app
        .post(
            &format!("/api/v1/video/sessions/{session}/heartbeat"),
            Some(&student.access_token),
            json!({"position_ms": 2}),
        )
        .await;
    assert_eq!(r.status(), 409);
    // Watch time, once the projection has it; and analytics per day.
    let started_waiting = Instant::now();
    loop {
        let mine = json_of(
            app.get("/api/v1/me/watch-time", &student.access_token)
                .await,
        )
        .await;
        if mine["results"].as_array().is_some_and(|r| !r.is_empty()) {
            assert_eq!(mine["results"][0]["lesson_id"], json!(lesson));
            assert_eq!(mine["results"][0]["sessions"], 1);
            assert_eq!(mine["results"][0]["watched_ms"].as_i64(), Some(watched));
            break;
        }
        assert!(started_waiting.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.count(&format!("SELECT sum(watched_ms)::bigint FROM analytics.watch_time_daily WHERE lesson_id = '{lesson}'")).await,
        watched
    );
    assert_eq!(app.count("SELECT count(*) FROM video_leases").await, 0);
}
