//! The sealer: one per cluster (a session-level advisory lock; the others
//! stand by and take over when its connection goes), following the log with
//! the gap-free reader, so the sealed order is the feed order and final.
//!
//! Each batch of events becomes leaves and stored hashes, written in one
//! transaction on the lock's connection (a sealer that lost its lock has
//! lost that connection too, so it cannot write), committed without waiting
//! for its WAL flush (see `seal`). Writers take no new lock and nothing is
//! hashed in the writing transaction; while appends stream in, the sealer
//! reads the log at most every `min_interval`.
//!
//! Every `checkpoint_every` (when the tree grew), or as soon as
//! `checkpoint_leaves` leaves were sealed since the last one, it signs a
//! checkpoint, after checking a consistency proof from the previous one
//! against the stored hashes: it never signs a tree inconsistent with what it
//! signed before. Each checkpoint is stored and written to the publish
//! directory, outside the database.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lectern_domain::Position;
use lectern_ledger::tree::{self, Frontier};
use lectern_ledger::{bundle, Envelope, Hash, LedgerKey};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use super::{LedgerError, HASHES_PER_ROW};
use crate::follow::{FollowConfig, Follower, Wakeup};
use crate::log::TextEvent;
use crate::projection::Interest;

/// First key of the sealer's advisory lock (the projections' namespace).
const LOCK_NAMESPACE: i32 = 0x4c_45_43;
/// Second key: `hashtext` of this.
const LOCK_NAME: &str = "lectern.ledger.sealer";

/// How the sealer works.
#[derive(Debug, Clone)]
pub struct SealerConfig {
    /// Events sealed per transaction at most.
    pub batch_size: i64,
    /// Sign a checkpoint this often, when the tree grew.
    pub checkpoint_every: Duration,
    /// Sign as soon as this many leaves were sealed since the last checkpoint.
    pub checkpoint_leaves: u64,
    /// How often a standby tries to take over.
    pub standby_poll: Duration,
    /// The least time between two reads of the log while it is not behind:
    /// under a steady stream of appends the sealer writes a few larger
    /// batches a second rather than one per NOTIFY. It bounds how much the
    /// sealer adds to the seal lag.
    pub min_interval: Duration,
    /// Where each checkpoint is also written; `None`: only in the database.
    pub publish_dir: Option<PathBuf>,
}

impl Default for SealerConfig {
    fn default() -> Self {
        Self {
            batch_size: 5_000,
            checkpoint_every: Duration::from_secs(30),
            checkpoint_leaves: 100_000,
            standby_poll: Duration::from_secs(1),
            min_interval: Duration::from_millis(100),
            publish_dir: None,
        }
    }
}

/// Why a sealing session ended.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The database.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The ledger tables.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The log reader stopped without saying why.
    #[error("the sealer's log reader stopped")]
    ReaderStopped,
}

/// The sealer of one process.
pub struct Sealer {
    /// How to open its own connection (it holds the lock).
    pub connect: PgConnectOptions,
    /// The checkpoint key.
    pub key: Arc<LedgerKey>,
    /// Settings.
    pub config: SealerConfig,
    /// The process's wake-up on appends.
    pub wakeup: Wakeup,
    /// Stops it.
    pub cancel: CancellationToken,
}

