//! The event store: compatibility with postgres-es, correct snapshots, group
//! commit under concurrency, conflicts across processes, metadata.

use std::collections::HashMap;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{CqrsFramework, EventStore};
use lectern_commands::{CommandBus, CommandError, DispatchConfig, PgEventStore};
use lectern_domain::EventMetadata;
use lectern_tests::TestDb;
use postgres_es::PostgresEventRepository;
use sqlx::Row;

use crate::support::{stored_sequences, Add, Tally, TallyEvent};

fn meta(command: &str) -> EventMetadata {
    EventMetadata {
        actor_id: "user-1".into(),
        actor_role: "tutor".into(),
        session_id: "session-1".into(),
        request_id: "req-1".into(),
        correlation_id: "corr-1".into(),
        causation_id: "cause-1".into(),
        ip: "127.0.0.1".into(),
        user_agent: "tests".into(),
        command: command.into(),
        idempotency_key: String::new(),
        redelivered: false,
    }
}

fn add(tag: impl Into<String>, count: u32) -> Add {
    Add {
        tag: tag.into(),
        count,
    }
}

/// A command plan with varied multi-event commands: (tag, count).
fn plan(commands: usize) -> Vec<(String, u32)> {
    (0..commands)
        .map(|i| (format!("c{i}"), (i % 4) as u32 + 1))
        .collect()
}

#[tokio::test]
async fn events_written_by_lectern_are_loaded_by_postgres_es() {
    let db = TestDb::new().await;
    let store = CommandBus::new(
        PgEventStore::<Tally>::new(db.pool.clone()),
        (),
        DispatchConfig::default(),
    );
    store
        .execute("a1", add("x", 3), meta("Add"))
        .await
        .expect("commit");

    let stock = PersistedEventStore::<_, Tally>::new_event_store(PostgresEventRepository::new(
        db.pool.clone(),
    ));
    let events = stock
        .load_events("a1")
        .await
        .expect("postgres-es loads our events");
    assert_eq!(events.len(), 3);
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        events[2].payload,
        TallyEvent::Counted {
            tag: "x".into(),
            index: 2
        }
    );
    assert_eq!(events[0].metadata["actor_id"], "user-1");
    let mut ctx = stock.load_aggregate("a1").await.expect("load");
    use cqrs_es::AggregateContext;
    assert_eq!(ctx.aggregate().events, 3);
}

