//! The verifiable ledger (issue 15): the sealer seals every event once, in
//! feed order, even when transactions commit out of order; its proofs verify
//! with the RFC 6962 verifier and a flipped byte fails; tampering with the
//! log as its owner (append-only trigger disabled) is caught by the verifier
//! with a finding of its own kind; another process takes over sealing when
//! the holder is killed; every audit read is recorded.

use std::borrow::Cow;
use std::process::Command;
use std::time::Duration;

use lectern_api::config::{LedgerConfig, WorkerConfig};
use lectern_domain::Position;
use lectern_ledger::verify::Report;
use lectern_ledger::{parse_hex_hash, tree, Envelope, Hash, LedgerKey, TrustedKey};
use lectern_projections::ledger::{
    export, unsealed, Sealer, SealerConfig, Unsealed, UNSEALED_COUNTED,
};
use lectern_projections::Wakeup;
use lectern_tests::{
    json_of, lectern_bin, spawn_app_with, state_for, wait_until, ServerProcess, TestApp, TestDb,
};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// Wait until every committed event is sealed and the newest checkpoint
/// covers them all; the size.
async fn settled(pool: &PgPool) -> u64 {
    wait_until(
        "every event sealed and signed",
        Duration::from_secs(30),
        || async {
            let events = scalar(pool, "SELECT count(*) FROM events").await;
            let sealed = scalar(pool, "SELECT count(*) FROM ledger_leaves").await;
            let signed = scalar(
                pool,
                "SELECT coalesce(max(size), 0) FROM ledger_checkpoints",
            )
            .await;
            events > 0 && events == sealed && signed == sealed
        },
    )
    .await;
    scalar(pool, "SELECT count(*) FROM ledger_leaves").await as u64
}

/// An app whose sealer signs every second and publishes to `publish`.
async fn app_signing_every_second(publish: Option<std::path::PathBuf>) -> TestApp {
    let db = TestDb::new().await;
    let state = state_for(&db, lectern_api::config::HttpConfig::for_tests());
    let workers = WorkerConfig {
        ledger: LedgerConfig {
            ledger_checkpoint_secs: 1,
            ledger_publish_dir: publish,
            ..LedgerConfig::default()
        },
        ..WorkerConfig::default()
    };
    spawn_app_with(db, state, &workers).await
}

/// Some activity: accounts registered and logged in.
async fn activity(app: &TestApp, n: usize) {
    for _ in 0..n {
        app.user("student").await;
    }
}

async fn public_key(pool: &PgPool) -> TrustedKey {
    let text: String = sqlx::query_scalar("SELECT public_key FROM ledger_keys LIMIT 1")
        .fetch_one(pool)
        .await
        .expect("a ledger key");
    TrustedKey::parse(&text).expect("a verifier key")
}

fn hash(v: &Value) -> Hash {
    parse_hex_hash(v.as_str().expect("a hex hash")).expect("a 32-byte hash")
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array().expect("a list").iter().map(hash).collect()
}

