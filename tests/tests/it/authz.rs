//! The authorization matrix: every route in the OpenAPI document, called by an
//! anonymous client and by each role, answers the status this table expects.
//! A route missing from the table fails the test, so no endpoint can be added
//! without deciding who may call it.

use lectern_tests::{spawn_app, TestApp, Tokens, PASSWORD};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

/// Columns: anonymous, admin, auditor, tutor, student, guest.
const CALLERS: [&str; 6] = ["anonymous", "admin", "auditor", "tutor", "student", "guest"];

/// What a call sends as its body.
#[derive(Clone, Copy)]
enum Body {
    None,
    Empty,
    Register,
    Login,
    Refresh,
    ChangePassword,
    ResetRequest,
    ResetConfirm,
    Profile,
    Device,
    Role,
    Lesson,
    LessonPatch,
    Bulk,
    Op,
    OpBatch,
    Policy,
    Message,
    Ack,
    PresenceStatus,
    PresenceBulk,
    VideoStart,
    VideoBeat,
    StripeEvent,
}

const ANY: [u16; 6] = [200; 6];
const AUTHED: [u16; 6] = [401, 200, 200, 200, 200, 200];
const ADMIN: [u16; 6] = [401, 200, 403, 403, 403, 403];
const HISTORY: [u16; 6] = [401, 200, 200, 403, 403, 403];
const MISSING: [u16; 6] = [401, 404, 404, 404, 404, 404];
const TUTOR_OWNS: [u16; 6] = [401, 404, 403, 404, 403, 403];
/// Admins, tutors and students past the policy; auditors and guests not.
const ENROLMENT: [u16; 6] = [401, 404, 403, 404, 404, 403];
/// Admins and auditors read any lesson's list, participants only theirs; the
/// matrix names a lesson that does not exist, so everyone past the policy
/// gets 404 (the chat test reads a real one).
const PARTICIPANTS_LIST: [u16; 6] = [401, 404, 404, 404, 404, 403];