impl Sealer {
    /// Seal until cancelled: stand by until the lock is free, seal, and
    /// after an error start again (reloading its state from the tables).
    pub async fn run(self) {
        if let Some(dir) = &self.config.publish_dir {
            if let Err(e) = publish_key(dir, &self.key) {
                tracing::error!(dir = %dir.display(), error = %e, "cannot write the ledger's public key to the publish directory");
            }
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.session().await {
                Ok(()) => return,
                Err(e) => {
                    metrics::gauge!("lectern_ledger_sealer_active").set(0.0);
                    tracing::error!(error = %e, "the ledger sealer failed; starting again");
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn session(&self) -> Result<(), SealError> {
        let mut conn = PgConnection::connect_with(&self.connect).await?;
        loop {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
                .bind(LOCK_NAMESPACE)
                .bind(LOCK_NAME)
                .fetch_one(&mut conn)
                .await?;
            if locked {
                break;
            }
            metrics::gauge!("lectern_ledger_sealer_active").set(0.0);
            tokio::select! {
                () = self.cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.config.standby_poll) => {}
            }
        }
        metrics::gauge!("lectern_ledger_sealer_active").set(1.0);
        tracing::info!("this process seals the ledger");
        sqlx::query!(
            "INSERT INTO ledger_keys (public_key) VALUES ($1) ON CONFLICT DO NOTHING",
            self.key.public_text()
        )
        .execute(&mut conn)
        .await?;

        let (size, last) = super::head(&mut conn).await?;
        let mut frontier = super::frontier(&mut conn, size).await?;
        let mut signed = super::latest_checkpoint(&mut conn)
            .await?
            .map(|c| (c.size, c.root));
        // A checkpoint of more leaves than the tree holds: the leaves were
        // removed behind the sealer's back. It never signs over that.
        let mut halted = signed.is_some_and(|(s, _)| s > frontier.size());
        metrics::gauge!("lectern_ledger_signing_halted").set(if halted { 1.0 } else { 0.0 });
        if halted {
            tracing::error!(
                tree_size = frontier.size(),
                "the last signed checkpoint covers more events than the ledger holds: refusing to sign; the ledger tables were changed outside the sealer"
            );
        }
        // The log is read ahead on a connection of its own while a batch is
        // written, so reading and writing overlap; the reader stops with
        // the session.
        let (batches, mut next) = tokio::sync::mpsc::channel(2);
        let stop_reader = self.cancel.child_token();
        let _stop_reader = stop_reader.clone().drop_guard();
        tokio::spawn(read_ahead(
            self.connect.clone(),
            last,
            self.wakeup.clone(),
            self.config.clone(),
            stop_reader,
            batches,
        ));
        let mut position = last;
        let mut last_signed = Instant::now()
            .checked_sub(self.config.checkpoint_every)
            .unwrap_or_else(Instant::now);
        let mut last_stats: Option<Instant> = None;
        metrics::gauge!("lectern_ledger_tree_size").set(frontier.size() as f64);
        if let Some((s, _)) = signed {
            metrics::gauge!("lectern_ledger_checkpoint_size").set(s as f64);
        }
        loop {
            let batch: Option<Vec<TextEvent>> = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                b = next.recv() => match b {
                    Some(b) => Some(b?),
                    // The reader stops at shutdown too.
                    None if self.cancel.is_cancelled() => break,
                    None => return Err(SealError::ReaderStopped),
                },
                // Checkpoints and metrics are due while the log is quiet too.
                () = tokio::time::sleep(Duration::from_millis(250)) => None,
            };
            if let Some(newest) = batch.as_ref().and_then(|b| b.last()) {
                let events = batch.as_deref().unwrap_or_default();
                frontier = seal(&mut conn, &frontier, events).await?;
                position = newest.position;
                metrics::counter!("lectern_ledger_sealed_events_total")
                    .increment(events.len() as u64);
                metrics::gauge!("lectern_ledger_tree_size").set(frontier.size() as f64);
            }
            let since = frontier.size().saturating_sub(signed.map_or(0, |(s, _)| s));
            let due = since > 0
                && (since >= self.config.checkpoint_leaves
                    || last_signed.elapsed() >= self.config.checkpoint_every);
            if due && !halted {
                match self.checkpoint(&mut conn, &frontier, signed).await? {
                    Some(cp) => signed = Some(cp),
                    None => halted = true,
                }
                last_signed = Instant::now();
            }
            // The count scans what is left: every few seconds is enough.
            if last_stats.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                stats(&mut conn, position).await?;
                // Set again each time: a recorder installed after the
                // sealer started has not seen the first settings.
                metrics::gauge!("lectern_ledger_sealer_active").set(1.0);
                metrics::gauge!("lectern_ledger_signing_halted").set(if halted {
                    1.0
                } else {
                    0.0
                });
                last_stats = Some(Instant::now());
            }
        }
        // Closing the connection releases the lock.
        metrics::gauge!("lectern_ledger_sealer_active").set(0.0);
        conn.close().await?;
        Ok(())
    }

    /// Sign, store and publish a checkpoint of `frontier`, if it is
    /// consistent with the last one signed; `None` (and an error logged) if
    /// not: signing stops until an operator looks.
    async fn checkpoint(
        &self,
        conn: &mut PgConnection,
        frontier: &Frontier,
        previous: Option<(u64, Hash)>,
    ) -> Result<Option<(u64, Hash)>, SealError> {
        let (size, root) = (frontier.size(), frontier.root());
        if let Some((old, old_root)) = previous {
            // The proof comes from the stored hashes, as an auditor's would.
            let (stored_old, _, proof) = super::consistency_proof(conn, old, size).await?;
            if stored_old != old_root || !tree::check_consistency(&proof, size, root, old, old_root)
            {
                metrics::gauge!("lectern_ledger_signing_halted").set(1.0);
                tracing::error!(
                    previous_size = old,
                    size,
                    "the ledger is not consistent with the last signed checkpoint: refusing to sign; the ledger tables were changed outside the sealer"
                );
                return Ok(None);
            }
        }
        let note = self.key.sign(size, root);
        // A synchronous commit: it also makes durable every batch sealed
        // before it (those commit asynchronously), so a checkpoint is never
        // published ahead of what it covers.
        sqlx::query!(
            "INSERT INTO ledger_checkpoints (size, root, note) VALUES ($1, $2, $3)",
            size as i64,
            &root.0[..],
            note
        )
        .execute(&mut *conn)
        .await?;
        if let Some(dir) = &self.config.publish_dir {
            if let Err(e) = publish(dir, size, &note) {
                metrics::counter!("lectern_ledger_publish_failures_total").increment(1);
                tracing::error!(dir = %dir.display(), error = %e, "cannot publish a ledger checkpoint");
            }
        }
        metrics::counter!("lectern_ledger_checkpoints_total").increment(1);
        metrics::gauge!("lectern_ledger_checkpoint_size").set(size as f64);
        tracing::debug!(size, "signed a ledger checkpoint");
        Ok(Some((size, root)))
    }
}

/// Follow the log from `after` on a connection of its own, handing each
/// batch to the sealer's writer in order; an error ends it (and the
/// session). While the log is not behind it reads at most every
/// `min_interval`.
async fn read_ahead(
    connect: PgConnectOptions,
    after: Position,
    wakeup: Wakeup,
    config: SealerConfig,
    cancel: CancellationToken,
    batches: tokio::sync::mpsc::Sender<Result<Vec<TextEvent>, sqlx::Error>>,
) {
    let mut conn = match PgConnection::connect_with(&connect).await {
        Ok(c) => c,
        Err(e) => {
            let _ = batches.send(Err(e)).await;
            return;
        }
    };
    let mut follower = Follower::new(
        after,
        Interest::ALL,
        &wakeup,
        FollowConfig {
            batch_size: config.batch_size,
            ..FollowConfig::default()
        },
    );
    loop {
        let read_at = Instant::now();
        let events = match follower.read_text(&mut conn).await {
            Ok(events) => events,
            Err(e) => {
                let _ = batches.send(Err(e)).await;
                return;
            }
        };
        let full = events.len() as i64 >= config.batch_size;
        if let Some(newest) = events.last() {
            follower.advance(newest.position);
            if batches.send(Ok(events)).await.is_err() {
                return;
            }
        }
        if cancel.is_cancelled() || (!full && !follower.wait(&cancel).await) {
            return;
        }
        if !full {
            let rest = config.min_interval.saturating_sub(read_at.elapsed());
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(rest) => {}
            }
        }
    }
}