#[tokio::test]
async fn events_written_by_postgres_es_are_loaded_by_lectern() {
    let db = TestDb::new().await;
    let cqrs = postgres_es::postgres_cqrs::<Tally>(db.pool.clone(), vec![], ());
    cqrs.execute_with_metadata("a1", add("x", 2), meta("Add").to_map())
        .await
        .expect("stock commit");
    cqrs.execute("a1", add("y", 1)).await.expect("stock commit");

    let ours = PgEventStore::<Tally>::new(db.pool.clone());
    let loaded = ours.load("a1").await.expect("load");
    assert_eq!(loaded.version, 3);
    assert_eq!(loaded.aggregate.tags, vec!["x", "x", "y"]);
    let events = ours.load_events("a1").await.expect("load events");
    assert_eq!(events[0].metadata.actor_id, "user-1");
    // The columns postgres-es does not know about were filled by defaults.
    let positions: Vec<i64> = events.iter().map(|e| e.position.global_position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    // And our store appends after the stock store's events.
    let store = CommandBus::new(ours, (), DispatchConfig::default());
    let committed = store
        .execute("a1", add("z", 1), meta("Add"))
        .await
        .expect("commit");
    assert_eq!(committed.version, 4);
    assert_eq!(
        stored_sequences(&db.pool, "Tally", "a1").await,
        vec![1, 2, 3, 4]
    );
}

#[tokio::test]
async fn snapshot_loads_equal_a_full_replay_across_many_intervals() {
    let db = TestDb::new().await;
    let store = PgEventStore::<Tally>::new(db.pool.clone()).with_snapshots(7);
    // No cache: every batch loads through the snapshot, as a fresh process would.
    let config = DispatchConfig {
        cache: false,
        ..DispatchConfig::default()
    };
    let dispatch = CommandBus::new(store.clone(), (), config);
    let mut expected = 0u64;
    for (tag, count) in plan(300) {
        let c = dispatch
            .execute("long", add(tag, count), meta("Add"))
            .await
            .expect("commit");
        expected += u64::from(count);
        assert_eq!(c.version, expected);
    }
    let via_snapshot = store.load("long").await.expect("load");
    let replayed = store.load_from_events("long").await.expect("replay");
    assert_eq!(via_snapshot.aggregate, replayed.aggregate);
    assert_eq!(via_snapshot.aggregate.events, expected);
    assert_eq!(via_snapshot.version, expected);
    let (last_sequence, payload): (i64, serde_json::Value) =
        sqlx::query_as("SELECT last_sequence, payload FROM snapshots WHERE aggregate_type = 'Tally' AND aggregate_id = 'long'")
            .fetch_one(&db.pool)
            .await
            .expect("a snapshot is stored");
    assert!(
        last_sequence > expected as i64 - 7 && last_sequence <= expected as i64,
        "{last_sequence}"
    );
    assert_eq!(
        payload["events"].as_i64(),
        Some(last_sequence),
        "the snapshot counts exactly its events"
    );
}

#[tokio::test]
async fn load_many_equals_each_aggregate_loaded_alone() {
    let db = TestDb::new().await;
    let store = PgEventStore::<Tally>::new(db.pool.clone()).with_snapshots(3);
    let dispatch = CommandBus::new(store.clone(), (), DispatchConfig::default());
    // Streams of 1 to 8 commands (1 to 4 events each): some with a snapshot
    // and a tail, some without one.
    let ids: Vec<String> = (0..12).map(|i| format!("many-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        for (tag, count) in plan(i % 8 + 1) {
            dispatch
                .execute(id, add(tag, count), meta("Add"))
                .await
                .expect("commit");
        }
    }
    // One whose snapshot no longer deserialises, and one with no events.
    let broken = sqlx::query(
        "UPDATE snapshots SET payload = '{\"nonsense\": 1}'
          WHERE aggregate_type = 'Tally' AND aggregate_id = 'many-7'",
    )
    .execute(&db.pool)
    .await
    .expect("break a snapshot");
    assert_eq!(broken.rows_affected(), 1);
    let mut asked: Vec<&str> = ids.iter().map(String::as_str).rev().collect();
    asked.insert(5, "never-written");
    asked.push("many-3");

    let many = store.load_many(&asked).await.expect("load many");
    assert_eq!(many.len(), asked.len());
    for (id, loaded) in asked.iter().zip(&many) {
        let replayed = store.load_from_events(id).await.expect("replay");
        assert_eq!(loaded.aggregate, replayed.aggregate, "{id}");
        let stored = stored_sequences(&db.pool, "Tally", id).await;
        assert_eq!(
            loaded.version as i64,
            stored.last().copied().unwrap_or(0),
            "{id}"
        );
        let alone = store.load(id).await.expect("load");
        assert_eq!(loaded.snapshot_version, alone.snapshot_version, "{id}");
    }
    // The broken snapshot was read past (its aggregate came from its events),
    // the others were used.
    let broken_at = asked.iter().position(|a| *a == "many-7").expect("asked");
    assert_eq!(many[broken_at].snapshot_version, 0);
    assert!(many.iter().any(|l| l.snapshot_version > 0));
    let new_at = asked
        .iter()
        .position(|a| *a == "never-written")
        .expect("asked");
    assert_eq!(
        (many[new_at].version, many[new_at].aggregate.events),
        (0, 0)
    );
}

#[tokio::test]
async fn background_snapshots_land_and_load_equal_a_full_replay() {
    let db = TestDb::new().await;
    let store = PgEventStore::<Tally>::new(db.pool.clone())
        .with_snapshots(5)
        .with_background_snapshots();
    let dispatch = CommandBus::new(store.clone(), (), DispatchConfig::default());
    let (mut version, mut snapshot_due_at) = (0u64, 0u64);
    for (tag, count) in plan(60) {
        let c = dispatch
            .execute("bg", add(tag, count), meta("Add"))
            .await
            .expect("commit");
        if store.snapshot_due(version, c.version) {
            snapshot_due_at = c.version;
        }
        version = c.version;
    }
    assert!(snapshot_due_at > 0);
    // The last snapshot is written after its commit was answered: wait for it.
    let mut stored = (0i64, serde_json::Value::Null);
    for _ in 0..100 {
        stored = sqlx::query_as(
            "SELECT last_sequence, payload FROM snapshots WHERE aggregate_type = 'Tally' AND aggregate_id = 'bg'",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("read snapshot")
        .unwrap_or((0, serde_json::Value::Null));
        if stored.0 == snapshot_due_at as i64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(stored.0, snapshot_due_at as i64);
    assert_eq!(
        stored.1["events"].as_i64(),
        Some(stored.0),
        "the snapshot counts exactly its events"
    );
    let via_snapshot = store.load("bg").await.expect("load");
    let replayed = store.load_from_events("bg").await.expect("replay");
    assert_eq!(via_snapshot.aggregate, replayed.aggregate);
    assert_eq!(via_snapshot.version, version);
    assert_eq!(via_snapshot.snapshot_version, snapshot_due_at);
}

/// The same workload on cqrs-es 0.5.0's own snapshot store. Its
/// `update_snapshot_with_events` applies a command's events a second time
/// (they were already applied by `EventSink::write`), so the snapshot, and
/// every load through it, counts more events than exist. This proves the
/// test above can fail: run against the stock store, it does.
#[tokio::test]
async fn the_stock_cqrs_es_snapshot_store_diverges_from_a_replay() {
    let db = TestDb::new().await;
    let stock = PersistedEventStore::<_, Tally>::new_snapshot_store(
        PostgresEventRepository::new(db.pool.clone()),
        7,
    );
    let cqrs = CqrsFramework::new(stock, vec![], ());
    let mut expected = 0u64;
    for (tag, count) in plan(60) {
        cqrs.execute("long", add(tag, count))
            .await
            .expect("stock commit");
        expected += u64::from(count);
    }
    let stock = PersistedEventStore::<_, Tally>::new_snapshot_store(
        PostgresEventRepository::new(db.pool.clone()),
        7,
    );
    let mut ctx = stock.load_aggregate("long").await.expect("load");
    use cqrs_es::AggregateContext;
    let stock_count = ctx.aggregate().events;
    let replayed = PgEventStore::<Tally>::new(db.pool.clone())
        .load_from_events("long")
        .await
        .expect("replay");
    assert_eq!(replayed.aggregate.events, expected);
    assert!(
        stock_count > expected,
        "cqrs-es 0.5.0's snapshot store was expected to double-apply: it counted {stock_count}, events {expected}"
    );
}

#[tokio::test]
async fn thirty_two_tasks_on_one_aggregate_keep_sequences_contiguous() {
    let db = TestDb::new().await;
    let store = CommandBus::new(
        PgEventStore::<Tally>::new(db.pool.clone()),
        (),
        DispatchConfig::default(),
    );
    let mut tasks = Vec::new();
    for t in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for i in 0..20u32 {
                let tag = format!("t{t}-{i}");
                let count = i % 3 + 1;
                let c = store
                    .execute("shared", add(tag.clone(), count), meta("Add"))
                    .await
                    .expect("commit");
                assert_eq!(c.events.len(), count as usize);
                done.push((tag, count));
            }
            done
        }));
    }
    let mut acknowledged = HashMap::new();
    for t in tasks {
        for (tag, count) in t.await.expect("task") {
            acknowledged.insert(tag, count);
        }
    }
    let total: u32 = acknowledged.values().sum();
    let sequences = stored_sequences(&db.pool, "Tally", "shared").await;
    assert_eq!(sequences, (1..=i64::from(total)).collect::<Vec<_>>());
    let stored = stored_tag_counts(&db.pool, "shared").await;
    assert_eq!(
        stored, acknowledged,
        "every acknowledged command is stored once, nothing else"
    );
}

