//! The projection runner: gap-free reading, exactly-once batches, failover,
//! poison events, rebuilds.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lectern_domain::Position;
use lectern_projections::log::read_after;
use lectern_projections::runner::{self, RunnerConfig, Runners};
use lectern_projections::{
    Interest, LogEvent, Projection, ProjectionError, RunnerHandle, RunnerState, Tables,
};
use lectern_projections::{Vouch, Wakeup};
use lectern_tests::{wait_until, TestDb};
use sqlx::{Connection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Records every event it applies, with how often and in which order.
struct Recorder {
    name: &'static str,
    table: &'static str,
    /// Fail on events of this type.
    poison: Option<&'static str>,
    /// Block inside the batch at this event type until the test lets go.
    gate: Option<(&'static str, Arc<Notify>, Arc<Notify>)>,
    /// Read only these aggregate types (all when `None`).
    only: Option<&'static [&'static str]>,
}

impl Recorder {
    fn new(name: &'static str, table: &'static str) -> Self {
        Self {
            name,
            table,
            poison: None,
            gate: None,
            only: None,
        }
    }
}

#[async_trait]
impl Projection for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }
    fn interest(&self) -> Interest {
        self.only.map_or(Interest::ALL, Interest::types)
    }
    fn tables(&self) -> &'static [&'static str] {
        match self.table {
            "recorded_a" => &["recorded_a"],
            _ => &["recorded_b"],
        }
    }
    async fn apply(
        &self,
        conn: &mut sqlx::PgConnection,
        tables: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        if self.poison == Some(event.event_type.as_str()) {
            return Err(ProjectionError::Invalid(format!(
                "cannot handle {}",
                event.event_type
            )));
        }
        sqlx::query(&format!(
            "INSERT INTO {} AS r (event_id, global_position, applied) VALUES ($1, $2, 1)
             ON CONFLICT (event_id) DO UPDATE SET applied = r.applied + 1",
            tables.get(self.table)
        ))
        .bind(event.event_id)
        .bind(event.position.global_position)
        .execute(conn)
        .await?;
        if let Some((kind, reached, release)) = &self.gate {
            if event.event_type == *kind {
                reached.notify_one();
                release.notified().await;
            }
        }
        Ok(())
    }
}

async fn create_tables(pool: &PgPool) {
    for t in ["recorded_a", "recorded_b"] {
        sqlx::query(&format!(
            "CREATE TABLE {t} (event_id uuid PRIMARY KEY, global_position bigint NOT NULL, applied int NOT NULL,
                               applied_order bigint GENERATED ALWAYS AS IDENTITY)"
        ))
        .execute(pool)
        .await
        .expect("create table");
    }
}

async fn insert_event(pool: &PgPool, id: &str, seq: i64, event_type: &str) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('T', $1, $2, $3, '1.0', '{}', '{}')",
    )
    .bind(id)
    .bind(seq)
    .bind(event_type)
    .execute(pool)
    .await
    .expect("insert event");
}

fn runners(db: &TestDb, cancel: &CancellationToken) -> Runners {
    Runners {
        connect: (*db.pool.connect_options()).clone(),
        config: RunnerConfig {
            poll_interval: Duration::from_millis(50),
            standby_interval: Duration::from_millis(100),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            ..RunnerConfig::default()
        },
        wakeup: Wakeup::polling_only(),
        cancel: cancel.clone(),
    }
}

/// Applied (event_id position, count) rows, in application order.
async fn applied(pool: &PgPool, table: &str) -> Vec<(i64, i32)> {
    sqlx::query_as(&format!(
        "SELECT global_position, applied FROM {table} ORDER BY applied_order"
    ))
    .fetch_all(pool)
    .await
    .expect("read applied")
}

/// Every event's position in the order the log defines: (transaction, position).
async fn log_order(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT global_position FROM events ORDER BY transaction_id, global_position",
    )
    .fetch_all(pool)
    .await
    .expect("read log")
}

async fn wait_state(handle: &RunnerHandle, limit: Duration, pred: impl Fn(&RunnerState) -> bool) {
    let mut rx = handle.state.clone();
    tokio::time::timeout(limit, rx.wait_for(|s| pred(s)))
        .await
        .expect("runner state in time")
        .expect("runner alive");
}

/// What a reader that orders and resumes by `global_position` alone sees.
async fn naive_read(pool: &PgPool, after: i64) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT global_position FROM events WHERE global_position > $1 ORDER BY global_position",
    )
    .bind(after)
    .fetch_all(pool)
    .await
    .expect("naive read")
}

