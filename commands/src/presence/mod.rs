//! The presence service: the connections a user's presence rests on
//! (`presence_connections`, outside the log), and the user's status, settled
//! on the Presence stream whenever they may have moved it. Only a change of
//! status is an event.
//!
//! A connection counts as what its client chose (online, away, busy) while it
//! is live: a socket on a node that beat within [`PresenceConfig::node_suspect`],
//! not lost; an HTTP client that beat within [`PresenceConfig::ttl`]. It
//! counts as `reconnecting` for a while after that: a socket lost without a
//! close, for [`PresenceConfig::grace`]; a socket whose node went silent, until
//! the node is dead ([`PresenceConfig::node_dead`]); an HTTP client until
//! [`PresenceConfig::ghost`]. Then it counts for nothing and is removed. A
//! user's status is the highest their connections give: online, busy, away,
//! reconnecting, offline.

use std::time::Duration;

use chrono::Utc;
use lectern_domain::presence::{Cause, Presence, Settle, Status};
use lectern_domain::EventMetadata;
use sqlx::PgPool;
use uuid::Uuid;

use crate::bus::{CommandBus, DispatchConfig};
use crate::error::StoreError;
use crate::store::PgEventStore;

/// The presence timings.
#[derive(Debug, Clone, Copy)]
pub struct PresenceConfig {
    /// An HTTP client without a heartbeat for this long is `reconnecting`.
    pub ttl: Duration,
    /// The heartbeat interval HTTP clients are told to keep.
    pub heartbeat_interval: Duration,
    /// An HTTP client without a heartbeat for this long is gone (a ghost).
    pub ghost: Duration,
    /// A status the client chose is restored on a reconnect within this.
    pub reconnect_window: Duration,
    /// A socket lost without a close is `reconnecting` for this long.
    pub grace: Duration,
    /// A node beats this often.
    pub node_beat: Duration,
    /// A node silent this long is suspect: its sockets are `reconnecting`.
    pub node_suspect: Duration,
    /// A node silent this long is dead: its sockets are gone.
    pub node_dead: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(90),
            heartbeat_interval: Duration::from_secs(30),
            ghost: Duration::from_secs(120),
            reconnect_window: Duration::from_secs(300),
            grace: Duration::from_secs(30),
            node_beat: Duration::from_secs(5),
            node_suspect: Duration::from_secs(10),
            node_dead: Duration::from_secs(15),
        }
    }
}

/// Why presence failed.
pub type PresenceError = StoreError;

/// A connection's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A realtime socket on a node.
    Socket,
    /// An HTTP client sending heartbeats.
    Http,
}

/// The presence context's commands.
#[derive(Clone)]
pub struct PresenceService {
    pool: PgPool,
    presences: CommandBus<Presence>,
    /// The timings.
    pub config: PresenceConfig,
}

/// The rank a connection row gives, in SQL: `$1` grace, `$2` ttl, `$3`
/// ghost, `$4` node suspect, `$5` node dead (all in seconds).
const RANK: &str = "
CASE
  WHEN c.kind = 'socket' AND c.lost_at IS NULL AND n.beat_at > now() - make_interval(secs => $4)
    THEN CASE c.client_status WHEN 'online' THEN 4 WHEN 'busy' THEN 3 ELSE 2 END
  WHEN c.kind = 'socket' AND c.lost_at IS NOT NULL AND c.lost_at > now() - make_interval(secs => $1)
       AND n.beat_at > now() - make_interval(secs => $5)
    THEN 1
  WHEN c.kind = 'socket' AND c.lost_at IS NULL AND n.beat_at > now() - make_interval(secs => $5)
    THEN 1
  WHEN c.kind = 'http' AND c.last_seen > now() - make_interval(secs => $2)
    THEN CASE c.client_status WHEN 'online' THEN 4 WHEN 'busy' THEN 3 ELSE 2 END
  WHEN c.kind = 'http' AND c.last_seen > now() - make_interval(secs => $3)
    THEN 1
  ELSE 0
END";

impl PresenceService {
    /// The service over `pool`.
    pub fn new(pool: &PgPool, config: PresenceConfig) -> Self {
        Self {
            pool: pool.clone(),
            presences: CommandBus::new(
                PgEventStore::new(pool.clone()),
                (),
                DispatchConfig::default(),
            ),
            config,
        }
    }

    fn secs(&self) -> [f64; 5] {
        [
            self.config.grace.as_secs_f64(),
            self.config.ttl.as_secs_f64(),
            self.config.ghost.as_secs_f64(),
            self.config.node_suspect.as_secs_f64(),
            self.config.node_dead.as_secs_f64(),
        ]
    }

    /// `user`'s status as their connections give it now.
    pub async fn computed(&self, user: Uuid) -> Result<Status, PresenceError> {
        let [a, b, c, d, e] = self.secs();
        let rank: Option<i32> = sqlx::query_scalar(&format!(
            "SELECT max({RANK}) FROM presence_connections c LEFT JOIN realtime_nodes n ON n.node = c.node
              WHERE c.user_id = $6"
        ))
        .bind(a)
        .bind(b)
        .bind(c)
        .bind(d)
        .bind(e)
        .bind(user)
        .fetch_one(&self.pool)
        .await?;
        Ok(Status::of_rank(
            u8::try_from(rank.unwrap_or(0)).unwrap_or(0),
        ))
    }