async fn stored_tag_counts(pool: &sqlx::PgPool, id: &str) -> HashMap<String, u32> {
    let rows = sqlx::query("SELECT payload->'Counted'->>'tag' AS tag, count(*) AS n FROM events WHERE aggregate_type = 'Tally' AND aggregate_id = $1 GROUP BY 1")
        .bind(id)
        .fetch_all(pool)
        .await
        .expect("read tags");
    rows.iter()
        .map(|r| (r.get::<String, _>("tag"), r.get::<i64, _>("n") as u32))
        .collect()
}

/// Two stores on separate pools, standing for two processes, each with
/// `tasks` tasks sending `commands` Adds of `count` events to `ids[pick(t, i)]`.
/// Asserts that each aggregate stored exactly its acknowledged commands, with
/// contiguous sequences; returns how many commands were acknowledged.
async fn two_processes_write(
    db: &TestDb,
    config: DispatchConfig,
    ids: &[&'static str],
    tasks: usize,
    commands: usize,
    count: u32,
    pick: fn(usize, usize) -> usize,
) -> usize {
    let second = db.second_pool().await;
    let a = CommandBus::new(
        PgEventStore::<Tally>::new(db.pool.clone()),
        (),
        config.clone(),
    );
    let b = CommandBus::new(PgEventStore::<Tally>::new(second), (), config);
    let mut handles = Vec::new();
    for (name, store) in [("a", a), ("b", b)] {
        for t in 0..tasks {
            let (store, ids) = (store.clone(), ids.to_vec());
            handles.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..commands {
                    let id = ids[pick(t, i) % ids.len()];
                    let tag = format!("{name}{t}-{i}");
                    match store
                        .execute(id, add(tag.clone(), count), meta("Add"))
                        .await
                    {
                        Ok(c) => {
                            assert_eq!(c.events.len(), count as usize);
                            acked.push((id, tag));
                        }
                        Err(CommandError::Conflict) => {}
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
                acked
            }));
        }
    }
    let mut acknowledged: HashMap<&str, HashMap<String, u32>> = HashMap::new();
    for h in handles {
        for (id, tag) in h.await.expect("task") {
            acknowledged.entry(id).or_default().insert(tag, count);
        }
    }
    let mut total = 0;
    for id in ids {
        let stored = stored_tag_counts(&db.pool, id).await;
        let acked = acknowledged.remove(id).unwrap_or_default();
        total += acked.len();
        assert_eq!(
            stored, acked,
            "aggregate {id}: stored exactly the acknowledged commands"
        );
        let seqs = stored_sequences(&db.pool, "Tally", id).await;
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    }
    total
}