/// (method, OpenAPI path, body, expected status per caller)
const MATRIX: &[(&str, &str, Body, [u16; 6])] = &[
    ("GET", "/health/live", Body::None, ANY),
    ("GET", "/health/ready", Body::None, ANY),
    ("GET", "/openapi.json", Body::None, ANY),
    ("GET", "/asyncapi.json", Body::None, ANY),
    // The socket authenticates its first frame; a plain GET is told to
    // upgrade, whoever asks. Channel access is the realtime tests' matrix.
    ("GET", "/api/v1/realtime", Body::None, [426; 6]),
    ("GET", "/docs", Body::None, ANY),
    ("POST", "/api/v1/auth/register", Body::Register, [201; 6]),
    ("POST", "/api/v1/auth/login", Body::Login, ANY),
    ("POST", "/api/v1/auth/refresh", Body::Refresh, ANY),
    ("POST", "/api/v1/auth/logout", Body::Empty, AUTHED),
    ("POST", "/api/v1/auth/logout-all", Body::Empty, AUTHED),
    ("GET", "/api/v1/auth/verify", Body::None, AUTHED),
    (
        "POST",
        "/api/v1/auth/change-password",
        Body::ChangePassword,
        AUTHED,
    ),
    (
        "POST",
        "/api/v1/auth/password-reset/request",
        Body::ResetRequest,
        [202; 6],
    ),
    (
        "POST",
        "/api/v1/auth/password-reset/confirm",
        Body::ResetConfirm,
        [422; 6],
    ),
    ("GET", "/api/v1/me", Body::None, AUTHED),
    ("PATCH", "/api/v1/me", Body::Profile, AUTHED),
    ("GET", "/api/v1/me/sessions", Body::None, AUTHED),
    ("DELETE", "/api/v1/me/sessions/{id}", Body::None, AUTHED),
    ("GET", "/api/v1/me/permissions", Body::None, AUTHED),
    (
        "POST",
        "/api/v1/devices",
        Body::Device,
        [401, 201, 201, 201, 201, 201],
    ),
    ("GET", "/api/v1/devices", Body::None, AUTHED),
    (
        "POST",
        "/api/v1/devices/{id}/activate",
        Body::Empty,
        [401, 404, 404, 404, 404, 404],
    ),
    (
        "DELETE",
        "/api/v1/devices/{id}",
        Body::None,
        [401, 404, 404, 404, 404, 404],
    ),
    ("GET", "/api/v1/admin/users", Body::None, ADMIN),
    ("PATCH", "/api/v1/admin/users/{id}/role", Body::Role, ADMIN),
    (
        "POST",
        "/api/v1/admin/users/{id}/deactivate",
        Body::Empty,
        ADMIN,
    ),
    (
        "POST",
        "/api/v1/admin/users/{id}/reset-password",
        Body::Empty,
        ADMIN,
    ),
    ("GET", "/api/v1/admin/projections", Body::None, HISTORY),
    (
        "POST",
        "/api/v1/admin/projections/{name}/rebuild",
        Body::Empty,
        [401, 202, 403, 403, 403, 403],
    ),
    ("GET", "/api/v1/audit/events", Body::None, HISTORY),
    // The ledger: the matrix waits for a first checkpoint before it starts,
    // so the proofs of leaf 0 in the tree of 1 exist.
    ("GET", "/api/v1/audit/feed", Body::None, HISTORY),
    (
        "GET",
        "/api/v1/audit/streams/{aggregate_type}/{aggregate_id}/events",
        Body::None,
        [401, 404, 404, 403, 403, 403],
    ),
    (
        "GET",
        "/api/v1/audit/streams/{aggregate_type}/{aggregate_id}/state",
        Body::None,
        [401, 404, 404, 403, 403, 403],
    ),
    ("GET", "/api/v1/audit/checkpoint", Body::None, HISTORY),
    ("GET", "/api/v1/audit/checkpoints", Body::None, HISTORY),
    ("GET", "/api/v1/audit/proofs/inclusion", Body::None, HISTORY),
    (
        "GET",
        "/api/v1/audit/proofs/consistency",
        Body::None,
        HISTORY,
    ),
    // Classroom routes, on lessons that do not exist: the policy row decides
    // 401 and 403; past it, the missing lesson gives 404.
    (
        "POST",
        "/api/v1/lessons",
        Body::Lesson,
        [401, 201, 403, 201, 403, 403],
    ),
    ("GET", "/api/v1/lessons", Body::None, AUTHED),
    ("GET", "/api/v1/lessons/{id}", Body::None, MISSING),
    (
        "PATCH",
        "/api/v1/lessons/{id}",
        Body::LessonPatch,
        TUTOR_OWNS,
    ),
    (
        "POST",
        "/api/v1/lessons/{id}/start",
        Body::Empty,
        TUTOR_OWNS,
    ),
    ("POST", "/api/v1/lessons/{id}/end", Body::Empty, TUTOR_OWNS),
    (
        "POST",
        "/api/v1/lessons/{id}/cancel",
        Body::Empty,
        TUTOR_OWNS,
    ),
    // An empty body enrols the caller, who must be a student.
    (
        "POST",
        "/api/v1/lessons/{id}/enrollments",
        Body::Empty,
        [401, 422, 403, 422, 404, 403],
    ),
    (
        "DELETE",
        "/api/v1/lessons/{id}/enrollments/{student_id}",
        Body::None,
        ENROLMENT,
    ),
    (
        "POST",
        "/api/v1/bulk/lessons",
        Body::Bulk,
        [401, 200, 403, 200, 403, 403],
    ),
    ("POST", "/api/v1/boards/{id}/ops", Body::Op, ENROLMENT),
    (
        "POST",
        "/api/v1/boards/{id}/ops/batch",
        Body::OpBatch,
        ENROLMENT,
    ),
    (
        "GET",
        "/api/v1/boards/{id}/ops",
        Body::None,
        PARTICIPANTS_LIST,
    ),
    (
        "GET",
        "/api/v1/boards/{id}",
        Body::None,
        [401, 404, 404, 404, 404, 403],
    ),
    (
        "PUT",
        "/api/v1/boards/{id}/policy",
        Body::Policy,
        TUTOR_OWNS,
    ),
    (
        "POST",
        "/api/v1/lessons/{id}/messages",
        Body::Message,
        ENROLMENT,
    ),
    (
        "GET",
        "/api/v1/lessons/{id}/messages",
        Body::None,
        PARTICIPANTS_LIST,
    ),
    ("POST", "/api/v1/deliveries/ack", Body::Ack, ENROLMENT),
    // Presence and video, on lessons and sessions that do not exist.
    (
        "GET",
        "/api/v1/presence/lessons/{lesson_id}",
        Body::None,
        PARTICIPANTS_LIST,
    ),
    ("GET", "/api/v1/presence/me", Body::None, AUTHED),
    ("POST", "/api/v1/presence/me", Body::PresenceStatus, AUTHED),
    ("POST", "/api/v1/heartbeat", Body::Empty, AUTHED),
    (
        "POST",
        "/api/v1/presence/bulk",
        Body::PresenceBulk,
        [401, 200, 200, 200, 200, 403],
    ),
    (
        "POST",
        "/api/v1/video/sessions",
        Body::VideoStart,
        [401, 404, 403, 404, 404, 403],
    ),
    (
        "POST",
        "/api/v1/video/sessions/{id}/heartbeat",
        Body::VideoBeat,
        [401, 409, 403, 409, 409, 403],
    ),
    (
        "POST",
        "/api/v1/video/sessions/{id}/end",
        Body::Empty,
        [401, 409, 403, 409, 409, 403],
    ),
    ("GET", "/api/v1/me/watch-time", Body::None, AUTHED),
    (
        "GET",
        "/api/v1/invoices",
        Body::None,
        [401, 200, 200, 200, 200, 403],
    ),
    (
        "GET",
        "/api/v1/invoices/{id}",
        Body::None,
        [401, 404, 404, 404, 404, 403],
    ),
    (
        "POST",
        "/api/v1/invoices/{id}/void",
        Body::Empty,
        [401, 404, 403, 403, 403, 403],
    ),
    (
        "POST",
        "/api/v1/invoices/{id}/uncollectible",
        Body::Empty,
        [401, 404, 403, 403, 403, 403],
    ),
    (
        "POST",
        "/api/v1/invoices/{id}/payments",
        Body::Empty,
        [401, 404, 403, 404, 404, 403],
    ),
    // Public: a token neither helps nor hurts. Unsigned, every delivery is
    // refused for its signature (the signed ones are in tests/it/billing.rs).
    (
        "POST",
        "/api/v1/webhooks/stripe",
        Body::StripeEvent,
        [400; 6],
    ),
    (
        "GET",
        "/api/v1/me/deliveries/pending",
        Body::None,
        [401, 200, 200, 200, 200, 403],
    ),
];

