//! Process managers: a command answers on its own append, and its reactions
//! follow from the log, once, through faults and kill -9.
//!
//! The reaction under test is the roster copy: after a Lesson event, the
//! `classroom_roster` process manager copies the lesson's roster to its
//! board and channel (`RosterSynced`).

use std::time::{Duration, Instant};

use lectern_api::config::WorkerConfig;
use lectern_tests::classroom::{
    roster_copies as copies, wait_for_roster_copies as wait_for_copies,
};
use lectern_tests::{spawn_app, spawn_app_with, state_for, ServerProcess, TestDb, Tokens};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const PASSWORD: &str = lectern_tests::PASSWORD;

fn lesson_body() -> Value {
    json!({"title": "Algebra", "description": "",
           "starts_at": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
           "duration_minutes": 60, "capacity": 5,
           "price": {"amount_minor": 1500, "currency": "EUR"}})
}

/// Make every roster copy fail: a trigger refuses `RosterSynced` events, as
/// a failing downstream would.
async fn break_roster_copies(pool: &PgPool) {
    for sql in [
        "CREATE FUNCTION refuse_roster_copy() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.event_type = 'RosterSynced' THEN RAISE EXCEPTION 'injected fault'; END IF;
           RETURN NEW;
         END $$",
        "CREATE TRIGGER refuse_roster_copy BEFORE INSERT ON events
         FOR EACH ROW EXECUTE FUNCTION refuse_roster_copy()",
    ] {
        sqlx::query(sql)
            .execute(pool)
            .await
            .expect("inject the fault");
    }
}

async fn mend_roster_copies(pool: &PgPool) {
    sqlx::query("DROP TRIGGER refuse_roster_copy ON events")
        .execute(pool)
        .await
        .expect("remove the fault");
}

/// The event id and version of the lesson's last event of `event_type`.
async fn lesson_event(pool: &PgPool, lesson: Uuid, event_type: &str) -> (Uuid, i64) {
    sqlx::query_as(
        "SELECT event_id, sequence FROM events
          WHERE aggregate_type = 'Lesson' AND aggregate_id = $1 AND event_type = $2
          ORDER BY sequence DESC LIMIT 1",
    )
    .bind(lesson.to_string())
    .bind(event_type)
    .fetch_one(pool)
    .await
    .expect("the lesson event")
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.expect("a JSON body")
}

fn id_of(body: &Value) -> Uuid {
    body["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an id")
}

fn ops(client: &str) -> Value {
    json!({"ops": [{"client_id": client, "op_id": "1", "lamport": 1, "kind": "add",
                    "element_id": format!("{client}-el"), "data": {"x": 1}}]})
}

#[tokio::test]
async fn a_lesson_command_is_followed_by_one_roster_copy_that_names_its_cause() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let r = app
        .post("/api/v1/lessons", Some(&tutor.access_token), lesson_body())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let lesson = id_of(&json_of(r).await);
    let (scheduled, version) = lesson_event(&app.db.pool, lesson, "LessonScheduled").await;
    wait_for_copies(&app.db.pool, lesson, version, Duration::from_secs(10)).await;
    assert_eq!(
        copies(&app.db.pool, lesson, version).await,
        [
            ("Board".to_owned(), scheduled.to_string()),
            ("Channel".to_owned(), scheduled.to_string())
        ],
        "one copy on each, caused by the lesson event"
    );
}