#[tokio::test]
async fn two_processes_writing_one_aggregate_retry_conflicts_and_lose_nothing() {
    let db = TestDb::new().await;
    let config = DispatchConfig {
        max_retries: 50,
        ..DispatchConfig::default()
    };
    let total = two_processes_write(&db, config, &["p1", "p2"], 6, 25, 1, |_, i| i).await;
    assert!(
        total >= 250,
        "with 50 retries nearly every command commits; got {total} of 300"
    );
}

#[tokio::test]
async fn appends_to_many_aggregates_share_transactions_and_survive_conflicts() {
    let db = TestDb::new().await;
    // One append in flight per process: whatever waits meanwhile shares the
    // next statement, so the other process's writes conflict with shared ones.
    let config = DispatchConfig {
        max_retries: 50,
        concurrent_appends: 1,
        ..DispatchConfig::default()
    };
    let ids = ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"];
    let total = two_processes_write(&db, config, &ids, 8, 20, 2, |t, i| t + i).await;
    assert!(
        total >= 300,
        "with 50 retries nearly every command commits; got {total} of 320"
    );
    let shared: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT transaction_id FROM events WHERE aggregate_type = 'Tally'
                                 GROUP BY transaction_id HAVING count(DISTINCT aggregate_id) > 1) t",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count shared transactions");
    assert!(
        shared > 0,
        "some appends to different aggregates shared a transaction"
    );
}

#[tokio::test]
async fn every_event_carries_the_commands_metadata_and_its_position() {
    let db = TestDb::new().await;
    let store = CommandBus::new(
        PgEventStore::<Tally>::new(db.pool.clone()),
        (),
        DispatchConfig::default(),
    );
    let committed = store
        .execute("m1", add("x", 2), meta("Add"))
        .await
        .expect("commit");
    let rows = sqlx::query(
        "SELECT global_position, transaction_id::text::bigint AS tx, event_id, metadata FROM events WHERE aggregate_id = 'm1' ORDER BY sequence",
    )
    .fetch_all(&db.pool)
    .await
    .expect("read");
    assert_eq!(rows.len(), 2);
    for (row, event) in rows.iter().zip(&committed.events) {
        assert_eq!(
            row.get::<i64, _>("global_position"),
            event.position.global_position
        );
        assert_eq!(row.get::<i64, _>("tx"), event.position.transaction_id);
        assert_eq!(row.get::<uuid::Uuid, _>("event_id"), event.event_id);
        let metadata: HashMap<String, String> =
            serde_json::from_value(row.get("metadata")).expect("string map");
        assert_eq!(metadata, meta("Add").to_map());
    }
    assert_eq!(
        committed.position,
        committed.events.last().map(|e| e.position)
    );
}