#[tokio::test]
async fn the_feed_is_the_log_in_feed_order_and_its_proofs_verify() {
    let publish = std::env::temp_dir().join(format!("lectern-ledger-{}", Uuid::new_v4().simple()));
    let app = app_signing_every_second(Some(publish.clone())).await;
    let (_, auditor) = app.user("auditor").await;
    activity(&app, 3).await;
    let size = settled(&app.db.pool).await;
    let key = public_key(&app.db.pool).await;

    // The feed, page by page: every event once, in (transaction, position)
    // order, each leaf the hash of its envelope.
    let mut seen = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let q = after.map_or(String::new(), |a| format!("&after={a}"));
        let r = app
            .get(
                &format!("/api/v1/audit/feed?limit=4{q}"),
                &auditor.access_token,
            )
            .await;
        assert_eq!(r.status(), 200);
        let page = json_of(r).await;
        assert!(page["sealed"].as_u64().expect("sealed") >= size);
        for e in page["events"].as_array().expect("events") {
            seen.push(e.clone());
        }
        match page["next_after"].as_u64() {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    let order: Vec<(i64, String)> = sqlx::query_as(
        "SELECT global_position, payload::text FROM events ORDER BY transaction_id, global_position",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("the log");
    // The feed may already hold the reads recorded since; compare the prefix.
    assert!(seen.len() >= size as usize);
    for (i, e) in seen.iter().enumerate() {
        assert_eq!(e["seq"], i as u64, "dense sequence numbers");
        assert_eq!(e["global_position"], order[i].0, "feed order at {i}");
        let row: (String, String, String) = sqlx::query_as(
            "SELECT payload::text, metadata::text, transaction_id::text FROM events WHERE global_position = $1",
        )
        .bind(order[i].0)
        .fetch_one(&app.db.pool)
        .await
        .expect("the event");
        let envelope = Envelope {
            global_position: order[i].0,
            transaction_id: row.2.parse().expect("xid8"),
            event_id: e["event_id"].as_str().expect("id").parse().expect("uuid"),
            aggregate_type: Cow::Owned(e["aggregate_type"].as_str().expect("type").to_owned()),
            aggregate_id: Cow::Owned(e["aggregate_id"].as_str().expect("id").to_owned()),
            sequence: e["version"].as_i64().expect("version"),
            event_type: Cow::Owned(e["event_type"].as_str().expect("type").to_owned()),
            event_version: Cow::Owned(e["event_version"].as_str().expect("v").to_owned()),
            recorded_at_us: chrono::DateTime::parse_from_rfc3339(
                e["recorded_at"].as_str().expect("t"),
            )
            .expect("time")
            .timestamp_micros(),
            payload: Cow::Owned(row.0.clone()),
            metadata: Cow::Owned(row.1.clone()),
        };
        assert_eq!(hash(&e["leaf_hash"]), envelope.leaf_hash(), "leaf {i}");
        // The payload is served as stored, unless it holds secrets or
        // personal data: then masked, as the audit log masks them, and
        // flagged (a registration carries an email and a password hash).
        let stored: Value = serde_json::from_str(&row.0).expect("json");
        let shown = lectern_domain::mask::json(&stored);
        assert_eq!(e["payload"], shown, "payload {i}");
        let metadata: Value = serde_json::from_str(&row.1).expect("json");
        let masked = shown != stored || lectern_domain::mask::json(&metadata) != metadata;
        assert_eq!(e["masked"], masked, "masked flag {i}");
        if e["event_type"] == "UserRegistered" {
            assert_eq!(e["masked"], true);
            let text = e["payload"].to_string();
            assert!(
                !text.contains("argon2") && !text.contains("@example.com"),
                "{text}"
            );
        }
    }

    // The latest checkpoint verifies with the public key; every leaf's
    // inclusion proof verifies against it, and fails with a flipped byte.
    let r = app
        .get("/api/v1/audit/checkpoint", &auditor.access_token)
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/plain"));
    let note = r.text().await.expect("a note");
    let cp = key.open(&note).expect("the checkpoint verifies");
    assert!(cp.size >= size);
    for seq in 0..cp.size {
        let r = app
            .get(
                &format!("/api/v1/audit/proofs/inclusion?seq={seq}&size={}", cp.size),
                &auditor.access_token,
            )
            .await;
        assert_eq!(r.status(), 200);
        let p = json_of(r).await;
        assert_eq!(hash(&p["root"]), cp.root);
        assert_eq!(p["checkpoint"].as_str(), Some(note.as_str()));
        let (leaf, proof) = (hash(&p["leaf_hash"]), hashes(&p["proof"]));
        if (seq as usize) < seen.len() {
            assert_eq!(leaf, hash(&seen[seq as usize]["leaf_hash"]));
        }
        assert!(
            tree::check_inclusion(&proof, cp.size, cp.root, seq, leaf),
            "inclusion of {seq}"
        );
        let mut flipped_leaf = leaf;
        flipped_leaf.0[7] ^= 1;
        assert!(!tree::check_inclusion(
            &proof,
            cp.size,
            cp.root,
            seq,
            flipped_leaf
        ));
        for k in 0..proof.len() {
            let mut bad = proof.clone();
            bad[k].0[31] ^= 0x10;
            assert!(!tree::check_inclusion(&bad, cp.size, cp.root, seq, leaf));
        }
    }

    // Every earlier checkpoint is consistent with the latest, and its
    // signature verifies; a flipped byte in a proof fails.
    let r = app
        .get(
            "/api/v1/audit/checkpoints?limit=1000",
            &auditor.access_token,
        )
        .await;
    let cps = json_of(r).await;
    let list = cps["checkpoints"].as_array().expect("checkpoints");
    assert!(!list.is_empty());
    for c in list {
        let old = key.open(c["note"].as_str().expect("note")).expect("signed");
        assert_eq!(hash(&c["root"]), old.root);
        let r = app
            .get(
                &format!(
                    "/api/v1/audit/proofs/consistency?from={}&to={}",
                    old.size, cp.size
                ),
                &auditor.access_token,
            )
            .await;
        assert_eq!(r.status(), 200);
        let p = json_of(r).await;
        assert_eq!(
            (hash(&p["from_root"]), hash(&p["to_root"])),
            (old.root, cp.root)
        );
        let proof = hashes(&p["proof"]);
        assert!(tree::check_consistency(
            &proof, cp.size, cp.root, old.size, old.root
        ));
        for k in 0..proof.len() {
            let mut bad = proof.clone();
            bad[k].0[0] ^= 0x01;
            assert!(!tree::check_consistency(
                &bad, cp.size, cp.root, old.size, old.root
            ));
        }
        // Published outside the database too, byte for byte.
        let file = publish
            .join("checkpoints")
            .join(lectern_ledger::bundle::checkpoint_file(old.size));
        assert_eq!(
            std::fs::read_to_string(&file).expect("published"),
            c["note"].as_str().expect("note")
        );
    }
    let published_key =
        std::fs::read_to_string(publish.join("ledger.pub")).expect("the key is published");
    TrustedKey::parse(&published_key).expect("a verifier key");

    // Out of range: a clear problem, not a 500.
    let r = app
        .get(
            &format!(
                "/api/v1/audit/proofs/inclusion?seq={}&size={}",
                cp.size, cp.size
            ),
            &auditor.access_token,
        )
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(json_of(r).await["code"], "beyond_ledger");
    let r = app
        .get(
            "/api/v1/audit/proofs/consistency?from=1&to=999999",
            &auditor.access_token,
        )
        .await;
    assert_eq!(json_of(r).await["code"], "beyond_ledger");
    let r = app
        .get("/api/v1/audit/feed?limit=0", &auditor.access_token)
        .await;
    assert_eq!(r.status(), 422);

    // Every read above was recorded: who looked at what.
    let reads: Vec<(String, Value)> = sqlx::query_as(
        "SELECT aggregate_id, payload FROM events WHERE event_type = 'AuditHistoryRead' ORDER BY global_position",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("reads");
    let paths: Vec<String> = reads
        .iter()
        .map(|(_, p)| {
            let r = &p["AuditHistoryRead"];
            format!(
                "{}?{}",
                r["path"].as_str().expect("path"),
                r["query"].as_str().expect("query")
            )
        })
        .collect();
    assert!(
        paths.contains(&"/api/v1/audit/feed?limit=4".to_owned()),
        "{paths:?}"
    );
    assert!(paths.contains(&format!(
        "/api/v1/audit/proofs/inclusion?seq=0&size={}",
        cp.size
    )));
    assert!(paths
        .iter()
        .any(|p| p.starts_with("/api/v1/audit/checkpoint?")));
    let auditor_id: String = sqlx::query_scalar(
        "SELECT metadata->>'actor_id' FROM events WHERE event_type = 'AuditHistoryRead' LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("actor");
    assert!(reads
        .iter()
        .all(|(stream, _)| stream == &format!("user:{auditor_id}")));
    let _ = std::fs::remove_dir_all(publish);
}

#[tokio::test]
async fn stream_history_pages_by_version_and_names_a_missing_stream() {
    let app = app_signing_every_second(None).await;
    let (_, admin) = app.user("admin").await;
    let (student, _) = app.user("student").await;
    settled(&app.db.pool).await;
    let versions: i64 = scalar(
        &app.db.pool,
        &format!("SELECT count(*) FROM events WHERE aggregate_type = 'User' AND aggregate_id = '{student}'"),
    )
    .await;
    assert!(
        versions >= 2,
        "registration and login make several versions"
    );
    let r = app
        .get(
            &format!("/api/v1/audit/streams/User/{student}/events?from_version=2&limit=1"),
            &admin.access_token,
        )
        .await;
    assert_eq!(r.status(), 200);
    let page = json_of(r).await;
    let events = page["events"].as_array().expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["version"], 2);
    assert!(events[0]["seq"].is_u64() && events[0]["leaf_hash"].is_string());
    assert_eq!(
        page["next_from_version"],
        if versions > 2 {
            Value::from(3)
        } else {
            Value::Null
        }
    );
    let r = app
        .get(
            &format!("/api/v1/audit/streams/User/{student}/events?to_version=1"),
            &admin.access_token,
        )
        .await;
    let page = json_of(r).await;
    assert_eq!(page["events"].as_array().expect("events").len(), 1);
    assert!(page["next_from_version"].is_null());
    let r = app
        .get(
            &format!("/api/v1/audit/streams/User/{}/events", Uuid::new_v4()),
            &admin.access_token,
        )
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(json_of(r).await["code"], "stream_not_found");
    let r = app
        .get(
            &format!("/api/v1/audit/streams/User/{student}/events?from_version=3&to_version=2"),
            &admin.access_token,
        )
        .await;
    assert_eq!(r.status(), 422);
    for path in [
        "/api/v1/audit/streams/User/a%00b/events",
        "/api/v1/audit/streams/Us%00er/a/state?version=1",
    ] {
        let r = app.get(path, &admin.access_token).await;
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(json_of(r).await["code"], "bad_request");
    }
}

/// A sealer of the test's own, on `db`.
fn sealer(db: &TestDb, key: &std::sync::Arc<LedgerKey>, cancel: &CancellationToken) -> Sealer {
    Sealer {
        connect: (*db.pool.connect_options()).clone(),
        key: key.clone(),
        config: SealerConfig {
            checkpoint_every: Duration::from_millis(200),
            standby_poll: Duration::from_millis(100),
            ..SealerConfig::default()
        },
        wakeup: Wakeup::polling_only(),
        cancel: cancel.clone(),
    }
}

async fn insert_event(conn: &mut PgConnection, id: &str) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('T', $1, 1, 'Happened', '1', '{\"n\": 1.10}', '{\"actor_id\": \"test\"}')",
    )
    .bind(id)
    .execute(conn)
    .await
    .expect("insert an event");
}

/// A database whose `n` events were sealed and signed by a sealer of the
/// test's own, stopped again so that the log holds still.
async fn sealed_db(n: usize) -> (TestDb, std::sync::Arc<LedgerKey>) {
    let db = TestDb::new().await;
    let key = std::sync::Arc::new(LedgerKey::generate("test.invalid/ledger").expect("a key"));
    for i in 0..n {
        let mut conn = db.pool.acquire().await.expect("conn");
        insert_event(&mut conn, &format!("e{i}")).await;
    }
    let cancel = CancellationToken::new();
    let task = tokio::spawn(sealer(&db, &key, &cancel).run());
    assert_eq!(settled(&db.pool).await, n as u64);
    cancel.cancel();
    task.await.expect("the sealer stops");
    (db, key)
}

#[tokio::test]
async fn out_of_order_commits_are_sealed_in_feed_order_once_each() {
    let db = TestDb::new().await;
    let key = std::sync::Arc::new(LedgerKey::generate("test.invalid/ledger").expect("a key"));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(sealer(&db, &key, &cancel).run());

    // Writer A takes its position first and stalls while others commit.
    let mut a = db.pool.acquire().await.expect("conn");
    let mut a_tx = a.begin().await.expect("begin");
    insert_event(&mut a_tx, "a").await;
    let mut writers = Vec::new();
    for w in 0..8 {
        let pool = db.pool.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                let mut conn = pool.acquire().await.expect("conn");
                insert_event(&mut conn, &format!("w{w}-{i}")).await;
            }
        }));
    }
    for w in writers {
        w.await.expect("a writer");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Nothing after A's position can be sealed while A is open.
    assert_eq!(
        scalar(&db.pool, "SELECT count(*) FROM ledger_leaves").await,
        0
    );
    a_tx.commit().await.expect("commit A");
    let size = settled(&db.pool).await;
    assert_eq!(size, 201);

    let sealed: Vec<i64> =
        sqlx::query_scalar("SELECT global_position FROM ledger_leaves ORDER BY seq")
            .fetch_all(&db.pool)
            .await
            .expect("leaves");
    let feed: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events ORDER BY transaction_id, global_position",
    )
    .fetch_all(&db.pool)
    .await
    .expect("log");
    assert_eq!(sealed, feed, "sealed order is the feed order, each once");
    assert_eq!(
        scalar(
            &db.pool,
            "SELECT max(seq) + 1 - count(DISTINCT seq) FROM ledger_leaves"
        )
        .await,
        0,
        "dense"
    );
    // And the whole thing verifies.
    let report = online(&db.pool, &key_of(&key)).await;
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!(report.sealed, 201);
    cancel.cancel();
    task.await.expect("the sealer stops");
}

