//! During a database outage every request that needs the database answers
//! 503 `unavailable` with `Retry-After` within about a second, readiness
//! fails at once, and service comes back by itself. The test stops and
//! starts a real PostgreSQL of its own (the shared test cluster serves the
//! other tests meanwhile).

use std::time::{Duration, Instant};

use lectern_api::config::{HttpConfig, WorkerConfig};
use lectern_api::embedded::EmbeddedPostgres;
use lectern_api::workers::Workers;
use lectern_tests::classroom::lesson_body;
use lectern_tests::{json_of, serve, test_keyring, tutor_token};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

/// `(status, Retry-After, elapsed)` of one request.
async fn probe(request: reqwest::RequestBuilder) -> (StatusCode, Option<String>, Duration) {
    let started = Instant::now();
    let r = request.send().await.expect("the server answers");
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = r.status();
    let _ = r.bytes().await;
    (status, retry, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_database_outage_requests_answer_503_quickly_and_service_recovers() {
    let mut pg = tokio::task::spawn_blocking(|| EmbeddedPostgres::start_temporary(false))
        .await
        .expect("a task")
        .expect("a private cluster");
    let url = pg.url("postgres");
    let pool = lectern_commands::pool::connect(&url, 8)
        .await
        .expect("connect");
    lectern_commands::MIGRATOR
        .run(&pool)
        .await
        .expect("migrate");
    let cancel = CancellationToken::new();
    let state = lectern_api::AppState::new(pool.clone(), HttpConfig::for_tests(), test_keyring());
    let _workers = Workers::start(&state, &WorkerConfig::default(), &cancel)
        .await
        .expect("background work");
    let addr = serve(lectern_api::router(state.clone())).await;
    let client = reqwest::Client::new();
    let at = |path: &str| format!("http://{addr}{path}");
    let token = tutor_token(&state).await;

    let list = || client.get(at("/api/v1/lessons")).bearer_auth(&token);
    let create = || {
        client
            .post(at("/api/v1/lessons"))
            .bearer_auth(&token)
            .json(&lesson_body(5))
    };
    assert_eq!(probe(list()).await.0, StatusCode::OK);

    // PostgreSQL goes away.
    let stopped = {
        let pg = &pg;
        tokio::task::block_in_place(|| pg.stop())
    };
    stopped.expect("stopped");
    let (status, _, elapsed) = probe(client.get(at("/health/ready"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        elapsed < Duration::from_millis(900),
        "readiness answered in {elapsed:?}"
    );
    for (what, request) in [("a read", list()), ("a command", create())] {
        let (status, retry, elapsed) = probe(request).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}");
        assert_eq!(retry.as_deref(), Some("1"), "{what}");
        assert!(
            elapsed < Duration::from_millis(1500),
            "{what} answered in {elapsed:?}"
        );
    }
    let r = list().send().await.expect("answered");
    assert_eq!(json_of(r).await["code"], "unavailable");

    // It comes back on the same address; so does service, with no restart.
    tokio::task::block_in_place(|| pg.start_again()).expect("started again");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if probe(list()).await.0 == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "service did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, _) = probe(create()).await;
    assert_eq!(status, StatusCode::CREATED);
    let lessons: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'LessonScheduled'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(
        lessons, 1,
        "the refused command wrote nothing; the later one once"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while probe(client.get(at("/health/ready"))).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "readiness did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cancel.cancel();
}