    /// Record `user`'s status as their connections give it, if it moved; the
    /// status now. Settled again while it keeps moving underneath (another
    /// process's connection may have changed it meanwhile).
    pub async fn settle(&self, user: Uuid, cause: Cause) -> Result<Status, PresenceError> {
        let mut status = self.computed(user).await?;
        for _ in 0..3 {
            let meta = EventMetadata::system(&user.to_string());
            self.presences
                .execute(
                    &user.to_string(),
                    Settle {
                        status,
                        cause,
                        at: Utc::now(),
                    },
                    meta,
                )
                .await
                .map_err(|e| match e {
                    crate::error::CommandError::Store(s) => s,
                    crate::error::CommandError::Conflict => StoreError::Conflict,
                    crate::error::CommandError::Rejected(never) => match never {},
                })?;
            let again = self.computed(user).await?;
            if again == status {
                break;
            }
            status = again;
        }
        Ok(status)
    }

    /// The status the Presence stream holds for `user`.
    pub async fn recorded(&self, user: Uuid) -> Result<Status, PresenceError> {
        let loaded = self.presences.store().load(&user.to_string()).await?;
        Ok(loaded.aggregate.status)
    }

    /// The statuses the Presence streams hold for `users` (offline for a
    /// user with no stream), read from the log in one query. Whatever the
    /// gateway's log tail delivered before this call is in the answer.
    pub async fn recorded_many(
        &self,
        users: &[Uuid],
    ) -> Result<Vec<(Uuid, Status)>, PresenceError> {
        let ids: Vec<String> = users.iter().map(Uuid::to_string).collect();
        let last: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT DISTINCT ON (aggregate_id) aggregate_id, payload->'PresenceChanged'->>'to'
               FROM events
              WHERE aggregate_type = 'Presence' AND aggregate_id = ANY($1)
              ORDER BY aggregate_id, sequence DESC",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let last: std::collections::HashMap<String, Status> = last
            .into_iter()
            .filter_map(|(id, to)| Some((id, Status::parse(&to?)?)))
            .collect();
        Ok(users
            .iter()
            .zip(&ids)
            .map(|(user, id)| (*user, last.get(id).copied().unwrap_or_default()))
            .collect())
    }