struct Ctx {
    email: String,
    tokens: Tokens,
    victim: Uuid,
}

fn path_for(template: &str, ctx: &Ctx) -> String {
    let id = if template.starts_with("/api/v1/me/sessions") {
        ctx.tokens.session_id.to_string()
    } else if template.starts_with("/api/v1/admin/users") {
        ctx.victim.to_string()
    } else if [
        "/api/v1/lessons",
        "/api/v1/boards",
        "/api/v1/presence",
        "/api/v1/video",
        "/api/v1/invoices",
    ]
    .iter()
    .any(|p| template.starts_with(p))
    {
        Uuid::new_v4().to_string()
    } else {
        "no-such-device".to_owned()
    };
    let path = template
        .replace("{id}", &id)
        .replace("{student_id}", &Uuid::new_v4().to_string())
        .replace("{lesson_id}", &Uuid::new_v4().to_string())
        .replace("{name}", "analytics_daily_event_counts")
        .replace("{aggregate_type}", "User")
        .replace("{aggregate_id}", &Uuid::new_v4().to_string());
    if template == "/api/v1/audit/proofs/inclusion" {
        format!("{path}?seq=0&size=1")
    } else if template == "/api/v1/audit/proofs/consistency" {
        format!("{path}?from=1&to=1")
    } else if template.ends_with("/state") {
        format!("{path}?version=1")
    } else if template == "/api/v1/me" || template == "/api/v1/me/sessions" {
        format!(
            "{path}?consistent_with={}",
            ctx.tokens.position.as_deref().unwrap_or("0.0")
        )
    } else {
        path
    }
}

fn body_for(body: Body, ctx: &Ctx) -> Option<Value> {
    let unique = Uuid::new_v4().simple();
    Some(match body {
        Body::None => return None,
        Body::Empty => json!({}),
        Body::Register => {
            json!({"email": format!("new-{unique}@example.com"), "password": PASSWORD, "display_name": "New", "role": "student"})
        }
        Body::Login => {
            json!({"email": ctx.email, "password": PASSWORD, "device_fingerprint": "test-device"})
        }
        Body::Refresh => {
            json!({"refresh_token": ctx.tokens.refresh_token, "device_fingerprint": "test-device"})
        }
        Body::ChangePassword => json!({"current_password": PASSWORD, "new_password": PASSWORD}),
        Body::ResetRequest => json!({"email": ctx.email}),
        Body::ResetConfirm => json!({"token": "not-a-token", "new_password": PASSWORD}),
        Body::Profile => json!({"display_name": "Renamed"}),
        Body::Device => {
            json!({"device_id": format!("dev-{unique}"), "name": "Laptop", "platform": "web"})
        }
        Body::Role => json!({"role": "tutor"}),
        Body::Lesson => lesson_body(),
        Body::LessonPatch => json!({"title": "Renamed"}),
        Body::Bulk => {
            json!({"action": "cancel", "items": [{"id": Uuid::new_v4()}], "atomic": false})
        }
        Body::Op => op_body(),
        Body::OpBatch => json!({"ops": [op_body()]}),
        Body::Policy => json!({"policy": "reject"}),
        Body::Message => json!({"client_message_id": unique.to_string(), "text": "hello"}),
        Body::Ack => json!({"lesson_id": Uuid::new_v4(), "up_to_seq": 1, "status": "read"}),
        Body::PresenceStatus => json!({"status": "away"}),
        Body::PresenceBulk => json!({"user_ids": [Uuid::new_v4()]}),
        Body::VideoStart => json!({"lesson_id": Uuid::new_v4(), "device_id": "test-device"}),
        Body::VideoBeat => json!({"position_ms": 1000}),
        Body::StripeEvent => {
            json!({"id": format!("evt_{unique}"), "type": "payment_intent.succeeded",
                   "created": chrono::Utc::now().timestamp(), "data": {"object": {"id": "pi_1"}}})
        }
    })
}