/// The sealer's gauges: the events after a position in the log's order
/// (transaction, then position: a transaction that took its id first and
/// its position last comes first), counted up to a cap, and when the first
/// of them was recorded.
#[tokio::test]
async fn unsealed_counts_the_events_after_a_position_in_log_order() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.expect("conn");
    // A takes its transaction id first and its position last.
    let mut a = db.pool.acquire().await.expect("conn");
    let mut a_tx = a.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *a_tx)
        .await
        .expect("an id for A");
    for i in 0..5 {
        insert_event(&mut conn, &format!("e{i}")).await;
    }
    insert_event(&mut a_tx, "a").await;
    a_tx.commit().await.expect("commit A");
    let log: Vec<(String, i64, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT transaction_id::text, global_position, aggregate_id, recorded_at FROM events
          ORDER BY transaction_id, global_position",
    )
    .fetch_all(&db.pool)
    .await
    .expect("log");
    assert_eq!(log.len(), 6);
    assert_eq!(log[0].2, "a", "A is first in the log");
    assert!(
        log[1..].iter().all(|e| e.1 < log[0].1),
        "though its position is the highest"
    );
    let at = |i: usize| Position {
        transaction_id: log[i].0.parse().expect("a transaction id"),
        global_position: log[i].1,
    };

    // From the start; past A (the five with lower positions are all still
    // to come); past the third; past the last.
    let cases = [
        (Position::ZERO, 6, Some(0)),
        (at(0), 5, Some(1)),
        (at(2), 3, Some(3)),
        (at(5), 0, None),
    ];
    for (after, events, first) in cases {
        let found = unsealed(&mut conn, after, UNSEALED_COUNTED)
            .await
            .expect("unsealed");
        let expected = Unsealed {
            events,
            oldest: first.map(|i: usize| log[i].3),
        };
        assert_eq!(found, expected, "after {after}");
    }
    let capped = unsealed(&mut conn, Position::ZERO, 4)
        .await
        .expect("unsealed");
    assert_eq!(capped.events, 4, "counted up to the cap");
}