#[tokio::test]
async fn a_transaction_that_commits_late_is_neither_skipped_nor_duplicated() {
    let db = TestDb::new().await;
    create_tables(&db.pool).await;

    // Writer A takes its position first, then stalls while B commits.
    let mut a = db.pool.acquire().await.expect("conn");
    let mut a_tx = a.begin().await.expect("begin");
    sqlx::query("INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ('T','a',1,'A','1.0','{}','{}')")
        .execute(&mut *a_tx)
        .await
        .expect("insert A");
    insert_event(&db.pool, "b", 1, "B").await;

    // The naive reader, ordering and resuming by global_position alone.
    let mut naive_seen = naive_read(&db.pool, 0).await;

    // The gap-free reader sees nothing yet: A's transaction is still open.
    let mut conn = db.pool.acquire().await.expect("conn");
    assert!(read_after(&mut conn, Position::ZERO, 100, Interest::ALL)
        .await
        .expect("read")
        .events
        .is_empty());

    let cancel = CancellationToken::new();
    let handle = runners(&db, &cancel).spawn(Arc::new(Recorder::new("gap", "recorded_a")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        applied(&db.pool, "recorded_a").await.is_empty(),
        "nothing applied while A is open"
    );

    a_tx.commit().await.expect("commit A");
    insert_event(&db.pool, "c", 1, "C").await;

    let naive_checkpoint = naive_seen.last().copied().unwrap_or(0);
    naive_seen.extend(naive_read(&db.pool, naive_checkpoint).await);

    wait_until("all three applied", Duration::from_secs(10), || async {
        applied(&db.pool, "recorded_a").await.len() == 3
    })
    .await;
    let got = applied(&db.pool, "recorded_a").await;
    let expected = log_order(&db.pool).await;
    assert_eq!(
        got.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        expected,
        "log order"
    );
    assert!(
        got.iter().all(|(_, n)| *n == 1),
        "each applied once: {got:?}"
    );

    let a_pos: i64 =
        sqlx::query_scalar("SELECT global_position FROM events WHERE aggregate_id = 'a'")
            .fetch_one(&db.pool)
            .await
            .expect("A");
    assert!(
        !naive_seen.contains(&a_pos),
        "the position-only reader skips A (it saw {naive_seen:?})"
    );
    assert_eq!(naive_seen.len(), 2);
    cancel.cancel();
    let _ = handle.task.await;
}

#[tokio::test]
async fn a_runner_killed_mid_batch_applies_every_event_once_after_restart() {
    let db = TestDb::new().await;
    create_tables(&db.pool).await;
    for i in 1..=20 {
        insert_event(&db.pool, "k", i, if i == 12 { "Gate" } else { "E" }).await;
    }
    let reached = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let gated = Recorder {
        gate: Some(("Gate", Arc::clone(&reached), Arc::clone(&release))),
        ..Recorder::new("crash", "recorded_a")
    };
    let cancel = CancellationToken::new();
    let handle = runners(&db, &cancel).spawn(Arc::new(gated));
    tokio::time::timeout(Duration::from_secs(10), reached.notified())
        .await
        .expect("reached the gate");
    // Killed between applying and committing: the batch's writes vanish.
    handle.task.abort();
    let _ = handle.task.await;
    wait_until("the batch rolled back", Duration::from_secs(5), || async {
        applied(&db.pool, "recorded_a").await.is_empty()
    })
    .await;

    let restarted = runners(&db, &cancel).spawn(Arc::new(Recorder::new("crash", "recorded_a")));
    wait_until(
        "all applied after restart",
        Duration::from_secs(10),
        || async { applied(&db.pool, "recorded_a").await.len() == 20 },
    )
    .await;
    let got = applied(&db.pool, "recorded_a").await;
    assert!(got.iter().all(|(_, n)| *n == 1), "{got:?}");
    let (position, count): (i64, i64) = sqlx::query_as(
        "SELECT last_position, events_applied FROM projection_checkpoints WHERE name = 'crash'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("checkpoint");
    assert_eq!(count, 20);
    assert_eq!(Some(position), log_order(&db.pool).await.last().copied());
    cancel.cancel();
    let _ = restarted.task.await;
}

#[tokio::test]
async fn a_standby_runner_takes_over_within_five_seconds() {
    let db = TestDb::new().await;
    create_tables(&db.pool).await;
    let cancel_a = CancellationToken::new();
    let cancel_b = CancellationToken::new();
    let a = runners(&db, &cancel_a).spawn(Arc::new(Recorder::new("failover", "recorded_a")));
    wait_state(&a, Duration::from_secs(5), |s| {
        matches!(s, RunnerState::Active(_))
    })
    .await;
    let b = runners(&db, &cancel_b).spawn(Arc::new(Recorder::new("failover", "recorded_a")));
    for i in 1..=5 {
        insert_event(&db.pool, "f", i, "E").await;
    }
    wait_until("five applied", Duration::from_secs(5), || async {
        applied(&db.pool, "recorded_a").await.len() == 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *b.state.borrow(),
        RunnerState::Standby,
        "only one runner is active"
    );

    // The active one dies without a goodbye.
    a.task.abort();
    let _ = a.task.await;
    let started = std::time::Instant::now();
    wait_state(&b, Duration::from_secs(5), |s| {
        matches!(s, RunnerState::Active(_))
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    for i in 6..=8 {
        insert_event(&db.pool, "f", i, "E").await;
    }
    wait_until("eight applied", Duration::from_secs(5), || async {
        applied(&db.pool, "recorded_a").await.len() == 8
    })
    .await;
    let got = applied(&db.pool, "recorded_a").await;
    assert!(got.iter().all(|(_, n)| *n == 1), "{got:?}");
    cancel_b.cancel();
    let _ = b.task.await;
}

#[tokio::test]
async fn a_poison_event_stops_its_projection_and_not_the_others() {
    let db = TestDb::new().await;
    create_tables(&db.pool).await;
    for (i, kind) in ["E", "E", "Poison", "E"].iter().enumerate() {
        insert_event(&db.pool, "p", i as i64 + 1, kind).await;
    }
    let cancel = CancellationToken::new();
    let r = runners(&db, &cancel);
    let picky = r.spawn(Arc::new(Recorder {
        poison: Some("Poison"),
        ..Recorder::new("picky", "recorded_a")
    }));
    let other = r.spawn(Arc::new(Recorder::new("tolerant", "recorded_b")));
    wait_until("tolerant applied all", Duration::from_secs(5), || async {
        applied(&db.pool, "recorded_b").await.len() == 4
    })
    .await;
    wait_state(&picky, Duration::from_secs(5), |s| {
        matches!(s, RunnerState::Failed { .. })
    })
    .await;
    // Let it retry a few times (backoff 50, 100, 200 ms): a retry must resume
    // after the committed prefix, not apply those events again.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let poison_pos: i64 =
        sqlx::query_scalar("SELECT global_position FROM events WHERE event_type = 'Poison'")
            .fetch_one(&db.pool)
            .await
            .expect("poison");
    let statuses = lectern_projections::status::all(&db.pool)
        .await
        .expect("status");
    let picky_status = statuses
        .iter()
        .find(|s| s.name == "picky")
        .expect("picky status");
    assert_eq!(picky_status.status, "failed");
    assert_eq!(picky_status.failing_position, Some(poison_pos));
    assert!(picky_status
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("cannot handle Poison"));
    assert_eq!(
        picky_status.lag_events, 2,
        "stopped before the poison event, not past it"
    );
    // The events before the poison one are applied, once; nothing after it.
    let got = applied(&db.pool, "recorded_a").await;
    assert_eq!(
        got.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        log_order(&db.pool).await[..2].to_vec()
    );
    assert!(got.iter().all(|(_, n)| *n == 1));
    let tolerant = statuses
        .iter()
        .find(|s| s.name == "tolerant")
        .expect("tolerant status");
    assert_eq!(
        (tolerant.status.as_str(), tolerant.lag_events),
        ("running", 0)
    );
    cancel.cancel();
    let _ = picky.task.await;
    let _ = other.task.await;
}

#[tokio::test]
async fn a_rebuild_replays_from_zero_into_new_tables_and_swaps_them_in() {
    let db = TestDb::new().await;
    create_tables(&db.pool).await;
    for i in 1..=30 {
        insert_event(&db.pool, "r", i, "E").await;
    }
    let cancel = CancellationToken::new();
    let handle = runners(&db, &cancel).spawn(Arc::new(Recorder::new("rebuilt", "recorded_a")));
    wait_until("applied", Duration::from_secs(5), || async {
        applied(&db.pool, "recorded_a").await.len() == 30
    })
    .await;
    // Damage the read model, as a buggy projection version might have.
    sqlx::query("DELETE FROM recorded_a WHERE global_position % 2 = 0")
        .execute(&db.pool)
        .await
        .expect("damage");

    runner::request_rebuild(&db.pool, "rebuilt")
        .await
        .expect("request");
    wait_until("rebuilt", Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, bool>("SELECT rebuild_requested_at IS NULL AND rebuilt_at IS NOT NULL FROM projection_checkpoints WHERE name = 'rebuilt'")
            .fetch_one(&db.pool)
            .await
            .unwrap_or(false)
    })
    .await;
    let got = applied(&db.pool, "recorded_a").await;
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|(_, n)| *n == 1));
    let status = lectern_projections::status::all(&db.pool)
        .await
        .expect("status");
    let s = status.iter().find(|s| s.name == "rebuilt").expect("status");
    assert_eq!(
        (s.events_applied, s.lag_events, s.status.as_str()),
        (30, 0, "running")
    );
    // New events keep flowing into the swapped-in table.
    insert_event(&db.pool, "r", 31, "E").await;
    wait_until("31 applied", Duration::from_secs(5), || async {
        applied(&db.pool, "recorded_a").await.len() == 31
    })
    .await;
    cancel.cancel();
    let _ = handle.task.await;
}

#[tokio::test]
async fn waiting_for_a_position_returns_once_the_projection_passes_it() {
    let db = TestDb::new().await;
    create_tables(&db.pool).await;
    insert_event(&db.pool, "w", 1, "E").await;
    let row: (i64, i64) =
        sqlx::query_as("SELECT transaction_id::text::bigint, global_position FROM events")
            .fetch_one(&db.pool)
            .await
            .expect("position");
    let position = Position {
        transaction_id: row.0,
        global_position: row.1,
    };
    sqlx::query("INSERT INTO projection_checkpoints (name) VALUES ('waited')")
        .execute(&db.pool)
        .await
        .expect("checkpoint");
    let status = lectern_projections::status::wait_for;
    assert!(
        !status(&db.pool, "waited", position, Duration::from_millis(100))
            .await
            .expect("wait")
    );
    let cancel = CancellationToken::new();
    let handle = runners(&db, &cancel).spawn(Arc::new(Recorder::new("waited", "recorded_a")));
    assert!(status(&db.pool, "waited", position, Duration::from_secs(5))
        .await
        .expect("wait"));
    assert_eq!(applied(&db.pool, "recorded_a").await.len(), 1);
    cancel.cancel();
    let _ = handle.task.await;
}

/// A reader of some aggregate types is sent only their events, with the
/// position of the last event read whatever its type; a runner of such a
/// projection applies exactly its events, once, and its checkpoint ends at
/// the log's last event even when that one is of another type.
#[tokio::test]
async fn a_reader_of_some_types_gets_only_theirs_and_moves_past_the_rest() {
    let db = TestDb::new().await;
    create_tables(&db.pool).await;
    // T and U interleaved, the log ending with a U.
    let types = ["T", "U", "U", "T", "U", "T", "T", "U", "U"];
    for (i, t) in types.iter().enumerate() {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ($1, $2, 1, 'E', '1.0', '{\"n\": 1}', '{}')",
        )
        .bind(*t)
        .bind(format!("s{i}"))
        .execute(&db.pool)
        .await
        .expect("insert");
    }
    let order = log_order(&db.pool).await;
    // Readable once every transaction older than theirs has ended (other
    // tests' transactions in the cluster included).
    wait_until("all readable", Duration::from_secs(10), || async {
        let mut conn = db.pool.acquire().await.expect("conn");
        read_after(&mut conn, Position::ZERO, 100, Interest::ALL)
            .await
            .expect("read")
            .scanned
            == types.len()
    })
    .await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let only_t = Interest::types(&["T"]);
    let read = read_after(&mut conn, Position::ZERO, 100, only_t)
        .await
        .expect("read");
    let wanted: Vec<i64> = order
        .iter()
        .zip(types)
        .filter(|(_, t)| *t == "T")
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(
        read.events
            .iter()
            .map(|e| e.position.global_position)
            .collect::<Vec<_>>(),
        wanted
    );
    assert!(read
        .events
        .iter()
        .all(|e| e.aggregate_type == "T" && e.payload["n"] == 1));
    assert_eq!(read.last.map(|p| p.global_position), order.last().copied());
    assert_eq!(read.scanned, types.len());
    // A short read: the first three events, one of them a T.
    let short = read_after(&mut conn, Position::ZERO, 3, only_t)
        .await
        .expect("read");
    assert_eq!(
        short
            .events
            .iter()
            .map(|e| e.position.global_position)
            .collect::<Vec<_>>(),
        vec![order[0]]
    );
    assert_eq!(
        (short.last.map(|p| p.global_position), short.scanned),
        (Some(order[2]), 3)
    );
    // Nothing after the end.
    let after = read_after(&mut conn, read.last.expect("last"), 100, only_t)
        .await
        .expect("read");
    assert_eq!(
        (after.events.len(), after.last, after.scanned),
        (0, None, 0)
    );

    let cancel = CancellationToken::new();
    let mut recorder = Recorder::new("only_t", "recorded_a");
    recorder.only = Some(&["T"]);
    let handle = runners(&db, &cancel).spawn(Arc::new(recorder));
    let last = *order.last().expect("events");
    wait_state(
        &handle,
        Duration::from_secs(10),
        |s| matches!(s, RunnerState::Active(p) if p.global_position == last),
    )
    .await;
    let got = applied(&db.pool, "recorded_a").await;
    assert_eq!(got.iter().map(|(p, _)| *p).collect::<Vec<_>>(), wanted);
    assert!(got.iter().all(|(_, n)| *n == 1), "{got:?}");
    let (position, count): (i64, i64) = sqlx::query_as(
        "SELECT last_position, events_applied FROM projection_checkpoints WHERE name = 'only_t'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("checkpoint");
    assert_eq!((position, count), (last, wanted.len() as i64));
    cancel.cancel();
    let _ = handle.task.await;
}

#[tokio::test]
async fn a_runner_woken_by_the_log_tail_applies_its_types_once_while_others_flood_the_log() {
    let db = TestDb::new().await;
    create_tables(&db.pool).await;
    let cancel = CancellationToken::new();
    let wakeup = Wakeup::listen(&db.pool, cancel.clone())
        .await
        .expect("listen");
    let mut recorder = Recorder::new("tailed", "recorded_a");
    recorder.only = Some(&["T"]);
    let handle = Runners {
        wakeup: wakeup.clone(),
        ..runners(&db, &cancel)
    }
    .spawn(Arc::new(recorder));
    let insert = |pool: PgPool, aggregate: &'static str, id: String| async move {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ($1, $2, 1, 'E', '1.0', '{}', '{}')",
        )
        .bind(aggregate)
        .bind(id)
        .execute(&pool)
        .await
        .expect("insert");
    };
    // A T whose transaction commits after everything below: the tail must
    // not move past it while it is pending.
    let mut late = db.pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('T', 'late', 1, 'E', '1.0', '{}', '{}')",
    )
    .execute(&mut *late)
    .await
    .expect("insert late");
    // Four writers at once: 400 events, one in ten a T.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let aggregate = if i % 10 == 3 { "T" } else { "U" };
                    insert(pool.clone(), aggregate, format!("w{w}-{i}")).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    late.commit().await.expect("commit late");
    // And a last stretch of U only, which the runner moves past unread.
    for i in 0..50 {
        insert(db.pool.clone(), "U", format!("tail-{i}")).await;
    }
    let order = log_order(&db.pool).await;
    let last = *order.last().expect("events");
    let wanted: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events WHERE aggregate_type = 'T'
          ORDER BY transaction_id, global_position",
    )
    .fetch_all(&db.pool)
    .await
    .expect("wanted");
    assert_eq!(wanted.len(), 41);
    wait_state(
        &handle,
        Duration::from_secs(20),
        |s| matches!(s, RunnerState::Active(p) if p.global_position == last),
    )
    .await;
    let got = applied(&db.pool, "recorded_a").await;
    assert_eq!(got.iter().map(|(p, _)| *p).collect::<Vec<_>>(), wanted);
    assert!(got.iter().all(|(_, n)| *n == 1), "{got:?}");
    // The checkpoint is saved within its interval of the runner's position.
    wait_until("checkpoint saved", Duration::from_secs(5), || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT last_position, events_applied FROM projection_checkpoints WHERE name = 'tailed'",
        )
        .fetch_one(&db.pool)
        .await
        .expect("checkpoint")
            == (last, 41)
    })
    .await;
    // What the tail vouches for: the stretch after the last T holds none,
    // a reader of every type must read, and so must one from before the
    // tail started.
    let last_t: (i64, i64) = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events WHERE aggregate_type = 'T'
          ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("last T");
    let last_t = Position {
        transaction_id: last_t.0,
        global_position: last_t.1,
    };
    let only_t = Interest::types(&["T"]);
    wait_until("the tail at the head", Duration::from_secs(5), || async {
        matches!(wakeup.tail().vouch(last_t, only_t), Vouch::Skip(p) if p.global_position == last)
    })
    .await;
    let tail = wakeup.tail();
    assert_eq!(tail.vouch(last_t, Interest::ALL), Vouch::Read);
    assert_eq!(tail.vouch(Position::ZERO, only_t), Vouch::Read);
    let before_last_t = Position {
        global_position: last_t.global_position - 1,
        ..last_t
    };
    assert_eq!(tail.vouch(before_last_t, only_t), Vouch::Read);
    cancel.cancel();
    let _ = handle.task.await;
}
