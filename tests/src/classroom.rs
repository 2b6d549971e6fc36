//! Helpers for the classroom's HTTP tests: lessons, boards and chat as a
//! client drives them.

use lectern_domain::classroom::board::BoardModel;
use lectern_domain::classroom::OpKind;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::{json_of, TestApp, Tokens};

/// Counts the events requests write: not the roster copies and invoices
/// that process managers make after lesson commands, which land whenever
/// the reactions get to them.
pub const EVENTS_BY_REQUESTS: &str =
    "SELECT count(*) FROM events WHERE event_type <> 'RosterSynced' AND aggregate_type <> 'Invoice'";

/// A valid lesson starting tomorrow, priced 15.00 EUR, with `capacity`.
pub fn lesson_body(capacity: u32) -> Value {
    json!({"title": "Algebra", "description": "Linear equations",
           "starts_at": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
           "duration_minutes": 60, "capacity": capacity,
           "price": {"amount_minor": 1500, "currency": "EUR"}})
}

/// The `position` token of a command's answer.
pub fn position_of(answer: &Value) -> String {
    answer["position"]
        .as_str()
        .expect("a command's answer has a position")
        .to_owned()
}

/// Schedule a lesson as `tutor`; its id and the command's position.
pub async fn create_lesson(app: &TestApp, tutor: &Tokens, capacity: u32) -> (Uuid, String) {
    let r = app
        .post(
            "/api/v1/lessons",
            Some(&tutor.access_token),
            lesson_body(capacity),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body = json_of(r).await;
    let id = body["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a lesson id");
    (id, position_of(&body))
}

/// `POST /api/v1/lessons/{lesson}/{what}` (start, end, cancel) as `t`.
pub async fn action(app: &TestApp, t: &Tokens, lesson: Uuid, what: &str) -> reqwest::Response {
    app.post(
        &format!("/api/v1/lessons/{lesson}/{what}"),
        Some(&t.access_token),
        json!({}),
    )
    .await
}

/// Enrol `student` in `lesson`; asserts 201.
pub async fn enrol(app: &TestApp, student: &Tokens, lesson: Uuid) {
    let r = app
        .post(
            &format!("/api/v1/lessons/{lesson}/enrollments"),
            Some(&student.access_token),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// A live lesson's board: the board (lesson) id, its tutor and one
/// enrolled student.
pub struct LiveBoard {
    /// The board, which is the lesson's id.
    pub board: Uuid,
    /// The lesson's tutor.
    pub tutor: Tokens,
    /// An enrolled student.
    pub student: Tokens,
}

/// A lesson with one enrolled student, started.
pub async fn live_board(app: &TestApp) -> LiveBoard {
    let (_, tutor) = app.user("tutor").await;
    let (_, student) = app.user("student").await;
    let (board, _) = create_lesson(app, &tutor, 5).await;
    enrol(app, &student, board).await;
    assert_eq!(
        action(app, &tutor, board, "start").await.status(),
        StatusCode::OK
    );
    // The board and channel take their roster from the lesson a moment
    // later; a test counting offsets starts once that copy has landed.
    let version: i64 = sqlx::query_scalar(
        "SELECT max(sequence) FROM events WHERE aggregate_type = 'Lesson' AND aggregate_id = $1",
    )
    .bind(board.to_string())
    .fetch_one(&app.db.pool)
    .await
    .expect("the lesson's version");
    wait_for_roster_copies(&app.db.pool, board, version, Duration::from_secs(10)).await;
    LiveBoard {
        board,
        tutor,
        student,
    }
}

/// Apply `ops` to `board` as `t`; the status and JSON answer.
pub async fn draw(app: &TestApp, t: &Tokens, board: Uuid, ops: Vec<Value>) -> (StatusCode, Value) {
    let r = app
        .post(
            &format!("/api/v1/boards/{board}/ops/batch"),
            Some(&t.access_token),
            json!({"ops": ops}),
        )
        .await;
    let status = r.status();
    (status, json_of(r).await)
}

/// One operation as a client sends it.
pub fn op(client: &str, id: &str, lamport: u64, kind: &str, el: &str, data: Value) -> Value {
    json!({"client_id": client, "op_id": id, "lamport": lamport, "kind": kind, "element_id": el, "data": data})
}

/// Every op of a board, through the paged feed, once the projection has
/// passed `position`.
pub async fn all_ops(app: &TestApp, t: &Tokens, board: Uuid, position: &str) -> Vec<Value> {
    let mut ops = Vec::new();
    let mut url =
        format!("/api/v1/boards/{board}/ops?since_version=0&limit=100&consistent_with={position}");
    loop {
        let page = json_of(app.get(&url, &t.access_token).await).await;
        ops.extend(page["results"].as_array().expect("a page").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("/api/v1/boards/{board}/ops?cursor={c}&limit=100"),
            None => return ops,
        }
    }
}

/// Replay the op feed as a client would.
pub fn replay(ops: &[Value]) -> BoardModel {
    let mut model = BoardModel::default();
    for o in ops {
        let kind: OpKind = serde_json::from_value(o["kind"].clone()).expect("an op kind");
        model.apply(
            o["server_version"].as_u64().expect("a version"),
            kind,
            o["element_id"].as_str(),
            &o["data"],
            o["target_version"].as_u64(),
        );
    }
    model
}

/// Send a chat message to `lesson` as `t`.
pub async fn send(
    app: &TestApp,
    lesson: Uuid,
    t: &Tokens,
    cid: &str,
    text: &str,
) -> reqwest::Response {
    app.post(
        &format!("/api/v1/lessons/{lesson}/messages"),
        Some(&t.access_token),
        json!({"client_message_id": cid, "text": text}),
    )
    .await
}

/// Acknowledge `t`'s deliveries in `lesson` up to `up_to` as `status`.
pub async fn ack(
    app: &TestApp,
    lesson: Uuid,
    t: &Tokens,
    up_to: u64,
    status: &str,
) -> reqwest::Response {
    app.post(
        "/api/v1/deliveries/ack",
        Some(&t.access_token),
        json!({"lesson_id": lesson, "up_to_seq": up_to, "status": status}),
    )
    .await
}

/// The sequence numbers of `t`'s pending deliveries, once the projection
/// has passed `position`.
pub async fn pending_seqs(app: &TestApp, t: &Tokens, position: &str) -> Vec<i64> {
    let page = json_of(
        app.get(
            &format!("/api/v1/me/deliveries/pending?consistent_with={position}"),
            &t.access_token,
        )
        .await,
    )
    .await;
    page["results"]
        .as_array()
        .expect("a page")
        .iter()
        .map(|p| p["seq"].as_i64().expect("a seq"))
        .collect()
}

/// `RosterSynced` events of lesson `lesson`'s board and channel that copied
/// lesson version `version`, with their causation ids.
pub async fn roster_copies(pool: &PgPool, lesson: Uuid, version: i64) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT aggregate_type, metadata->>'causation_id' FROM events
          WHERE aggregate_id = $1 AND event_type = 'RosterSynced'
            AND (payload->'RosterSynced'->'roster'->>'lesson_version')::bigint = $2
          ORDER BY aggregate_type",
    )
    .bind(lesson.to_string())
    .bind(version)
    .fetch_all(pool)
    .await
    .expect("read the roster copies")
}

/// Wait until the board and channel of `lesson` hold version `version`.
pub async fn wait_for_roster_copies(pool: &PgPool, lesson: Uuid, version: i64, within: Duration) {
    let deadline = Instant::now() + within;
    while roster_copies(pool, lesson, version).await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the roster copy of version {version} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