/// Append `events` to the tree in one transaction; the new frontier.
async fn seal(
    conn: &mut PgConnection,
    frontier: &Frontier,
    events: &[TextEvent],
) -> Result<Frontier, SealError> {
    let mut next = frontier.clone();
    let first_seq = next.size();
    let first_index = tree::first_stored_index(first_seq);
    let n = events.len();
    let (mut seqs, mut txs, mut positions) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut leaves, mut payloads, mut metadatas) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut hashes: Vec<Hash> = Vec::with_capacity(2 * n + 64);
    let mut buf = Vec::with_capacity(4096);
    for e in events {
        let envelope = envelope_of(e);
        let leaf = envelope.leaf_hash_with(&mut buf);
        let (p, m) = envelope.part_hashes();
        seqs.push(next.size() as i64);
        txs.push(e.position.transaction_id.to_string());
        positions.push(e.position.global_position);
        leaves.push(leaf.0.to_vec());
        payloads.push(p.0.to_vec());
        metadatas.push(m.0.to_vec());
        hashes.extend(next.append(leaf));
    }
    let (mut starts, mut runs) = (Vec::new(), Vec::new());
    for (k, chunk) in hashes.chunks(HASHES_PER_ROW).enumerate() {
        starts.push((first_index + (k * HASHES_PER_ROW) as u64) as i64);
        runs.push(chunk.iter().flat_map(|h| h.0).collect::<Vec<u8>>());
    }
    let mut tx = conn.begin().await?;
    // Sealed leaves are derived from committed events: a batch lost in a
    // crash is sealed again, identically (the order below the xmin horizon
    // is final). So the batch need not wait for its WAL flush; the next
    // checkpoint's synchronous commit flushes it.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "INSERT INTO ledger_leaves (seq, transaction_id, global_position, leaf_hash, payload_hash, metadata_hash)
         SELECT s, t::xid8, g, l, p, m
           FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bytea[], $5::bytea[], $6::bytea[])
             AS u(s, t, g, l, p, m)",
        &seqs,
        &txs,
        &positions,
        &leaves,
        &payloads,
        &metadatas,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO ledger_hashes (start_index, hashes) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
        &starts,
        &runs,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(next)
}

