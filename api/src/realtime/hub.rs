//! The process's registry of sockets and their channels. The log tailer
//! hands it each event once ([`Hub::dispatch`]); it pushes the publication
//! into the bounded queue of every local subscriber, never waiting: a
//! socket whose queue is full (in frames or in bytes) is closed as slow, so
//! one slow reader never holds up the others and the server's memory stays
//! bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use lectern_domain::presence::Status;

use super::channels::{ChannelKey, Kind, Publication};
use super::protocol::close;
use crate::config::RealtimeConfig;

/// What a socket's queue carries.
#[derive(Debug)]
pub enum Outbound {
    /// An event of a channel it subscribes to.
    Pub(Arc<Publication>),
    /// A frame to send as is (a relayed cursor).
    Frame(Arc<str>),
    /// Authorization may have changed: check the subscriptions again (all,
    /// or those of one channel).
    Recheck(Option<ChannelKey>),
    /// A batch of presence changes on a `lesson:` channel (one allocation
    /// shared by its subscribers, so that the queue's slots stay small).
    Presence(Arc<PresenceBatch>),
}

/// A batch of presence changes on a `lesson:` channel: the diff, and the
/// counts for subscribers that asked for counts only.
#[derive(Debug)]
pub struct PresenceBatch {
    /// The channel.
    pub key: ChannelKey,
    /// `{"type": "presence", ..., "diff": {...}}`.
    pub diff: String,
    /// `{"type": "presence", ..., "counts": {...}}`.
    pub counts: String,
}

impl Outbound {
    fn weight(&self) -> usize {
        match self {
            Outbound::Pub(p) => p.frame.len(),
            Outbound::Frame(f) => f.len(),
            Outbound::Recheck(_) => 0,
            Outbound::Presence(batch) => batch.diff.len(),
        }
    }
}

/// The hub's side of one socket.
#[derive(Debug)]
pub struct Connection {
    /// Unique in this process.
    pub id: u64,
    /// Who is connected.
    pub user_id: Uuid,
    session_id: Mutex<Uuid>,
    /// What waits to be sent. A plain deque (empty, it allocates nothing)
    /// and a [`Notify`], rather than a channel: an idle socket costs a few
    /// bytes here, not a channel's preallocated block.
    queue: Mutex<VecDeque<Outbound>>,
    ready: Notify,
    queued: AtomicUsize,
    max_bytes: usize,
    max_frames: usize,
    /// Fires when the socket must close; [`Connection::close_code`] says why.
    pub closing: CancellationToken,
    code: Mutex<Option<u16>>,
    closes: Arc<Closes>,
}

/// How many sockets this process closed, per close code.
#[derive(Debug, Default)]
pub struct Closes(Mutex<HashMap<u16, u64>>);

impl Closes {
    /// Sockets closed with `code` so far.
    pub fn count(&self, code: u16) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&code)
            .copied()
            .unwrap_or(0)
    }
}

impl Connection {
    /// Queue `out`, or close the socket as slow when its queue is full.
    pub fn push(&self, out: Outbound) {
        if self.closing.is_cancelled() {
            return;
        }
        let weight = out.weight();
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= self.max_frames
            || self.queued.load(Ordering::Relaxed) + weight > self.max_bytes
        {
            drop(queue);
            self.close(close::SLOW);
            return;
        }
        self.queued.fetch_add(weight, Ordering::Relaxed);
        queue.push_back(out);
        drop(queue);
        self.ready.notify_one();
    }

