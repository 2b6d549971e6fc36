//! Whiteboards over HTTP: ordering, duplicates, conflicts, undo, bad input,
//! reconnecting, and many clients at once.

use std::collections::BTreeMap;
use std::time::Duration;

use lectern_tests::classroom::{
    action, all_ops, create_lesson, draw, enrol, live_board, op, position_of, replay, LiveBoard,
};
use lectern_tests::{json_of, spawn_app, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn nobody_draws_before_the_lesson_is_live() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (_, stud) = app.user("student").await;
    let (board, _) = create_lesson(&app, &tutor, 5).await;
    enrol(&app, &stud, board).await;
    let (status, body) = draw(
        &app,
        &stud,
        board,
        vec![op("s", "0", 1, "add", "x", json!({}))],
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("lesson_not_live"))
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM events WHERE aggregate_type = 'Board' AND event_type LIKE 'Op%'"
        )
        .await,
        0
    );
}

/// The tutor adds element `a` (lamport 5), moves it (lamport 1) and updates
/// an element that does not exist.
async fn first_batch(app: &TestApp, b: &LiveBoard) -> Value {
    let (status, body) = draw(
        app,
        &b.tutor,
        b.board,
        vec![
            op("t", "1", 5, "add", "a", json!({"shape": "rect", "x": 0})),
            op("t", "2", 1, "move", "a", json!({"x": 10})),
            op("t", "3", 1, "update", "ghost", json!({})),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn the_server_gives_each_op_the_next_version_and_a_lamport_time_past_both_clocks() {
    let app = spawn_app().await;
    let b = live_board(&app).await;
    let body = first_batch(&app, &b).await;
    let results = body["results"].as_array().expect("a test value");
    assert_eq!(
        (
            results[0]["status"].as_str(),
            results[0]["server_version"].as_u64(),
            results[0]["lamport"].as_u64()
        ),
        (Some("applied"), Some(1), Some(6))
    );
    assert_eq!(
        (
            results[1]["server_version"].as_u64(),
            results[1]["lamport"].as_u64()
        ),
        (Some(2), Some(7))
    );
    assert_eq!(
        (results[2]["status"].as_str(), results[2]["reason"].as_str()),
        (Some("rejected"), Some("unknown_element"))
    );
}

#[tokio::test]
async fn a_retried_op_gets_its_original_answer_and_changes_nothing() {
    let app = spawn_app().await;
    let b = live_board(&app).await;
    first_batch(&app, &b).await;
    let (_, again) = draw(
        &app,
        &b.tutor,
        b.board,
        vec![op(
            "t",
            "1",
            5,
            "add",
            "a",
            json!({"shape": "rect", "x": 0}),
        )],
    )
    .await;
    assert_eq!(
        (
            again["results"][0]["status"].as_str(),
            again["results"][0]["server_version"].as_u64()
        ),
        (Some("duplicate"), Some(1))
    );
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'OpApplied'")
            .await,
        2
    );
}

#[tokio::test]
async fn under_last_write_wins_a_write_that_has_not_seen_the_last_one_is_superseded() {
    let app = spawn_app().await;
    let b = live_board(&app).await;
    first_batch(&app, &b).await;
    // The student has not seen lamport 7; ties lose to "t" > "s".
    let (_, lost) = draw(
        &app,
        &b.student,
        b.board,
        vec![op("s", "1", 7, "move", "a", json!({"x": 99}))],
    )
    .await;
    assert_eq!(lost["results"][0]["reason"], "superseded");
    let (_, won) = draw(
        &app,
        &b.student,
        b.board,
        vec![op("s", "2", 8, "move", "a", json!({"x": 50}))],
    )
    .await;
    assert_eq!(won["results"][0]["status"], "applied");
    let state = json_of(
        app.get(
            &format!(
                "/api/v1/boards/{}?consistent_with={}",
                b.board,
                position_of(&won)
            ),
            &b.student.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(state["elements"]["a"], json!({"shape": "rect", "x": 50}));
}

#[tokio::test]
async fn undo_reverts_the_clients_own_last_op_and_a_stranger_is_refused_and_recorded() {
    let app = spawn_app().await;
    let b = live_board(&app).await;
    let (_, stranger) = app.user("student").await;
    first_batch(&app, &b).await;
    let (_, undo) = draw(
        &app,
        &b.tutor,
        b.board,
        vec![op("t", "4", 9, "undo", "", Value::Null)],
    )
    .await;
    assert_eq!(undo["results"][0]["status"], "applied");
    let (_, nothing) = draw(
        &app,
        &stranger,
        b.board,
        vec![op("x", "1", 1, "undo", "", Value::Null)],
    )
    .await;
    assert_eq!(nothing["code"], "not_participant");
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'AccessDenied' AND payload->'AccessDenied'->>'reason' = 'not_participant'").await,
        1
    );
    let (_, own_undo) = draw(
        &app,
        &b.student,
        b.board,
        vec![op("s", "3", 11, "undo", "", Value::Null)],
    )
    .await;
    assert_eq!(
        own_undo["results"][0]["reason"], "nothing_to_undo",
        "the tutor's ops are not the student's to undo"
    );
    let state = json_of(
        app.get(
            &format!(
                "/api/v1/boards/{}?consistent_with={}",
                b.board,
                position_of(&undo)
            ),
            &b.tutor.access_token,
        )
        .await,
    )
    .await;
    // The tutor's undo reverted the tutor's move: x is back to 0.
    assert_eq!(state["elements"]["a"], json!({"shape": "rect", "x": 0}));
}

#[tokio::test]
async fn bad_ops_are_refused_with_a_pointer_and_a_stolen_client_id_is_rejected() {
    let app = spawn_app().await;
    let b = live_board(&app).await;
    let board = b.board;
    first_batch(&app, &b).await;
    let r = app
        .post(
            &format!("/api/v1/boards/{board}/ops"),
            Some(&b.tutor.access_token),
            op("t", "9", 1, "explode", "a", json!({})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let big = "x".repeat(70 * 1024);
    let r = app
        .post(
            &format!("/api/v1/boards/{board}/ops"),
            Some(&b.tutor.access_token),
            op("t", "9", 1, "add", "b", json!({"blob": big})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(r).await["errors"][0]["pointer"], "#/data");
    let (_, stolen) = draw(
        &app,
        &b.student,
        board,
        vec![op("t", "x", 20, "add", "c", json!({}))],
    )
    .await;
    assert_eq!(stolen["results"][0]["reason"], "client_id_in_use");
    let r = app
        .get(
            &format!("/api/v1/boards/{board}/ops?cursor=%%%"),
            &b.tutor.access_token,
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'OpApplied' AND payload->'OpApplied'->>'element_id' = 'b'")
            .await,
        0,
        "the refused ops wrote nothing"
    );
}

#[tokio::test]
async fn a_reconnecting_client_replays_the_feed_to_the_boards_elements_and_checksum() {
    let app = spawn_app().await;
    let b = live_board(&app).await;
    let board = b.board;
    first_batch(&app, &b).await;
    let retry = vec![op(
        "t",
        "1",
        5,
        "add",
        "a",
        json!({"shape": "rect", "x": 0}),
    )];
    draw(&app, &b.tutor, board, retry).await;
    let (_, lost) = draw(
        &app,
        &b.student,
        board,
        vec![op("s", "1", 7, "move", "a", json!({"x": 99}))],
    )
    .await;
    assert_eq!(lost["results"][0]["reason"], "superseded");
    let (_, won) = draw(
        &app,
        &b.student,
        board,
        vec![op("s", "2", 8, "move", "a", json!({"x": 50}))],
    )
    .await;
    let tutor_undo = vec![op("t", "4", 9, "undo", "", Value::Null)];
    draw(&app, &b.tutor, board, tutor_undo).await;
    let (_, own_undo) = draw(
        &app,
        &b.student,
        board,
        vec![op("s", "3", 11, "undo", "", Value::Null)],
    )
    .await;
    assert_eq!(own_undo["results"][0]["status"], "applied");

    // The ops after version 2, in order; the state replays to the
    // projection's checksum.
    let position = position_of(&won);
    let last = position_of(&own_undo);
    let ops = all_ops(&app, &b.student, board, &last).await;
    let versions: Vec<u64> = ops
        .iter()
        .map(|o| o["server_version"].as_u64().expect("a test value"))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    let since = json_of(
        app.get(
            &format!("/api/v1/boards/{board}/ops?since_version=2&consistent_with={position}"),
            &b.student.access_token,
        )
        .await,
    )
    .await;
    let kinds: Vec<&str> = since["results"]
        .as_array()
        .expect("a test value")
        .iter()
        .map(|o| o["kind"].as_str().expect("a test value"))
        .collect();
    assert_eq!(kinds, ["move", "undo", "undo"]);
    let state = json_of(
        app.get(
            &format!("/api/v1/boards/{board}?consistent_with={last}"),
            &b.student.access_token,
        )
        .await,
    )
    .await;
    let model = replay(&ops);
    // The tutor's undo put the element back as before the tutor's move
    // (x=0); the student's undo then put it back as before the student's
    // move (x=10).
    assert_eq!(state["elements"]["a"], json!({"shape": "rect", "x": 10}));
    assert_eq!(
        Value::Object(model.elements.clone().into_iter().collect()),
        state["elements"]
    );
    assert_eq!(
        state["checksum"].as_str().expect("a test value"),
        model.checksum()
    );
    assert_eq!(state["version"], 5);
    // Everything happened as events: 5 applied, 2 rejected, 1 duplicate.
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_type, count(*) FROM events WHERE aggregate_type = 'Board' AND event_type LIKE 'Op%' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("a test value");
    assert_eq!(
        stored,
        [
            ("OpApplied".into(), 5),
            ("OpDuplicated".into(), 1),
            ("OpRejected".into(), 2)
        ]
    );
}

#[tokio::test]
async fn many_clients_drawing_on_one_board_converge() {
    let app = spawn_app().await;
    let (_, tutor) = app.user("tutor").await;
    let (board, _) = create_lesson(&app, &tutor, 20).await;
    let mut clients = vec![tutor.clone()];
    for _ in 0..7 {
        let (_, t) = app.user("student").await;
        let r = app
            .post(
                &format!("/api/v1/lessons/{board}/enrollments"),
                Some(&t.access_token),
                json!({}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        clients.push(t);
    }
    assert_eq!(
        action(&app, &tutor, board, "start").await.status(),
        StatusCode::OK
    );
    // Shared elements everyone fights over, created first.
    let shared: Vec<Value> = (0..5)
        .map(|i| {
            op(
                "setup",
                &format!("s{i}"),
                0,
                "add",
                &format!("shared-{i}"),
                json!({"n": i}),
            )
        })
        .collect();
    let (status, _) = draw(&app, &tutor, board, shared).await;
    assert_eq!(status, StatusCode::OK);
    let tasks = clients.iter().enumerate().map(|(c, t)| {
        let app = &app;
        async move {
            let client = format!("client-{c}");
            let mut lamport = 0u64;
            let mut last = String::new();
            for round in 0..10 {
                let mut ops = Vec::new();
                for k in 0..3u64 {
                    lamport += 1 + (k + c as u64) % 3;
                    let id = format!("{round}-{k}");
                    ops.push(match k {
                        0 => op(
                            &client,
                            &id,
                            lamport,
                            "add",
                            &format!("{client}-{round}"),
                            json!({"by": c, "round": round}),
                        ),
                        1 => op(
                            &client,
                            &id,
                            lamport,
                            "update",
                            &format!("shared-{}", (round + c) % 5),
                            json!({"by": c, "round": round}),
                        ),
                        _ if round % 4 == 3 => op(&client, &id, lamport, "undo", "", Value::Null),
                        _ => op(
                            &client,
                            &id,
                            lamport,
                            "move",
                            &format!("{client}-{round}"),
                            json!({"x": round}),
                        ),
                    });
                }
                let (status, body) = draw(app, t, board, ops).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                last = body["position"].as_str().expect("a test value").to_owned();
            }
            last
        }
    });
    let mut positions = futures::future::join_all(tasks).await;
    // Then the tutor adds, clears the board and draws again in one request:
    // the projection folds the clear inside one run of events.
    let (status, end) = draw(
        &app,
        &tutor,
        board,
        vec![
            op("tutor-end", "1", 1000, "add", "late-1", json!({"k": 1})),
            op("tutor-end", "2", 1001, "clear", "", Value::Null),
            op("tutor-end", "3", 1002, "add", "late-2", json!({"k": 2})),
            op("tutor-end", "4", 1003, "move", "late-2", json!({"x": 5})),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{end}");
    positions.push(end["position"].as_str().expect("a test value").to_owned());
    let newest = positions
        .iter()
        .max_by_key(|p| p.parse::<lectern_domain::Position>().expect("a test value"))
        .expect("a test value");
    let ops = all_ops(&app, &tutor, board, newest).await;
    let versions: Vec<u64> = ops
        .iter()
        .map(|o| o["server_version"].as_u64().expect("a test value"))
        .collect();
    let n = versions.len() as u64;
    assert_eq!(
        versions,
        (1..=n).collect::<Vec<_>>(),
        "server versions are contiguous"
    );
    let applied = app
        .count("SELECT count(*) FROM events WHERE event_type = 'OpApplied'")
        .await;
    assert_eq!(applied as u64, n);
    let state = json_of(
        app.get(
            &format!("/api/v1/boards/{board}?consistent_with={newest}"),
            &tutor.access_token,
        )
        .await,
    )
    .await;
    let model = replay(&ops);
    assert_eq!(
        Value::Object(model.elements.clone().into_iter().collect()),
        state["elements"]
    );
    assert_eq!(
        state["checksum"].as_str().expect("a test value"),
        model.checksum()
    );
    // The aggregate's live elements are the projection's.
    let aggregate = app
        .state
        .classroom
        .boards
        .store()
        .load(&board.to_string())
        .await
        .expect("a test value");
    let live: BTreeMap<String, ()> = aggregate
        .aggregate
        .elements
        .keys()
        .map(|k| (k.clone(), ()))
        .collect();
    let projected: BTreeMap<String, ()> = model.elements.keys().map(|k| (k.clone(), ())).collect();
    assert_eq!(live, projected);
    assert_eq!(aggregate.aggregate.server_version, n);
    assert_eq!(
        projected.keys().collect::<Vec<_>>(),
        ["late-2"],
        "only what was drawn after the clear"
    );

    // The audit log and the analytics counts, written a run at a time, hold
    // every event exactly once.
    // The roster copies and invoices the process managers make land when
    // they get to them: let them catch up first, then take the head of the
    // log as it stands.
    let newest: lectern_domain::Position = newest.parse().expect("a test value");
    for reaction in ["classroom_roster", "billing_enrolment"] {
        assert!(
            lectern_projections::status::wait_for(
                &app.db.pool,
                reaction,
                newest,
                Duration::from_secs(20)
            )
            .await
            .expect("a test value"),
            "{reaction} is done"
        );
    }
    let (tx, pos): (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events
          ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("the head");
    let at = lectern_domain::Position {
        transaction_id: tx,
        global_position: pos,
    };
    for name in ["audit_log", "analytics_daily_event_counts"] {
        assert!(
            lectern_projections::status::wait_for(&app.db.pool, name, at, Duration::from_secs(20))
                .await
                .expect("a test value"),
            "{name} caught up"
        );
    }
    let events = app.count("SELECT count(*) FROM events").await;
    assert_eq!(app.count("SELECT count(*) FROM audit_log").await, events);
    assert_eq!(
        app.count("SELECT count(DISTINCT event_id) FROM audit_log")
            .await,
        events
    );
    let mismatched = app.count("SELECT count(*) FROM (SELECT aggregate_type, event_type, count(*) AS n FROM events GROUP BY 1, 2) e
           FULL JOIN (SELECT aggregate_type, event_type, sum(events) AS n FROM analytics.daily_event_counts
                       GROUP BY 1, 2) a USING (aggregate_type, event_type)
          WHERE e.n IS DISTINCT FROM a.n",
    )
    .await;
    assert_eq!(mismatched, 0, "analytics counts equal the log's");
}