#[tokio::test]
async fn a_student_who_just_enrolled_draws_and_chats_before_the_roster_copy_runs() {
    // No process managers at all: only the resync on refusal can help.
    let db = TestDb::new().await;
    let state = state_for(&db, lectern_api::config::HttpConfig::for_tests());
    let app = spawn_app_with(
        db,
        state,
        &WorkerConfig {
            run_projections: false,
            ..WorkerConfig::default()
        },
    )
    .await;
    let (_, tutor) = app.user("tutor").await;
    let (student_id, student) = app.user("student").await;
    let r = app
        .post("/api/v1/lessons", Some(&tutor.access_token), lesson_body())
        .await;
    let lesson = id_of(&json_of(r).await);
    let start = app
        .post(
            &format!("/api/v1/lessons/{lesson}/start"),
            Some(&tutor.access_token),
            json!({}),
        )
        .await;
    assert_eq!(start.status(), StatusCode::OK);
    let enrol = app
        .post(
            &format!("/api/v1/lessons/{lesson}/enrollments"),
            Some(&student.access_token),
            json!({}),
        )
        .await;
    assert_eq!(enrol.status(), StatusCode::CREATED);

    let (status, body) = {
        let r = app
            .post(
                &format!("/api/v1/boards/{lesson}/ops/batch"),
                Some(&student.access_token),
                ops("s1"),
            )
            .await;
        (r.status(), json_of(r).await)
    };
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["status"], "applied");
    let sent = app
        .post(
            &format!("/api/v1/lessons/{lesson}/messages"),
            Some(&student.access_token),
            json!({"client_message_id": "m1", "text": "hello"}),
        )
        .await;
    assert_eq!(sent.status(), StatusCode::CREATED);

    let (_, enrolled_at) = lesson_event(&app.db.pool, lesson, "StudentEnrolled").await;
    let roster: Vec<String> = sqlx::query_scalar(
        "SELECT jsonb_array_elements_text(payload->'RosterSynced'->'roster'->'students') FROM events
          WHERE aggregate_type = 'Board' AND aggregate_id = $1 AND event_type = 'RosterSynced'
            AND (payload->'RosterSynced'->'roster'->>'lesson_version')::bigint = $2",
    )
    .bind(lesson.to_string())
    .bind(enrolled_at)
    .fetch_all(&app.db.pool)
    .await
    .expect("the board's roster");
    assert_eq!(
        roster,
        [student_id.to_string()],
        "the refusal re-copied the roster"
    );
    let drawn: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'OpApplied'",
    )
    .bind(lesson.to_string())
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!(drawn, 1);
}

async fn enrol_with_key(
    client: &reqwest::Client,
    url: &str,
    student: &Tokens,
    key: &str,
) -> reqwest::Response {
    client
        .post(url)
        .bearer_auth(&student.access_token)
        .header("Idempotency-Key", key)
        .json(&json!({}))
        .send()
        .await
        .expect("the request is sent")
}

async fn enrolments(pool: &PgPool, lesson: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'StudentEnrolled'",
    )
    .bind(lesson.to_string())
    .fetch_one(pool)
    .await
    .expect("count")
}

#[tokio::test]
async fn a_failing_reaction_never_fails_its_command_and_catches_up_once_mended() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (_, student) = app.user("student").await;
    let r = app
        .post("/api/v1/lessons", Some(&tutor.access_token), lesson_body())
        .await;
    let lesson = id_of(&json_of(r).await);
    let (_, scheduled) = lesson_event(&app.db.pool, lesson, "LessonScheduled").await;
    wait_for_copies(&app.db.pool, lesson, scheduled, Duration::from_secs(10)).await;

    break_roster_copies(&app.db.pool).await;
    let url = app.url(&format!("/api/v1/lessons/{lesson}/enrollments"));
    let first = enrol_with_key(&app.client, &url, &student, "enrol-1").await;
    assert_eq!(
        first.status(),
        StatusCode::CREATED,
        "the command answers on its own append"
    );
    let first = json_of(first).await;
    let again = enrol_with_key(&app.client, &url, &student, "enrol-1").await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(json_of(again).await, first);
    assert_eq!(
        enrolments(&app.db.pool, lesson).await,
        1,
        "one key, one enrolment"
    );

    // The process manager tried, failed, and stopped at the event.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM projection_checkpoints WHERE name = 'classroom_roster'",
        )
        .fetch_optional(&app.db.pool)
        .await
        .expect("status");
        if status.as_deref() == Some("failed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reaction did not fail: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (enrolled, version) = lesson_event(&app.db.pool, lesson, "StudentEnrolled").await;
    assert!(copies(&app.db.pool, lesson, version).await.is_empty());

    mend_roster_copies(&app.db.pool).await;
    wait_for_copies(&app.db.pool, lesson, version, Duration::from_secs(40)).await;
    assert_eq!(
        copies(&app.db.pool, lesson, version).await,
        [
            ("Board".to_owned(), enrolled.to_string()),
            ("Channel".to_owned(), enrolled.to_string())
        ],
        "exactly one copy on each once mended"
    );
}