fn key_of(key: &LedgerKey) -> TrustedKey {
    TrustedKey::parse(key.public_text()).expect("a verifier key")
}

/// Export the database's ledger in one snapshot and verify it, as
/// `lectern audit verify --online` does.
async fn online(pool: &PgPool, key: &TrustedKey) -> Report {
    let mut conn = pool.acquire().await.expect("conn");
    let mut tx = export::snapshot(&mut conn).await.expect("a snapshot");
    online_on(&mut tx, key, None).await
}

async fn online_on(
    conn: &mut PgConnection,
    key: &TrustedKey,
    trusted: Option<&lectern_ledger::SignedCheckpoint>,
) -> Report {
    export::verify(conn, key, trusted).await.expect("export")
}

fn kinds(r: &Report) -> Vec<&'static str> {
    let mut k: Vec<_> = r.findings.iter().map(|f| f.kind()).collect();
    k.dedup();
    k
}

/// Run `tamper` as the table owner with the append-only triggers off, in a
/// transaction that is rolled back after the verifier has looked.
async fn tampered(
    pool: &PgPool,
    key: &TrustedKey,
    trusted: &lectern_ledger::SignedCheckpoint,
    tamper: &str,
) -> Vec<&'static str> {
    let mut conn = pool.acquire().await.expect("conn");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::raw_sql(
        "ALTER TABLE events DISABLE TRIGGER events_append_only;
         ALTER TABLE ledger_leaves DISABLE TRIGGER ledger_leaves_append_only;
         ALTER TABLE ledger_hashes DISABLE TRIGGER ledger_hashes_append_only;
         ALTER TABLE ledger_checkpoints DISABLE TRIGGER ledger_checkpoints_append_only;",
    )
    .execute(&mut *tx)
    .await
    .expect("disable the triggers");
    sqlx::raw_sql(tamper).execute(&mut *tx).await.expect(tamper);
    let report = online_on(&mut tx, key, Some(trusted)).await;
    tx.rollback().await.expect("rollback");
    let k = kinds(&report);
    for f in &report.findings {
        assert!(!f.to_string().is_empty());
    }
    k
}