    /// A connection `id` of `user` opened (a socket on `node`, or an HTTP
    /// client's first heartbeat): it takes the status the user chose within
    /// the reconnect window, else online. A socket of the same device that
    /// was lost is replaced: the user came back.
    pub async fn connect(
        &self,
        id: &str,
        user: Uuid,
        kind: Kind,
        node: Option<&str>,
        device: Option<&str>,
    ) -> Result<Status, PresenceError> {
        let kind = match kind {
            Kind::Socket => "socket",
            Kind::Http => "http",
        };
        let mut tx = self.pool.begin().await?;
        if let Some(device) = device {
            sqlx::query(
                "DELETE FROM presence_connections WHERE user_id = $1 AND device = $2 AND lost_at IS NOT NULL",
            )
            .bind(user)
            .bind(device)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO presence_connections (id, user_id, kind, node, device, client_status)
             VALUES ($1, $2, $3, $4, $5,
                     coalesce((SELECT status FROM presence_choices
                                WHERE user_id = $2 AND chosen_at > now() - make_interval(secs => $6)), 'online'))
             ON CONFLICT (id) DO UPDATE SET last_seen = now(), lost_at = NULL",
        )
        .bind(id)
        .bind(user)
        .bind(kind)
        .bind(node)
        .bind(device)
        .bind(self.config.reconnect_window.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.settle(user, Cause::Connected).await
    }

    /// An HTTP client's heartbeat: its connection (one per session) lives
    /// another TTL. A status transition only if it had lapsed.
    pub async fn heartbeat(
        &self,
        user: Uuid,
        session: Uuid,
        device: Option<&str>,
    ) -> Result<Status, PresenceError> {
        self.connect(&format!("http/{session}"), user, Kind::Http, None, device)
            .await
    }

    /// Connection `id` closed: cleanly (it is removed) or lost (it counts as
    /// `reconnecting` for the grace).
    pub async fn disconnect(
        &self,
        id: &str,
        user: Uuid,
        clean: bool,
    ) -> Result<Status, PresenceError> {
        if clean {
            sqlx::query("DELETE FROM presence_connections WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
            self.settle(user, Cause::Disconnected).await
        } else {
            sqlx::query("UPDATE presence_connections SET lost_at = now() WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
            self.settle(user, Cause::Lost).await
        }
    }

    /// `user` chose `status` (online, away or busy): every connection of
    /// theirs takes it, and it is remembered for the reconnect window.
    pub async fn choose(&self, user: Uuid, status: Status) -> Result<Status, PresenceError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO presence_choices (user_id, status, chosen_at) VALUES ($1, $2, now())
             ON CONFLICT (user_id) DO UPDATE SET status = EXCLUDED.status, chosen_at = now()",
        )
        .bind(user)
        .bind(status.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE presence_connections SET client_status = $2 WHERE user_id = $1")
            .bind(user)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.settle(user, Cause::Chosen).await
    }

    /// `user`'s connections: `(id, kind, device, client status, live)`.
    pub async fn connections(&self, user: Uuid) -> Result<Vec<ConnectionRow>, PresenceError> {
        let [a, b, c, d, e] = self.secs();
        Ok(sqlx::query_as(&format!(
            "SELECT c.id, c.kind, c.device, c.client_status, c.connected_at, c.last_seen, ({RANK}) AS rank
               FROM presence_connections c LEFT JOIN realtime_nodes n ON n.node = c.node
              WHERE c.user_id = $6 ORDER BY c.connected_at"
        ))
        .bind(a)
        .bind(b)
        .bind(c)
        .bind(d)
        .bind(e)
        .bind(user)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Node `node` is alive.
    pub async fn beat(&self, node: &str) -> Result<(), PresenceError> {
        sqlx::query(
            "INSERT INTO realtime_nodes (node) VALUES ($1) ON CONFLICT (node) DO UPDATE SET beat_at = now()",
        )
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Node `node` is stopping: its sockets are lost (their clients will
    /// reconnect elsewhere within the grace), and the node is forgotten.
    pub async fn leave(&self, node: &str) -> Result<(), PresenceError> {
        let users: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE presence_connections SET lost_at = now() WHERE node = $1 AND lost_at IS NULL RETURNING user_id",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        for user in users {
            self.settle(user, Cause::Lost).await?;
        }
        Ok(())
    }

    /// Settle every user whose recorded status differs from what their
    /// connections give now (a lapsed heartbeat, a grace run out, a dead
    /// node), and remove the connections that count for nothing. One process
    /// at a time sweeps (an advisory lock); the others skip. The users
    /// settled.
    pub async fn sweep(&self) -> Result<Vec<(Uuid, Status)>, PresenceError> {
        let mut conn = self.pool.acquire().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('lectern_presence_sweep'))")
                .fetch_one(&mut *conn)
                .await?;
        if !locked {
            return Ok(Vec::new());
        }
        let result = self.sweep_locked(&mut conn).await;
        let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('lectern_presence_sweep'))")
            .execute(&mut *conn)
            .await;
        result
    }

    async fn sweep_locked(
        &self,
        conn: &mut sqlx::PgConnection,
    ) -> Result<Vec<(Uuid, Status)>, PresenceError> {
        let [a, b, c, d, e] = self.secs();
        // Users whose connections give another status than the Presence
        // stream last recorded (as the projection shows it; a lagging
        // projection only makes a settle that changes nothing).
        let moved: Vec<(Uuid, i32)> = sqlx::query_as(&format!(
            "WITH computed AS (
                 SELECT c.user_id, max({RANK}) AS rank
                   FROM presence_connections c LEFT JOIN realtime_nodes n ON n.node = c.node
                  GROUP BY c.user_id)
             SELECT coalesce(c.user_id, p.user_id), coalesce(c.rank, 0)
               FROM computed c FULL JOIN presence p ON p.user_id = c.user_id
              WHERE coalesce(c.rank, 0) IS DISTINCT FROM
                    CASE coalesce(p.status, 'offline') WHEN 'online' THEN 4 WHEN 'busy' THEN 3 WHEN 'away' THEN 2
                                                       WHEN 'reconnecting' THEN 1 ELSE 0 END"
        ))
        .bind(a)
        .bind(b)
        .bind(c)
        .bind(d)
        .bind(e)
        .fetch_all(&mut *conn)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM presence_connections c USING presence_connections c2
               LEFT JOIN realtime_nodes n ON n.node = c2.node
              WHERE c.id = c2.id AND ({RANK}) = 0"
        ))
        .bind(a)
        .bind(b)
        .bind(c)
        .bind(d)
        .bind(e)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "DELETE FROM realtime_nodes WHERE beat_at < now() - make_interval(secs => $1) * 4",
        )
        .bind(e)
        .execute(&mut *conn)
        .await?;
        let mut settled = Vec::new();
        for (user, rank) in moved {
            let cause = if rank == 0 {
                Cause::Expired
            } else {
                Cause::Lost
            };
            if self.recorded(user).await? != Status::of_rank(u8::try_from(rank).unwrap_or(0)) {
                settled.push((user, self.settle(user, cause).await?));
            }
        }
        Ok(settled)
    }
}

/// One of a user's connections.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct ConnectionRow {
    /// Its id: `<node>/<socket>` or `http/<session>`.
    pub id: String,
    /// `socket` or `http`.
    pub kind: String,
    /// The device, if the client named one.
    pub device: Option<String>,
    /// What the client chose.
    pub client_status: String,
    /// When it opened.
    pub connected_at: chrono::DateTime<Utc>,
    /// Its last heartbeat (HTTP) or when it opened (a socket).
    pub last_seen: chrono::DateTime<Utc>,
    /// What it gives: 4 online, 3 busy, 2 away, 1 reconnecting, 0 nothing.
    pub rank: i32,
}