#[tokio::test]
async fn a_reaction_cut_off_by_kill_9_happens_after_restart_exactly_once() {
    let db = TestDb::new().await;
    let data_dir = std::env::temp_dir().join(format!("lectern-pm-{}", Uuid::new_v4().simple()));
    let mut server = ServerProcess::start(&db, &data_dir).await;
    let client = reqwest::Client::new();
    let login = |email: String, role: &'static str| {
        let client = client.clone();
        let (register, login) = (
            server.url("/api/v1/auth/register"),
            server.url("/api/v1/auth/login"),
        );
        async move {
            let r = client
                .post(register)
                .json(&json!({"email": email, "password": PASSWORD, "display_name": "T", "role": role}))
                .send()
                .await
                .expect("register");
            assert_eq!(r.status(), StatusCode::CREATED);
            let r = client
                .post(login)
                .json(&json!({"email": email, "password": PASSWORD, "device_fingerprint": "d"}))
                .send()
                .await
                .expect("login");
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Tokens>().await.expect("tokens")
        }
    };
    let tutor = login(
        format!("t-{}@example.com", Uuid::new_v4().simple()),
        "tutor",
    )
    .await;
    let student = login(
        format!("s-{}@example.com", Uuid::new_v4().simple()),
        "student",
    )
    .await;
    let r = client
        .post(server.url("/api/v1/lessons"))
        .bearer_auth(&tutor.access_token)
        .json(&lesson_body())
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let lesson = id_of(&json_of(r).await);
    let (_, scheduled) = lesson_event(&db.pool, lesson, "LessonScheduled").await;
    wait_for_copies(&db.pool, lesson, scheduled, Duration::from_secs(10)).await;

    // The enrolment commits; its reaction cannot, and the process dies.
    break_roster_copies(&db.pool).await;
    let url = server.url(&format!("/api/v1/lessons/{lesson}/enrollments"));
    let r = enrol_with_key(&client, &url, &student, "enrol-1").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (enrolled, version) = lesson_event(&db.pool, lesson, "StudentEnrolled").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9();
    assert!(copies(&db.pool, lesson, version).await.is_empty());
    mend_roster_copies(&db.pool).await;

    // A new process takes over the process manager and catches up.
    let server = ServerProcess::start(&db, &data_dir).await;
    wait_for_copies(&db.pool, lesson, version, Duration::from_secs(30)).await;
    assert_eq!(
        copies(&db.pool, lesson, version).await,
        [
            ("Board".to_owned(), enrolled.to_string()),
            ("Channel".to_owned(), enrolled.to_string())
        ],
        "the reaction happened once"
    );
    // The retried request is still answered from its key, and runs nothing.
    let url = server.url(&format!("/api/v1/lessons/{lesson}/enrollments"));
    let r = enrol_with_key(&client, &url, &student, "enrol-1").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(enrolments(&db.pool, lesson).await, 1);
    // Redelivering the log to a process manager changes nothing either.
    sqlx::query(
        "UPDATE projection_checkpoints SET last_tx = '0', last_position = 0
          WHERE name = 'classroom_roster'",
    )
    .execute(&db.pool)
    .await
    .expect("rewind the process manager");
    drop(server);
    let _server = ServerProcess::start(&db, &data_dir).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let caught_up: bool = sqlx::query_scalar(
            "SELECT last_position >= (SELECT max(global_position) FROM events WHERE aggregate_type = 'Lesson')
               FROM projection_checkpoints WHERE name = 'classroom_roster'",
        )
        .fetch_one(&db.pool)
        .await
        .expect("checkpoint");
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rewound process manager did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(copies(&db.pool, lesson, version).await.len(), 2);
    let all: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'RosterSynced'",
    )
    .bind(lesson.to_string())
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(
        all, 4,
        "two lesson versions, copied once each to board and channel"
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}