#[tokio::test]
async fn a_rejected_command_writes_nothing_and_does_not_disturb_its_batch() {
    let db = TestDb::new().await;
    let store = CommandBus::new(
        PgEventStore::<Tally>::new(db.pool.clone()),
        (),
        DispatchConfig::default(),
    );
    let (ok1, bad, ok2) = tokio::join!(
        store.execute("r1", add("a", 1), meta("Add")),
        store.execute("r1", add("nothing", 0), meta("Add")),
        store.execute("r1", add("b", 2), meta("Add")),
    );
    assert!(matches!(bad, Err(CommandError::Rejected(_))));
    assert_eq!(ok1.expect("ok").events.len(), 1);
    assert_eq!(ok2.expect("ok").events.len(), 2);
    let stored = stored_tag_counts(&db.pool, "r1").await;
    assert_eq!(
        stored,
        HashMap::from([("a".to_owned(), 1), ("b".to_owned(), 2)])
    );
    assert_eq!(
        stored_sequences(&db.pool, "Tally", "r1").await,
        vec![1, 2, 3]
    );
}

#[tokio::test]
async fn a_handler_failing_after_emitting_leaves_no_trace_in_state_or_store() {
    let db = TestDb::new().await;
    // A snapshot on every commit shows the state the worker keeps.
    let store = CommandBus::new(
        PgEventStore::<Tally>::new(db.pool.clone()).with_snapshots(1),
        (),
        DispatchConfig::default(),
    );
    let (ok1, half, ok2) = tokio::join!(
        store.execute("h1", add("a", 1), meta("Add")),
        store.execute("h1", add("half", 3), meta("Add")),
        store.execute("h1", add("b", 2), meta("Add")),
    );
    assert!(matches!(half, Err(CommandError::Rejected(_))));
    assert_eq!(ok1.expect("ok").events.len(), 1);
    assert_eq!(ok2.expect("ok").events.len(), 2);
    // The cached state goes on from the clean state.
    let last = store
        .execute("h1", add("c", 1), meta("Add"))
        .await
        .expect("ok");
    assert_eq!(last.version, 4);
    assert_eq!(
        stored_sequences(&db.pool, "Tally", "h1").await,
        vec![1, 2, 3, 4]
    );
    let snapshot: serde_json::Value = sqlx::query_scalar(
        "SELECT payload FROM snapshots WHERE aggregate_type = 'Tally' AND aggregate_id = 'h1'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("snapshot");
    let kept: Tally = serde_json::from_value(snapshot).expect("a Tally");
    assert_eq!(
        kept,
        Tally {
            events: 4,
            tags: vec!["a".into(), "b".into(), "b".into(), "c".into()],
        }
    );
}

#[tokio::test]
async fn the_events_table_refuses_updates_and_deletes() {
    let db = TestDb::new().await;
    let store = CommandBus::new(
        PgEventStore::<Tally>::new(db.pool.clone()),
        (),
        DispatchConfig::default(),
    );
    store
        .execute("u1", add("a", 1), meta("Add"))
        .await
        .expect("commit");
    let update = sqlx::query("UPDATE events SET payload = '{}' WHERE aggregate_id = 'u1'")
        .execute(&db.pool)
        .await;
    let delete = sqlx::query("DELETE FROM events WHERE aggregate_id = 'u1'")
        .execute(&db.pool)
        .await;
    assert!(update.is_err() && delete.is_err());
    assert_eq!(
        stored_tag_counts(&db.pool, "u1").await,
        HashMap::from([("a".to_owned(), 1)])
    );
}

#[tokio::test]
async fn commands_arriving_while_idle_workers_retire_are_all_committed() {
    let db = TestDb::new().await;
    let config = DispatchConfig {
        idle_timeout: std::time::Duration::from_millis(1),
        ..DispatchConfig::default()
    };
    let store = CommandBus::new(PgEventStore::<Tally>::new(db.pool.clone()), (), config);
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..30u64 {
                store
                    .execute("idle", add(format!("t{t}-{i}"), 1), meta("Add"))
                    .await
                    .expect("commit");
                tokio::time::sleep(std::time::Duration::from_micros(300 * ((t + i) % 4))).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("every command committed");
    }
    let stored = stored_tag_counts(&db.pool, "idle").await;
    assert_eq!(stored.len(), 240);
    assert!(stored.values().all(|n| *n == 1));
    assert_eq!(
        stored_sequences(&db.pool, "Tally", "idle").await,
        (1..=240).collect::<Vec<_>>()
    );
}