#[tokio::test]
async fn each_tampering_as_the_owner_is_caught_with_its_own_finding() {
    let (db, key) = sealed_db(30).await;
    let size = 30;
    let vk = key_of(&key);
    let note: String =
        sqlx::query_scalar("SELECT note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .expect("a checkpoint");
    let trusted = vk.open(&note).expect("signed");

    // Pristine: verifies, also against the checkpoint kept.
    let report = online_on(
        &mut db.pool.acquire().await.expect("conn"),
        &vk,
        Some(&trusted),
    )
    .await;
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!(report.sealed, 30);

    let pos = |n: i64| {
        format!("(SELECT global_position FROM events ORDER BY transaction_id, global_position OFFSET {n} LIMIT 1)")
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("UPDATE events SET payload = '{{\"n\": 1.1}}' WHERE global_position = {}", pos(5)),
            vec!["payload-edited"],
        ),
        (
            format!("UPDATE events SET metadata = '{{\"actor_id\": \"someone else\"}}' WHERE global_position = {}", pos(6)),
            vec!["metadata-edited"],
        ),
        (
            format!("UPDATE events SET event_type = 'Forged' WHERE global_position = {}", pos(7)),
            vec!["field-edited"],
        ),
        (
            // A row slipped in among sealed ones: it takes an old transaction's id.
            format!(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, transaction_id)
                 SELECT 'T', 'forged', 1, 'Happened', '1', '{{}}', '{{}}', transaction_id FROM events WHERE global_position = {}",
                pos(3)
            ),
            vec!["inserted"],
        ),
        (format!("DELETE FROM events WHERE global_position = {}", pos(10)), vec!["deleted"]),
        (
            // Two events swap their places in the log.
            format!(
                "WITH a AS (SELECT global_position AS p, transaction_id AS t FROM events WHERE global_position = {}),
                      b AS (SELECT global_position AS p, transaction_id AS t FROM events WHERE global_position = {})
                 UPDATE events e SET transaction_id = CASE WHEN e.global_position = a.p THEN b.t ELSE a.t END
                   FROM a, b WHERE e.global_position IN (a.p, b.p)",
                pos(2),
                pos(12)
            ),
            vec!["reordered"],
        ),
        (
            format!("DELETE FROM events WHERE global_position >= {}", pos(25)),
            vec!["truncated"],
        ),
        (
            // The tail gone from the ledger and its checkpoints too: only the
            // checkpoint the auditor kept tells.
            format!(
                "DELETE FROM events WHERE global_position >= {p};
                 DELETE FROM ledger_leaves WHERE seq >= 25;
                 DELETE FROM ledger_checkpoints WHERE size > 25;",
                p = pos(25)
            ),
            vec!["truncated"],
        ),
        (
            "UPDATE ledger_checkpoints SET note = replace(note, E'\\n' || size || E'\\n', E'\\n' || (size + 1) || E'\\n')
              WHERE size = (SELECT max(size) FROM ledger_checkpoints)"
                .to_owned(),
            vec!["bad-signature"],
        ),
    ];
    for (sql, want) in &cases {
        assert_eq!(&tampered(&db.pool, &vk, &trusted, sql).await, want, "{sql}");
    }
    // A checkpoint of another history at the same size, signed by the same
    // key (a split view): the log is not an extension of it.
    let fork = vk.open(&key.sign(size, another_root())).expect("signed");
    let report = online_on(
        &mut db.pool.acquire().await.expect("conn"),
        &vk,
        Some(&fork),
    )
    .await;
    assert_eq!(kinds(&report), ["inconsistent-with-trusted"]);
    // And after all that, nothing was left changed.
    let report = online_on(
        &mut db.pool.acquire().await.expect("conn"),
        &vk,
        Some(&trusted),
    )
    .await;
    assert!(report.ok(), "{:?}", report.findings);
}

/// A root of no tree this log ever had.
fn another_root() -> Hash {
    Hash(rand::random())
}