fn lesson_body() -> Value {
    json!({"title": "Algebra", "starts_at": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
           "duration_minutes": 60, "capacity": 10, "price": {"amount_minor": 1000, "currency": "EUR"}})
}

fn op_body() -> Value {
    json!({"client_id": "c1", "op_id": Uuid::new_v4().to_string(), "lamport": 1, "kind": "add", "element_id": "e1", "data": {}})
}

fn openapi_routes(doc: &Value) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

async fn run_column(column: usize) -> Vec<String> {
    let app: TestApp = spawn_app().await;
    let role = CALLERS[column];
    let account_role = if role == "anonymous" { "student" } else { role };
    let email = format!("{account_role}-{}@example.com", Uuid::new_v4().simple());
    app.register(&email, account_role).await;
    // The sealer signs its first checkpoint as soon as it has sealed the
    // registration: the ledger rows below need one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.count("SELECT count(*) FROM ledger_checkpoints").await == 0 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint signed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut failures = Vec::new();
    // One session for as long as it lives: logins are rate-limited per
    // address, and rows that end or rotate the session drop it.
    let mut session: Option<Tokens> = None;
    for (method, template, body, expected) in MATRIX {
        let needs_session = role != "anonymous" || matches!(body, Body::Refresh);
        let tokens = if needs_session {
            match &session {
                Some(t) => t.clone(),
                None => {
                    let t = app.login(&email).await;
                    session = Some(t.clone());
                    t
                }
            }
        } else {
            Tokens {
                access_token: String::new(),
                refresh_token: String::new(),
                session_id: Uuid::nil(),
                position: None,
            }
        };
        let victim = if template.starts_with("/api/v1/admin/users/") {
            app.register(
                &format!("victim-{}@example.com", Uuid::new_v4().simple()),
                "student",
            )
            .await
        } else {
            Uuid::nil()
        };
        let ctx = Ctx {
            email: email.clone(),
            tokens,
            victim,
        };
        let token = (role != "anonymous").then_some(ctx.tokens.access_token.as_str());
        let method: Method = method.parse().expect("a method");
        let r = app
            .call(
                method.clone(),
                &path_for(template, &ctx),
                token,
                body_for(*body, &ctx),
            )
            .await;
        let ends_session = [
            "/api/v1/auth/login",
            "/api/v1/auth/refresh",
            "/api/v1/auth/logout",
            "/api/v1/auth/logout-all",
            "/api/v1/auth/change-password",
            "/api/v1/me/sessions/{id}",
        ];
        if ends_session.contains(template) {
            session = None;
        }
        let status = r.status().as_u16();
        if status != expected[column] {
            let text = r.text().await.unwrap_or_default();
            failures.push(format!(
                "{role} {method} {template}: expected {}, got {status}: {text}",
                expected[column]
            ));
        }
    }
    // Every 403 was recorded as an AccessDenied event.
    let forbidden = MATRIX.iter().filter(|row| row.3[column] == 403).count();
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'AccessDenied' AND payload->'AccessDenied'->>'reason' = 'forbidden'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    if recorded != forbidden as i64 {
        failures.push(format!(
            "{role}: {forbidden} refusals but {recorded} AccessDenied events"
        ));
    }
    failures
}

#[tokio::test]
async fn every_route_answers_every_role_as_the_matrix_says() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let listed: Vec<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let documented = openapi_routes(&doc);
    for route in &documented {
        assert!(
            listed.contains(route),
            "{route:?} is in the OpenAPI document but not in the authorization matrix"
        );
    }
    for route in &listed {
        assert!(
            documented.contains(route),
            "{route:?} is in the matrix but not in the OpenAPI document"
        );
    }
    // Each column in its own app, so one caller's rate limits and session
    // changes do not touch another's.
    let columns = futures::future::join_all((0..CALLERS.len()).map(run_column)).await;
    let failures: Vec<String> = columns.into_iter().flatten().collect();
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
