//! Read models served from a real hot-standby replica: PostgreSQL streaming
//! replication, set up with `pg_basebackup -R` from the system binaries.

use lectern_api::config::{HttpConfig, WorkerConfig};
use lectern_api::embedded::EmbeddedPostgres;
use lectern_api::workers::Workers;
use lectern_tests::classroom::{lesson_body, position_of};
use lectern_tests::{json_of, serve, test_keyring, tutor_token};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lesson_created_on_the_primary_is_listed_through_the_replica_with_consistent_with() {
    let (primary, replica) = tokio::task::spawn_blocking(|| {
        let primary = EmbeddedPostgres::start_temporary(false).expect("a primary");
        let replica = EmbeddedPostgres::start_replica_of(&primary).expect("its streaming replica");
        (primary, replica)
    })
    .await
    .expect("a task");
    let pool = lectern_commands::pool::connect(&primary.url("postgres"), 8)
        .await
        .expect("the primary");
    let read_pool = lectern_commands::pool::connect(&replica.url("postgres"), 8)
        .await
        .expect("the replica");
    lectern_commands::MIGRATOR
        .run(&pool)
        .await
        .expect("migrate the primary");
    // As in a real deployment, the replica serves a migrated database: let
    // it replay the migrations first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let migrated: bool =
            sqlx::query_scalar("SELECT to_regclass('public.projection_checkpoints') IS NOT NULL")
                .fetch_one(&read_pool)
                .await
                .expect("ask the replica");
        if migrated {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica did not replay the migrations"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&read_pool)
        .await
        .expect("ask the replica");
    assert!(standby, "the read pool is a hot standby");

    let cancel = CancellationToken::new();
    let state = lectern_api::AppState::new(pool.clone(), HttpConfig::for_tests(), test_keyring())
        .with_read_pool(read_pool.clone());
    let _workers = Workers::start(&state, &WorkerConfig::default(), &cancel)
        .await
        .expect("background work");
    let addr = serve(lectern_api::router(state.clone())).await;
    let client = reqwest::Client::new();
    let token = tutor_token(&state).await;

    let r = client
        .post(format!("http://{addr}/api/v1/lessons"))
        .bearer_auth(&token)
        .json(&lesson_body(5))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = json_of(r).await;
    let position = position_of(&created);
    let r = client
        .get(format!(
            "http://{addr}/api/v1/lessons?consistent_with={position}"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), StatusCode::OK);
    let page = json_of(r).await;
    assert_eq!(page["results"][0]["id"], created["id"], "{page}");
    // The replica holds the row itself, and refuses writes.
    let on_replica: i64 = sqlx::query_scalar("SELECT count(*) FROM lessons")
        .fetch_one(&read_pool)
        .await
        .expect("read the replica");
    assert_eq!(on_replica, 1);
    let refused = sqlx::query("DELETE FROM lessons")
        .execute(&read_pool)
        .await
        .expect_err("a standby is read-only");
    assert!(refused.to_string().contains("read-only"), "{refused}");
    cancel.cancel();
    drop((primary, replica));
}