#[tokio::test]
async fn the_sealer_refuses_to_sign_a_tree_inconsistent_with_its_last_checkpoint() {
    let (db, key) = sealed_db(5).await;
    // Someone with the database's keys signs a checkpoint of size 6 over
    // another history, before event 6 is sealed.
    let mut conn = db.pool.acquire().await.expect("conn");
    insert_event(&mut conn, "e5").await;
    insert_event(&mut conn, "e6").await;
    let forged_root = another_root();
    sqlx::query("INSERT INTO ledger_checkpoints (size, root, note) VALUES (6, $1, $2)")
        .bind(&forged_root.0[..])
        .bind(key.sign(6, forged_root))
        .execute(&db.pool)
        .await
        .expect("forge");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(sealer(&db, &key, &cancel).run());
    wait_until("events 6 and 7 sealed", Duration::from_secs(10), || async {
        scalar(&db.pool, "SELECT count(*) FROM ledger_leaves").await == 7
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        scalar(&db.pool, "SELECT max(size) FROM ledger_checkpoints").await,
        6,
        "no checkpoint signed over the inconsistent one"
    );
    cancel.cancel();
    task.await.expect("stops");
}

#[tokio::test]
async fn another_process_takes_over_sealing_when_the_holder_is_killed() {
    let db = TestDb::new().await;
    let data_dir =
        std::env::temp_dir().join(format!("lectern-ledger-fo-{}", Uuid::new_v4().simple()));
    let pool = db.pool.clone();
    let mut first = ServerProcess::start(&db, &data_dir).await;
    // Events through the first process, sealed and signed by it.
    let client = reqwest::Client::new();
    let register_on = |addr: std::net::SocketAddr| {
        let client = client.clone();
        async move {
            let email = format!("fo-{}@example.com", Uuid::new_v4().simple());
            let r = client
                .post(format!("http://{addr}/api/v1/auth/register"))
                .json(
                    &serde_json::json!({"email": email, "password": lectern_tests::PASSWORD,
                                          "display_name": "F", "role": "student"}),
                )
                .send()
                .await
                .expect("register");
            assert_eq!(r.status(), 201);
        }
    };
    for _ in 0..3 {
        register_on(first.addr).await;
    }
    wait_until(
        "the first process seals",
        Duration::from_secs(30),
        || async { scalar(&pool, "SELECT count(*) FROM ledger_checkpoints").await > 0 },
    )
    .await;
    let before: i64 = scalar(&pool, "SELECT max(size) FROM ledger_checkpoints").await;
    // The standby, with the same data directory (so the same key).
    let second = ServerProcess::start(&db, &data_dir).await;
    first.kill9();
    for _ in 0..3 {
        register_on(second.addr).await;
    }
    // The checkpoint interval is 30 s by default; the standby signs what it
    // sealed once it took over and the interval passed.
    wait_until(
        "the second process seals everything",
        Duration::from_secs(60),
        || async {
            scalar(&pool, "SELECT count(*) FROM events").await
                == scalar(&pool, "SELECT count(*) FROM ledger_leaves").await
                && scalar(&pool, "SELECT max(size) FROM ledger_checkpoints").await
                    == scalar(&pool, "SELECT count(*) FROM ledger_leaves").await
        },
    )
    .await;
    let after: i64 = scalar(&pool, "SELECT max(size) FROM ledger_checkpoints").await;
    assert!(after > before);
    // One tree across the handover: the offline verifier, through the real
    // CLI, with the published key and the checkpoint from before kept as
    // trusted.
    let bundle = data_dir.join("bundle");
    let out = Command::new(lectern_bin())
        .args(["audit", "export", "--out"])
        .arg(&bundle)
        .env("DATABASE_URL", &db.url)
        .env("LECTERN_LOG", "warn")
        .output()
        .expect("export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trusted = data_dir
        .join("ledger/checkpoints")
        .join(lectern_ledger::bundle::checkpoint_file(before as u64));
    let out = Command::new(lectern_bin())
        .args(["audit", "verify", "--bundle"])
        .arg(&bundle)
        .arg("--pubkey")
        .arg(data_dir.join("ledger/ledger.pub"))
        .arg("--trusted")
        .arg(&trusted)
        .env_remove("DATABASE_URL")
        .output()
        .expect("verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "consistent with the trusted checkpoint of size {before}"
        )),
        "{stdout}"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test]
async fn the_cli_exports_a_bundle_that_verifies_offline_and_names_an_edit() {
    let (db, key) = sealed_db(12).await;
    let dir = std::env::temp_dir().join(format!("lectern-bundle-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pubkey = dir.join("auditor.pub");
    std::fs::write(&pubkey, key.public_text()).expect("key");
    let export_to = |out: &std::path::Path, from: u64| {
        Command::new(lectern_bin())
            .args(["audit", "export", "--from", &from.to_string(), "--out"])
            .arg(out)
            .env("DATABASE_URL", &db.url)
            .env("LECTERN_LOG", "warn")
            .output()
            .expect("export")
    };
    let verify = |bundle: &std::path::Path| {
        Command::new(lectern_bin())
            .args(["audit", "verify", "--bundle"])
            .arg(bundle)
            .arg("--pubkey")
            .arg(&pubkey)
            .env_remove("DATABASE_URL")
            .output()
            .expect("verify")
    };
    let out = export_to(&dir.join("whole"), 0);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = std::fs::read_to_string(dir.join("whole/events.jsonl")).expect("events");
    assert_eq!(lines.lines().count(), 12);
    // The exact jsonb text travels: 1.10 stays 1.10.
    assert!(lines.contains(r#""payload":"{\"n\": 1.10}""#), "{lines}");
    let out = verify(&dir.join("whole"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("verified: 12 sealed events"));

    // A partial bundle from seq 5 verifies against the same checkpoints.
    let out = export_to(&dir.join("part"), 5);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("part/events.jsonl"))
            .expect("events")
            .lines()
            .count(),
        7
    );
    let out = verify(&dir.join("part"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An edit of the bundle file itself: its own exit status and message.
    let edited = lines.replacen(r#"{\"n\": 1.10}"#, r#"{\"n\": 2.10}"#, 1);
    std::fs::write(dir.join("whole/events.jsonl"), edited).expect("edit");
    let out = verify(&dir.join("whole"));
    assert_eq!(out.status.code(), Some(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("payload-edited: seq 0"), "{stderr}");
    // No database was needed; a key that is not the ledger's fails every
    // checkpoint.
    let other = LedgerKey::generate("test.invalid/ledger").expect("a key");
    std::fs::write(&pubkey, other.public_text()).expect("key");
    let out = verify(&dir.join("part"));
    assert_eq!(out.status.code(), Some(17));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn time_travel_folds_from_kept_snapshots_to_what_a_full_replay_gives() {
    use lectern_domain::access::RecordAuditRead;
    use lectern_domain::classroom::values::MessageText;
    use lectern_domain::classroom::Actor;
    use lectern_domain::identity::Password;
    use lectern_domain::EventMetadata;
    use lectern_tests::classroom::{ack, draw, live_board, op};
    use serde_json::json;

    let app = app_signing_every_second(None).await;
    let (_, auditor) = app.user("auditor").await;
    let live = live_board(&app).await;
    let meta = EventMetadata::system("test");
    // Board: 1,100 operations (a snapshot every 1,000, in the background).
    for b in 0..11u64 {
        let ops = (0..100u64)
            .map(|i| {
                op(
                    "t",
                    &format!("{b}-{i}"),
                    b * 100 + i + 1,
                    "add",
                    &format!("e{b}-{i}"),
                    json!({"x": i}),
                )
            })
            .collect();
        let (status, _) = draw(&app, &live.tutor, live.board, ops).await;
        assert_eq!(status, 200);
    }
    // Channel: 510 messages (a snapshot every 500).
    let me = format!(
        "/api/v1/me?consistent_with={}",
        live.tutor.position.as_deref().expect("a position")
    );
    let tutor: Uuid = json_of(app.get(&me, &live.tutor.access_token).await).await["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("the tutor's id");
    for i in 0..510 {
        app.state
            .classroom
            .send(
                live.board,
                Actor {
                    user_id: tutor,
                    own_only: true,
                },
                format!("m{i}"),
                MessageText::parse("hello").expect("text"),
                &meta,
            )
            .await
            .expect("sent");
    }
    // Inbox: the student acknowledges what was delivered.
    for (up_to, status) in [(10, "delivered"), (20, "read")] {
        let r = ack(&app, live.board, &live.student, up_to, status).await;
        assert!(r.status().is_success(), "{}", r.status());
    }
    // User: 55 logins (a snapshot every 50); AccessLog: 110 reads (every 100).
    let email = format!("tt-{}@example.com", Uuid::new_v4().simple());
    app.register(&email, "student").await;
    let password = Password::parse(lectern_tests::PASSWORD).expect("password");
    for _ in 0..55 {
        app.state
            .identity
            .login(&email, &password, "dev", &meta)
            .await
            .expect("login");
    }
    for i in 0..110 {
        let read = RecordAuditRead {
            action: "audit.read".into(),
            method: "GET".into(),
            path: "/api/v1/audit/feed".into(),
            query: format!("after={i}"),
        };
        app.state
            .identity
            .record_audit_read("user:tt", read, &meta)
            .await
            .expect("recorded");
    }
    wait_until("the board's snapshot", Duration::from_secs(20), || async {
        scalar(
            &app.db.pool,
            "SELECT count(*) FROM snapshot_history WHERE aggregate_type = 'Board'",
        )
        .await
            > 0
    })
    .await;

    let (checked, from_snapshots) = lectern_tests::assert_history_replays(&app.db.pool).await;
    for ty in [
        "User",
        "EmailClaim",
        "AccessLog",
        "Lesson",
        "Board",
        "Channel",
        "Inbox",
    ] {
        assert!(checked.contains(ty), "{ty} checked: {checked:?}");
    }
    for ty in ["User", "AccessLog", "Board", "Channel"] {
        assert!(
            from_snapshots.contains(ty),
            "{ty} folded from a snapshot: {from_snapshots:?}"
        );
    }

    // Over HTTP: the board after op 1,001 folds one event onto the snapshot.
    let board = live.board;
    let versions = scalar(
        &app.db.pool,
        &format!("SELECT max(sequence) FROM events WHERE aggregate_type = 'Board' AND aggregate_id = '{board}'"),
    )
    .await as u64;
    let snap = scalar(
        &app.db.pool,
        &format!("SELECT max(version) FROM snapshot_history WHERE aggregate_type = 'Board' AND aggregate_id = '{board}'"),
    )
    .await as u64;
    assert!(snap >= 1000 && versions > snap);
    let r = app
        .get(
            &format!(
                "/api/v1/audit/streams/Board/{board}/state?version={}",
                snap + 1
            ),
            &auditor.access_token,
        )
        .await;
    assert_eq!(r.status(), 200);
    let got = json_of(r).await;
    assert_eq!(got["version"], snap + 1);
    assert_eq!(got["from_snapshot"], snap);
    assert_eq!(got["events_folded"], 1);
    let fresh = lectern_commands::history::state_at(
        &app.db.pool,
        "Board",
        &board.to_string(),
        snap + 1,
        false,
    )
    .await
    .expect("replay")
    .expect("a fold");
    assert_eq!(got["state"], fresh.state);
    assert_eq!(got["masked"], false);
    // A user's state holds an email and a password hash: served masked.
    let user: String = sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE event_type = 'UserRegistered' LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("a user");
    let r = app
        .get(
            &format!("/api/v1/audit/streams/User/{user}/state?version=1"),
            &auditor.access_token,
        )
        .await;
    let got_user = json_of(r).await;
    assert_eq!(got_user["masked"], true);
    let fresh_user = lectern_commands::history::state_at(&app.db.pool, "User", &user, 1, false)
        .await
        .expect("replay")
        .expect("a fold");
    assert_eq!(
        got_user["state"],
        lectern_domain::mask::json(&fresh_user.state)
    );
    assert!(!got_user["state"].to_string().contains("argon2"));
    for (query, status, code) in [
        (
            format!("version={}", versions + 1),
            404,
            "version_not_found",
        ),
        ("version=0".to_owned(), 422, "validation_failed"),
        (
            "version=1&at=2026-01-01T00:00:00Z".to_owned(),
            422,
            "validation_failed",
        ),
        (String::new(), 422, "validation_failed"),
        ("at=2000-01-01T00:00:00Z".to_owned(), 404, "no_checkpoint"),
    ] {
        let r = app
            .get(
                &format!("/api/v1/audit/streams/Board/{board}/state?{query}"),
                &auditor.access_token,
            )
            .await;
        assert_eq!(r.status(), status, "{query}");
        assert_eq!(json_of(r).await["code"], code, "{query}");
    }
    let r = app
        .get(
            "/api/v1/audit/streams/Nothing/x/state?version=1",
            &auditor.access_token,
        )
        .await;
    assert_eq!(json_of(r).await["code"], "unknown_aggregate_type");

    // As of a time: the last checkpoint signed by then, and only the events
    // it covers, however many come later; the same answer every time.
    settled(&app.db.pool).await;
    let then = chrono::Utc::now();
    let covered = scalar(&app.db.pool, "SELECT max(size) FROM ledger_checkpoints").await;
    let (status, _) = draw(
        &app,
        &live.tutor,
        board,
        vec![op("t", "late", 5000, "add", "late", json!({}))],
    )
    .await;
    assert_eq!(status, 200);
    wait_until("a later checkpoint", Duration::from_secs(20), || async {
        scalar(&app.db.pool, "SELECT max(size) FROM ledger_checkpoints").await > covered
    })
    .await;
    let path = format!(
        "/api/v1/audit/streams/Board/{board}/state?at={}",
        then.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    let first = json_of(app.get(&path, &auditor.access_token).await).await;
    assert_eq!(first["checkpoint"]["size"], covered);
    assert_eq!(
        first["version"], versions,
        "the late operation is not in it"
    );
    let key = public_key(&app.db.pool).await;
    let cp = key
        .open(first["checkpoint"]["note"].as_str().expect("note"))
        .expect("signed");
    assert_eq!(cp.size, covered as u64);
    let fresh = lectern_commands::history::state_at(
        &app.db.pool,
        "Board",
        &board.to_string(),
        versions,
        false,
    )
    .await
    .expect("replay")
    .expect("a fold");
    assert_eq!(first["state"], fresh.state);
    let again = json_of(app.get(&path, &auditor.access_token).await).await;
    assert_eq!(first, again);
}

#[test]
fn processes_starting_on_one_data_directory_share_one_generated_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("lectern-ledger-key-{}", Uuid::new_v4().simple()));
    let config = LedgerConfig::default().in_data_dir(&dir);
    let keys: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| config.key().expect("a key").public_text().to_owned()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a thread"))
            .collect()
    });
    assert!(keys.iter().all(|k| k == &keys[0]), "{keys:?}");
    let file = dir.join("ledger-key");
    let stored =
        LedgerKey::parse(&std::fs::read_to_string(&file).expect("the key file")).expect("a key");
    assert_eq!(stored.public_text(), keys[0]);
    assert_eq!(
        std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    // Nothing else was left behind.
    assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 1);
    let _ = std::fs::remove_dir_all(dir);
}