/// The envelope of an event read as text.
pub fn envelope_of(e: &TextEvent) -> Envelope<'_> {
    Envelope {
        global_position: e.position.global_position,
        transaction_id: e.position.transaction_id as u64,
        event_id: e.event_id,
        aggregate_type: Cow::Borrowed(&e.aggregate_type),
        aggregate_id: Cow::Borrowed(&e.aggregate_id),
        sequence: e.sequence,
        event_type: Cow::Borrowed(&e.event_type),
        event_version: Cow::Borrowed(&e.event_version),
        recorded_at_us: e.recorded_at.timestamp_micros(),
        payload: Cow::Borrowed(&e.payload),
        metadata: Cow::Borrowed(&e.metadata),
    }
}

/// The unsealed events [`unsealed`] counts at most.
pub const UNSEALED_COUNTED: i64 = 10_000;

/// The events after a sealer's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsealed {
    /// How many, up to `counted`.
    pub events: i64,
    /// When the first of them in the log's order was recorded.
    pub oldest: Option<DateTime<Utc>>,
}

/// The events after `after` in the log's order (counted up to `counted`),
/// and when the first of them was recorded. Both walk the log's
/// `(transaction_id, global_position)` index from `after`, so they cost what
/// is unsealed, not the log's size. (A plain `count(*)` of the range was
/// planned once for any position: a parallel scan of the whole table, which
/// held both cores of a 2-core host for 60-160 ms every five seconds, seen
/// as stalls in `lectern-bench webhooks`.)
pub async fn unsealed(
    conn: &mut PgConnection,
    after: Position,
    counted: i64,
) -> Result<Unsealed, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM (SELECT 1 FROM events
                                          WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
                                          ORDER BY transaction_id, global_position
                                          LIMIT $3) AS unsealed) AS "n!",
                  (SELECT recorded_at FROM events
                    WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
                    ORDER BY transaction_id, global_position
                    LIMIT 1) AS oldest"#,
        after.transaction_id.to_string(),
        after.global_position,
        counted,
    )
    .fetch_one(conn)
    .await?;
    Ok(Unsealed {
        events: row.n,
        oldest: row.oldest,
    })
}

/// The unsealed events and the age of the first of them, as metrics.
async fn stats(conn: &mut PgConnection, after: Position) -> Result<(), SealError> {
    let row = unsealed(conn, after, UNSEALED_COUNTED).await?;
    metrics::gauge!("lectern_ledger_unsealed_events").set(row.events as f64);
    let lag = row.oldest.map_or(0.0, |t| {
        (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
    });
    metrics::gauge!("lectern_ledger_seal_lag_seconds").set(lag);
    Ok(())
}

/// Write `text` to `path` through a temporary file and a rename, so a reader
/// never sees half a file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

/// Write a checkpoint to the publish directory: `checkpoints/<size>.note`,
/// and `checkpoint`, the latest.
fn publish(dir: &Path, size: u64, note: &str) -> std::io::Result<()> {
    let all = dir.join(bundle::CHECKPOINTS_DIR);
    std::fs::create_dir_all(&all)?;
    write_atomically(&all.join(bundle::checkpoint_file(size)), note)?;
    write_atomically(&dir.join("checkpoint"), note)
}

/// Write the verifier key to the publish directory.
fn publish_key(dir: &Path, key: &LedgerKey) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_atomically(
        &dir.join(bundle::PUBKEY_FILE),
        &format!("{}\n", key.public_text()),
    )
}