    /// The next thing to send, if one is waiting.
    pub fn try_next(&self) -> Option<Outbound> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let out = queue.pop_front()?;
        // A burst's room is given back once it has drained.
        if queue.is_empty() && queue.capacity() > 16 {
            queue.shrink_to_fit();
        }
        self.queued.fetch_sub(out.weight(), Ordering::Relaxed);
        Some(out)
    }

    /// The next thing to send, once there is one. Cancel-safe: an item is
    /// taken from the queue only when it is returned.
    pub async fn next(&self) -> Outbound {
        loop {
            if let Some(out) = self.try_next() {
                return out;
            }
            // A push after the check above leaves a permit: no wake is lost.
            self.ready.notified().await;
        }
    }

    /// The bytes waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Close the socket with `code` (the first code wins).
    pub fn close(&self, code: u16) {
        let mut c = self.code.lock().unwrap_or_else(PoisonError::into_inner);
        if c.is_none() {
            *c = Some(code);
            *self
                .closes
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(code)
                .or_default() += 1;
            metrics::counter!("lectern_realtime_closed_total", "reason" => close::reason(code))
                .increment(1);
        }
        self.closing.cancel();
    }

    /// Why the socket is closing.
    pub fn close_code(&self) -> Option<u16> {
        *self.code.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session whose token the socket holds now.
    pub fn session_id(&self) -> Uuid {
        *self
            .session_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A refreshed token may belong to a rotated session.
    pub fn set_session(&self, session: Uuid) {
        *self
            .session_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = session;
    }
}

#[derive(Default)]
struct Registry {
    channels: HashMap<ChannelKey, HashMap<u64, Arc<Connection>>>,
    users: HashMap<Uuid, HashMap<u64, Arc<Connection>>>,
}

/// The sockets of this process and their channels.
pub struct Hub {
    /// This process's name, as `connected` reports it.
    pub node: String,
    /// The socket limits.
    pub config: RealtimeConfig,
    /// Acknowledgements from sockets, waiting to be written.
    pub acks: super::acks::Acks,
    /// Sockets closed, per close code.
    pub closes: Arc<Closes>,
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    epoch: RwLock<Option<Arc<str>>>,
    lessons: Mutex<HashMap<Uuid, LessonWatch>>,
}

/// The presence of a lesson some local socket subscribes to.
#[derive(Default)]
struct LessonWatch {
    /// Each participant's status as last sent (or loaded).
    sent: HashMap<Uuid, Status>,
    /// Changes since the last batch.
    pending: HashMap<Uuid, Status>,
    /// Participants whose statuses are being read from the log: the last
    /// change the tail passed on meanwhile, if any.
    joining: HashMap<Uuid, Option<Status>>,
}

/// The statuses counted by `status`.
pub fn counts(statuses: impl Iterator<Item = Status>) -> serde_json::Value {
    let mut counts: HashMap<&'static str, u64> =
        Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for s in statuses {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    serde_json::json!(counts)
}

/// Why a socket could not be registered.
#[derive(Debug)]
pub struct TooManyConnections;

impl Hub {
    /// An empty hub.
    pub fn new(config: RealtimeConfig) -> Self {
        Self {
            // Unique per hub: two servers in one process are two nodes.
            node: format!(
                "{}/{:04x}",
                lectern_commands::pool::instance(),
                rand::random::<u16>()
            ),
            config,
            acks: super::acks::Acks::default(),
            closes: Arc::default(),
            registry: RwLock::default(),
            next_id: AtomicU64::new(1),
            epoch: RwLock::new(None),
            lessons: Mutex::default(),
        }
    }

    /// Register a socket of `user_id`; refused when the user has as many
    /// open as allowed.
    pub fn connect(
        &self,
        user_id: Uuid,
        session_id: Uuid,
    ) -> Result<Arc<Connection>, TooManyConnections> {
        let conn = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            user_id,
            session_id: Mutex::new(session_id),
            queue: Mutex::default(),
            ready: Notify::new(),
            queued: AtomicUsize::new(0),
            max_bytes: self.config.outbound_bytes,
            max_frames: self.config.outbound_frames.max(1),
            closing: CancellationToken::new(),
            code: Mutex::new(None),
            closes: Arc::clone(&self.closes),
        });
        let mut r = self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mine = r.users.entry(user_id).or_default();
        if mine.len() >= self.config.max_connections_per_user {
            return Err(TooManyConnections);
        }
        mine.insert(conn.id, Arc::clone(&conn));
        drop(r);
        metrics::gauge!("lectern_realtime_connections").increment(1.0);
        Ok(conn)
    }

    /// Forget a socket and its subscriptions.
    pub fn disconnect(&self, conn: &Connection, channels: impl IntoIterator<Item = ChannelKey>) {
        let mut r = self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for key in channels {
            remove(&mut r.channels, &key, conn.id);
        }
        remove(&mut r.users, &conn.user_id, conn.id);
        drop(r);
        metrics::gauge!("lectern_realtime_connections").decrement(1.0);
    }

    /// Send `conn` the events of `key` from now on.
    pub fn subscribe(&self, key: ChannelKey, conn: &Arc<Connection>) {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .channels
            .entry(key)
            .or_default()
            .insert(conn.id, Arc::clone(conn));
    }

    /// Stop sending `conn` the events of `key`.
    pub fn unsubscribe(&self, key: ChannelKey, conn: &Connection) {
        let mut r = self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        remove(&mut r.channels, &key, conn.id);
    }

    /// Hand `publication` to every local subscriber of its channel.
    pub fn dispatch(&self, publication: Arc<Publication>) {
        let r = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(subscribers) = r.channels.get(&publication.key) {
            for conn in subscribers.values() {
                conn.push(Outbound::Pub(Arc::clone(&publication)));
            }
        }
    }

    /// Have every local subscriber of `key` check its access again.
    pub fn recheck(&self, key: ChannelKey) {
        let r = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(subscribers) = r.channels.get(&key) {
            for conn in subscribers.values() {
                conn.push(Outbound::Recheck(Some(key)));
            }
        }
    }

    /// Send `frame` to the subscribers of `key` but `except`.
    pub fn relay(&self, key: &ChannelKey, except: u64, frame: &Arc<str>) {
        let r = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(subscribers) = r.channels.get(key) {
            for conn in subscribers.values().filter(|c| c.id != except) {
                conn.push(Outbound::Frame(Arc::clone(frame)));
            }
        }
    }

    /// Apply `f` to every socket of `user_id`.
    pub fn each_of_user(&self, user_id: Uuid, f: impl Fn(&Connection)) {
        let r = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(conns) = r.users.get(&user_id) {
            conns.values().for_each(|c| f(c));
        }
    }

    /// The sockets open in this process.
    pub fn connections(&self) -> usize {
        let r = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        r.users.values().map(HashMap::len).sum()
    }

    /// The bytes waiting in every socket's queue.
    pub fn queued_bytes(&self) -> usize {
        let r = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        r.users
            .values()
            .flat_map(HashMap::values)
            .map(|c| c.queued_bytes())
            .sum()
    }

    /// Close every socket (at shutdown).
    pub fn close_all(&self, code: u16) {
        let r = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        for conn in r.users.values().flat_map(HashMap::values) {
            conn.close(code);
        }
    }

    /// Begin following the presence of lesson `lesson`'s `participants`,
    /// before their statuses are read: a change the tail passes on while
    /// they are read is kept for [`Hub::watch_lesson`].
    pub fn join_lesson(&self, lesson: Uuid, participants: &[Uuid]) {
        let mut lessons = self.lessons.lock().unwrap_or_else(PoisonError::into_inner);
        let watch = lessons.entry(lesson).or_default();
        for user in participants {
            if !watch.sent.contains_key(user) {
                watch.joining.entry(*user).or_insert(None);
            }
        }
    }

    /// The read after [`Hub::join_lesson`] failed: stop keeping changes.
    pub fn abandon_join(&self, lesson: Uuid, participants: &[Uuid]) {
        let mut lessons = self.lessons.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(watch) = lessons.get_mut(&lesson) {
            for user in participants {
                watch.joining.remove(user);
            }
        }
    }

    /// Follow the presence of lesson `lesson`'s `participants`, with their
    /// statuses as read from the log after [`Hub::join_lesson`]. A change
    /// the tail passed on during the read goes out with the next batch.
    pub fn watch_lesson(
        &self,
        lesson: Uuid,
        participants: impl IntoIterator<Item = (Uuid, Status)>,
    ) {
        let mut lessons = self.lessons.lock().unwrap_or_else(PoisonError::into_inner);
        let watch = lessons.entry(lesson).or_default();
        for (user, status) in participants {
            let during = watch.joining.remove(&user).flatten();
            if watch.sent.contains_key(&user) {
                continue;
            }
            watch.sent.insert(user, status);
            if let Some(changed) = during {
                watch.pending.insert(user, changed);
            }
        }
    }

    /// The statuses of a watched lesson's participants, as last sent.
    pub fn lesson_presence(&self, lesson: Uuid) -> HashMap<Uuid, Status> {
        let lessons = self.lessons.lock().unwrap_or_else(PoisonError::into_inner);
        lessons
            .get(&lesson)
            .map(|w| {
                let mut now = w.sent.clone();
                now.extend(w.pending.iter().map(|(u, s)| (*u, *s)));
                now
            })
            .unwrap_or_default()
    }

    /// A participant joined (`Some(status)`) or left (`None`) a watched lesson.
    pub fn lesson_member(&self, lesson: Uuid, user: Uuid, status: Option<Status>) {
        let mut lessons = self.lessons.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(watch) = lessons.get_mut(&lesson) {
            match status {
                Some(s) => {
                    watch.sent.entry(user).or_insert(s);
                }
                None => {
                    watch.sent.remove(&user);
                    watch.pending.remove(&user);
                }
            }
        }
    }

    /// `user`'s status changed: noted for every watched lesson they take
    /// part in, sent with the next batch.
    pub fn presence_changed(&self, user: Uuid, status: Status) {
        let mut lessons = self.lessons.lock().unwrap_or_else(PoisonError::into_inner);
        for watch in lessons.values_mut() {
            if watch.sent.contains_key(&user) {
                watch.pending.insert(user, status);
            } else if let Some(during) = watch.joining.get_mut(&user) {
                *during = Some(status);
            }
        }
    }

    /// Send each watched lesson's changes since the last batch to its
    /// subscribers: a participant whose status is back where it was sends
    /// nothing (a reconnect within the batch sends no diff). Lessons nobody
    /// here subscribes to any more are forgotten.
    pub fn flush_presence(&self) {
        let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
        let mut lessons = self.lessons.lock().unwrap_or_else(PoisonError::into_inner);
        lessons.retain(|lesson, watch| {
            !watch.joining.is_empty()
                || registry.channels.contains_key(&ChannelKey {
                    kind: Kind::Lesson,
                    id: *lesson,
                })
        });
        for (lesson, watch) in lessons.iter_mut() {
            if watch.pending.is_empty() {
                continue;
            }
            let mut diff = serde_json::Map::new();
            for (user, status) in watch.pending.drain() {
                if watch.sent.insert(user, status) != Some(status) {
                    diff.insert(user.to_string(), status.as_str().into());
                }
            }
            if diff.is_empty() {
                continue;
            }
            let key = ChannelKey {
                kind: Kind::Lesson,
                id: *lesson,
            };
            let channel = key.to_string();
            let batch = Arc::new(PresenceBatch {
                key,
                diff: serde_json::json!({"type": "presence", "channel": channel, "diff": diff})
                    .to_string(),
                counts: serde_json::json!({
                    "type": "presence", "channel": channel,
                    "counts": counts(watch.sent.values().copied()),
                })
                .to_string(),
            });
            if let Some(subscribers) = registry.channels.get(&key) {
                for conn in subscribers.values() {
                    conn.push(Outbound::Presence(Arc::clone(&batch)));
                }
            }
        }
    }

    /// The history's epoch: offsets are comparable only within one. It
    /// names the database cluster, its timeline, the database and the
    /// events table, so a restore (into another cluster, database or
    /// table), a re-initialisation or a promotion to a new timeline changes
    /// it, and resumes across it answer `recovered: false`.
    pub async fn epoch(&self, pool: &PgPool) -> Result<Arc<str>, sqlx::Error> {
        if let Some(e) = self
            .epoch
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Ok(e);
        }
        self.refresh_epoch(pool).await
    }

    /// Read the epoch again (the tailer does, every few seconds).
    pub async fn refresh_epoch(&self, pool: &PgPool) -> Result<Arc<str>, sqlx::Error> {
        let parts: String = sqlx::query_scalar(
            "SELECT concat_ws('/', (SELECT system_identifier FROM pg_control_system()),
                                   (SELECT timeline_id FROM pg_control_checkpoint()),
                                   (SELECT oid FROM pg_database WHERE datname = current_database()),
                                   'events'::regclass::oid)",
        )
        .fetch_one(pool)
        .await?;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(parts.as_bytes());
        let epoch: Arc<str> = hex::encode(&digest[..8]).into();
        *self.epoch.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&epoch));
        Ok(epoch)
    }
}

fn remove<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, HashMap<u64, Arc<Connection>>>,
    key: &K,
    id: u64,
) {
    if let Some(set) = map.get_mut(key) {
        set.remove(&id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}
