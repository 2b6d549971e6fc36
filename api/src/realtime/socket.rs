//! One socket, from its upgrade to its close.
//!
//! The socket's one task authenticates the first frame, then waits on four
//! things at once: the client's frames, its queue of publications from the
//! hub, the ping timer and the token's expiry. Every write is bounded in
//! time: a client that stops reading is closed as slow (4008).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::{sleep_until, Instant};
use uuid::Uuid;

use super::access;
use super::channels::{ChannelKey, Kind, Publication};
use super::history;
use super::hub::{Connection, Outbound};
use super::protocol::{close, ClientFrame, Connected, ErrorFrame, PresenceMode, Since, Subscribed};
use crate::app::AppState;
use crate::auth::{Caller, Origin};
use crate::problem::{Code, Problem};
use lectern_commands::presence::Kind as PresenceKind;
use lectern_domain::presence::Status;

/// A frame from the client.
enum Incoming {
    Text(Utf8Bytes),
    Pong,
    /// Binary data, which the protocol does not use.
    Binary,
    TooLarge,
    /// The client sent a close frame.
    Closed,
    /// The connection ended without one.
    Gone,
}

/// The client's next frame. Pings are answered by the WebSocket layer and
/// skipped. Cancel-safe: a frame is only taken from the stream when it is
/// returned.
async fn next_frame(stream: &mut SplitStream<WebSocket>) -> Incoming {
    loop {
        return match stream.next().await {
            Some(Ok(Message::Text(t))) => Incoming::Text(t),
            Some(Ok(Message::Binary(_))) => Incoming::Binary,
            Some(Ok(Message::Pong(_))) => Incoming::Pong,
            Some(Ok(Message::Ping(_))) => continue,
            Some(Ok(Message::Close(_))) => Incoming::Closed,
            Some(Err(e)) => {
                let too_large = e
                    .into_inner()
                    .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
                    .is_some_and(|e| {
                        matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_))
                    });
                if too_large {
                    Incoming::TooLarge
                } else {
                    Incoming::Gone
                }
            }
            None => Incoming::Gone,
        };
    }
}

/// One subscription of this socket.
struct Sub {
    /// The last offset sent.
    last: u64,
    /// Sees every enrolment (see [`access::authorize`]).
    privileged: bool,
    /// How a `lesson:` subscription wants presence.
    presence: PresenceMode,
}

/// How the socket ended.
struct Closed;

/// Frames gathered into one write at most.
const GATHER_FRAMES: usize = 64;

/// Serve one upgraded socket for a client at `origin`.
///
/// What an idle socket keeps in memory is only its live loop's state: the
/// handshake is a boxed future of its own, freed once it is done, and the
/// future returned here (which the upgrade's task holds) is a few pointers
/// (see BENCHMARKS.md, idle sockets).
pub fn serve(
    state: AppState,
    socket: WebSocket,
    origin: Origin,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let (sink, stream) = socket.split();
    let writer = Writer {
        sink,
        timeout: Duration::from_secs(state.http.realtime.write_timeout_secs.max(1)),
        stalled: false,
        gathering: false,
    };
    let handshake = Box::pin(open(state, writer, stream, origin));
    Box::pin(async move {
        let Some(opened) = handshake.await else {
            return;
        };
        // Unboxed in a block of its own, so that the box is freed before
        // the socket's life begins.
        let live = {
            let opened = *opened;
            Box::pin(opened.live())
        };
        live.await;
    })
}

/// A socket past its handshake.
struct Opened {
    socket: Socket,
    connect_id: Option<u64>,
    incoming: SplitStream<WebSocket>,
    presence_id: String,
}

/// The handshake: a `connect` frame in time, a valid token, room for one
/// more socket of the user. `None` when the socket was closed instead.
async fn open(
    state: AppState,
    mut writer: Writer,
    mut incoming: SplitStream<WebSocket>,
    origin: Origin,
) -> Option<Box<Opened>> {
    let config = &state.http.realtime;
    let deadline = Instant::now() + Duration::from_secs(config.auth_timeout_secs);
    // The first frame must be `connect`, in time.
    let first = tokio::select! {
        f = next_frame(&mut incoming) => f,
        () = sleep_until(deadline) => {
            writer.close(close::AUTH_TIMEOUT).await;
            return None;
        }
    };
    if matches!(first, Incoming::Gone | Incoming::Closed) {
        return None;
    }
    let (id, token, device) = match parse(&first) {
        Ok(ClientFrame::Connect { id, token, device }) => (id, token, device),
        Ok(_) | Err(_) => {
            let p = Problem::new(Code::BAD_REQUEST, "The first frame must be `connect`.");
            let _ = writer.error(None, None, &p).await;
            writer.close(close::PROTOCOL).await;
            return None;
        }
    };
    let caller = match Caller::authenticate(&state, &token, origin).await {
        Ok(c) => c,
        Err(p) => {
            let _ = writer.error(id, None, &p).await;
            let code = if p.code == Code::TOKEN_EXPIRED {
                close::TOKEN_EXPIRED
            } else {
                close::INVALID_TOKEN
            };
            writer.close(code).await;
            return None;
        }
    };
    let hub = Arc::clone(&state.realtime);
    let Ok(conn) = hub.connect(caller.user_id, caller.session_id) else {
        let p = Problem::new(
            Code::TOO_MANY_CONNECTIONS,
            format!(
                "A user may hold {} sockets open at once.",
                config.max_connections_per_user
            ),
        );
        let _ = writer.error(id, None, &p).await;
        writer.close(close::TOO_MANY_CONNECTIONS).await;
        return None;
    };
    let device = device.filter(|d| !d.is_empty() && d.len() <= 128);
    let presence_id = format!("{}/{}", hub.node, conn.id);
    if let Err(e) = state
        .presence
        .connect(
            &presence_id,
            caller.user_id,
            PresenceKind::Socket,
            Some(&hub.node),
            device.as_deref(),
        )
        .await
    {
        tracing::warn!(error = %e, "cannot record a socket's presence");
    }
    Some(Box::new(Opened {
        socket: Socket {
            state,
            caller,
            conn,
            subs: HashMap::new(),
            writer,
            last_cursor: None,
            client_closed: false,
            frames: (0, Instant::now()),
        },
        connect_id: id,
        incoming,
        presence_id,
    }))
}

impl Opened {
    /// Serve the socket until it closes, then let go of it: the hub
    /// forgets it, and presence learns how it ended.
    async fn live(self) {
        let Opened {
            mut socket,
            connect_id,
            incoming,
            presence_id,
        } = self;
        let ended = Box::pin(socket.run(connect_id, incoming)).await;
        if socket.writer.stalled {
            // A frame is stuck half-written: no close frame can follow it.
            socket.conn.close(close::SLOW);
        }
        let code = socket.conn.close_code();
        if ended.is_ok() {
            Box::pin(socket.writer.close(code.unwrap_or(close::SHUTTING_DOWN))).await;
        }
        let state = socket.state.clone();
        state
            .realtime
            .disconnect(&socket.conn, socket.subs.keys().copied());
        // A client that said goodbye, or was sent away for good, is gone;
        // any other loss counts as `reconnecting` for the grace.
        let clean = socket.client_closed || code.is_some_and(|c| c >= close::PROTOCOL);
        let user = socket.caller.user_id;
        drop(socket);
        if let Err(e) = Box::pin(state.presence.disconnect(&presence_id, user, clean)).await {
            tracing::warn!(error = %e, "cannot record a socket's end for presence");
        }
    }
}

fn parse(incoming: &Incoming) -> Result<ClientFrame, Problem> {
    match incoming {
        Incoming::Text(t) => serde_json::from_str(t.as_str()).map_err(|e| {
            Problem::new(
                Code::BAD_REQUEST,
                format!("The frame is not one this protocol knows: {e}."),
            )
        }),
        _ => Err(Problem::new(
            Code::BAD_REQUEST,
            "Frames are JSON text frames.",
        )),
    }
}

/// The sending half, every write bounded in time.
struct Writer {
    sink: SplitSink<WebSocket, Message>,
    timeout: Duration,
    /// A write outlasted `timeout`: the client is not reading.
    stalled: bool,
    /// Frames are being gathered into one write: [`Writer::text`] does not
    /// flush until [`Writer::flush`].
    gathering: bool,
}

impl Writer {
    async fn text(&mut self, text: &str) -> Result<(), Closed> {
        let message = Message::text(text);
        let written = if self.gathering {
            tokio::time::timeout(self.timeout, self.sink.feed(message)).await
        } else {
            tokio::time::timeout(self.timeout, self.sink.send(message)).await
        };
        match written {
            Ok(Ok(())) => {
                metrics::counter!("lectern_realtime_frames_sent_total").increment(1);
                Ok(())
            }
            Ok(Err(_)) => Err(Closed),
            Err(_) => {
                self.stalled = true;
                Err(Closed)
            }
        }
    }

    /// Send what was gathered, and stop gathering.
    async fn flush(&mut self) -> Result<(), Closed> {
        self.gathering = false;
        match tokio::time::timeout(self.timeout, self.sink.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Closed),
            Err(_) => {
                self.stalled = true;
                Err(Closed)
            }
        }
    }

    async fn json<T: Serialize>(&mut self, frame: &T) -> Result<(), Closed> {
        let text = serde_json::to_string(frame).map_err(|_| Closed)?;
        self.text(&text).await
    }

    async fn error(
        &mut self,
        id: Option<u64>,
        channel: Option<&str>,
        problem: &Problem,
    ) -> Result<(), Closed> {
        self.json(&ErrorFrame {
            kind: "error",
            id,
            channel,
            error: problem,
        })
        .await
    }

    /// Send a close frame with `code` (briefly: the client may not read).
    async fn close(&mut self, code: u16) {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: close::reason(code).into(),
        }));
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.sink.send(frame).await;
            let _ = self.sink.close().await;
        })
        .await;
    }
}

struct Socket {
    state: AppState,
    caller: Caller,
    conn: Arc<Connection>,
    subs: HashMap<ChannelKey, Sub>,
    writer: Writer,
    last_cursor: Option<Instant>,
    /// The client sent a close frame.
    client_closed: bool,
    /// Frames received in the current two-second window, and its start.
    frames: (u32, Instant),
}

impl Socket {
    /// Count one frame from the client: `false` when it is over the
    /// socket's rate: more than twice the frames per second in a two-second
    /// window (so a burst may use the whole window's allowance).
    fn within_rate(&mut self) -> bool {
        let limit = self.state.http.realtime.frames_per_sec.max(1);
        let (count, since) = &mut self.frames;
        if since.elapsed() >= Duration::from_secs(2) {
            *count = 0;
            *since = Instant::now();
        }
        *count += 1;
        *count <= limit * 2
    }

    /// Serve the socket until it closes: `Ok` when the server closes it
    /// (the reason is the connection's close code), `Err` when the client
    /// went away or stopped reading.
    async fn run(
        &mut self,
        connect_id: Option<u64>,
        mut incoming: SplitStream<WebSocket>,
    ) -> Result<(), Closed> {
        let (ping_secs, pong_timeout_secs) = {
            let config = &self.state.http.realtime;
            (config.ping_secs, config.pong_timeout_secs)
        };
        let epoch = Box::pin(self.state.realtime.epoch(&self.state.pool))
            .await
            .map_err(|_| Closed)?;
        self.writer
            .json(&Connected {
                kind: "connected",
                id: connect_id,
                client: format!("{}/{}", self.state.realtime.node, self.conn.id),
                node: self.state.realtime.node.clone(),
                user_id: self.caller.user_id,
                epoch: epoch.to_string(),
                expires_at: self.caller.claims.exp,
                ping: ping_secs,
                pong_timeout: pong_timeout_secs,
            })
            .await?;
        let ping_every = Duration::from_secs(ping_secs.max(1));
        let pong_within = Duration::from_secs(pong_timeout_secs.max(1));
        let mut next_ping = Instant::now() + ping_every;
        let mut pong_due: Option<Instant> = None;
        let closing = self.conn.closing.clone();
        let conn = Arc::clone(&self.conn);
        loop {
            let expires = expiry(self.caller.claims.exp);
            tokio::select! {
                biased;
                () = closing.cancelled() => return Ok(()),
                () = sleep_until(expires) => {
                    self.conn.close(close::TOKEN_EXPIRED);
                    return Ok(());
                }
                () = sleep_until(pong_due.unwrap_or(next_ping)), if pong_due.is_some() => {
                    self.conn.close(close::PONG_TIMEOUT);
                    return Ok(());
                }
                () = sleep_until(next_ping), if pong_due.is_none() => {
                    let sent = tokio::time::timeout(
                        self.writer.timeout,
                        self.writer.sink.send(Message::Ping(Default::default())),
                    ).await;
                    match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(Closed),
                        Err(_) => {
                            self.writer.stalled = true;
                            return Err(Closed);
                        }
                    }
                    pong_due = Some(Instant::now() + pong_within);
                    next_ping = Instant::now() + ping_every;
                }
                out = conn.next() => {
                    // What has queued up meanwhile goes out in one write
                    // (at most 64 frames before a flush).
                    self.writer.gathering = true;
                    Box::pin(self.outbound(out)).await?;
                    for _ in 1..GATHER_FRAMES {
                        let Some(more) = conn.try_next() else { break };
                        Box::pin(self.outbound(more)).await?;
                    }
                    self.writer.flush().await?;
                }
                frame = next_frame(&mut incoming) => match frame {
                    Incoming::Closed => {
                        self.client_closed = true;
                        return Err(Closed);
                    }
                    Incoming::Gone => return Err(Closed),
                    Incoming::Pong => pong_due = None,
                    Incoming::TooLarge => {
                        self.conn.close(close::FRAME_TOO_LARGE);
                        return Ok(());
                    }
                    frame => {
                        metrics::counter!("lectern_realtime_frames_received_total").increment(1);
                        if !self.within_rate() {
                            let p = Problem::new(
                                Code::RATE_LIMITED,
                                "This socket sent frames faster than allowed.",
                            );
                            let _ = self.writer.error(None, None, &p).await;
                            self.conn.close(close::RATE_LIMITED);
                            return Ok(());
                        }
                        // Any frame shows the client is alive.
                        match parse(&frame) {
                            Ok(frame) => Box::pin(self.frame(frame)).await?,
                            Err(p) => {
                                let _ = self.writer.error(None, None, &p).await;
                                self.conn.close(close::PROTOCOL);
                                return Ok(());
                            }
                        }
                    }
                },
            }
            if self.conn.closing.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// Send a publication, a relayed frame, or check subscriptions again.
    async fn outbound(&mut self, out: Outbound) -> Result<(), Closed> {
        match out {
            Outbound::Pub(p) => self.publish(&p).await,
            Outbound::Frame(f) => self.writer.text(&f).await,
            Outbound::Presence(batch) => match self.subs.get(&batch.key).map(|s| s.presence) {
                Some(PresenceMode::Full) => self.writer.text(&batch.diff).await,
                Some(PresenceMode::Counts) => self.writer.text(&batch.counts).await,
                Some(PresenceMode::None) | None => Ok(()),
            },
            Outbound::Recheck(key) => {
                let keys: Vec<ChannelKey> = match key {
                    Some(k) if self.subs.contains_key(&k) => vec![k],
                    Some(_) => Vec::new(),
                    None => self.subs.keys().copied().collect(),
                };
                for key in keys {
                    match access::authorize(&self.state, &self.caller_now(), key).await {
                        Ok(privileged) => {
                            if let Some(sub) = self.subs.get_mut(&key) {
                                sub.privileged = privileged;
                            }
                        }
                        Err(p) => {
                            self.drop_sub(key);
                            self.writer
                                .json(&serde_json::json!({
                                    "type": "unsub",
                                    "channel": key.to_string(),
                                    "reason": p.code.as_str(),
                                }))
                                .await?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// The caller with the role this process knows the user to have now.
    fn caller_now(&self) -> Caller {
        let mut caller = self.caller.clone();
        if let Some(role) = self.state.auth.revocations.role(caller.user_id) {
            caller.role = role;
        }
        caller
    }

    /// Send a live publication in offset order: one already sent (in a
    /// resume's backlog) is dropped, and a gap is filled from the log first.
    async fn publish(&mut self, p: &Publication) -> Result<(), Closed> {
        let Some(sub) = self.subs.get(&p.key) else {
            return Ok(());
        };
        if p.offset <= sub.last {
            return Ok(());
        }
        let (last, privileged) = (sub.last, sub.privileged);
        if p.offset > last + 1 {
            let missed = history::read(&self.state.pool, p.key, last, p.offset - 1)
                .await
                .map_err(|_| Closed)?;
            if missed.len() as u64 != p.offset - 1 - last {
                // The log cannot fill the gap: make the client reload.
                self.drop_sub(p.key);
                return self
                    .writer
                    .json(&serde_json::json!({
                        "type": "unsub", "channel": p.key.to_string(), "reason": "gap",
                    }))
                    .await;
            }
            for m in &missed {
                self.writer
                    .text(m.frame_for(self.caller.user_id, privileged))
                    .await?;
            }
        }
        self.writer
            .text(p.frame_for(self.caller.user_id, privileged))
            .await?;
        if let Some(sub) = self.subs.get_mut(&p.key) {
            sub.last = p.offset;
        }
        Ok(())
    }

    fn drop_sub(&mut self, key: ChannelKey) {
        if self.subs.remove(&key).is_some() {
            self.state.realtime.unsubscribe(key, &self.conn);
        }
    }

    async fn frame(&mut self, frame: ClientFrame) -> Result<(), Closed> {
        match frame {
            ClientFrame::Connect { id, .. } => {
                let p = Problem::new(Code::BAD_REQUEST, "This socket is connected already.");
                self.writer.error(id, None, &p).await
            }
            ClientFrame::Refresh { id, token } => self.refresh(id, &token).await,
            ClientFrame::Sub {
                id,
                channel,
                since,
                presence,
            } => {
                self.subscribe(id, &channel, since, presence.unwrap_or_default())
                    .await
            }
            ClientFrame::Status { id, status } => self.choose(id, &status).await,
            ClientFrame::Unsub { id, channel } => {
                if let Some(key) = ChannelKey::parse(&channel) {
                    self.drop_sub(key);
                }
                self.writer
                    .json(
                        &serde_json::json!({"type": "unsubscribed", "id": id, "channel": channel}),
                    )
                    .await
            }
            ClientFrame::Cmd {
                id,
                op,
                channel,
                data,
            } => {
                let answer = self.command(&op, channel.as_deref(), data).await;
                let frame = match answer {
                    Ok((status, data)) => {
                        serde_json::json!({"type": "reply", "id": id, "status": status, "data": data})
                    }
                    Err(p) => serde_json::json!({"type": "reply", "id": id, "error": p}),
                };
                self.writer.json(&frame).await
            }
            ClientFrame::Ack {
                channel,
                recv,
                read,
            } => self.ack(&channel, recv, read).await,
            ClientFrame::Cursor { channel, x, y } => self.cursor(&channel, x, y),
        }
    }

    async fn refresh(&mut self, id: Option<u64>, token: &str) -> Result<(), Closed> {
        match Caller::authenticate(&self.state, token, self.caller.origin.clone()).await {
            Ok(c) if c.user_id == self.caller.user_id => {
                self.conn.set_session(c.session_id);
                self.caller = c;
                self.writer
                    .json(&serde_json::json!({
                        "type": "refreshed", "id": id, "expires_at": self.caller.claims.exp,
                    }))
                    .await
            }
            Ok(_) => {
                let p = Problem::new(
                    Code::INVALID_TOKEN,
                    "A refreshed token must be for the same user.",
                );
                self.writer.error(id, None, &p).await
            }
            Err(p) => self.writer.error(id, None, &p).await,
        }
    }

    /// The client chose a presence status.
    async fn choose(&mut self, id: Option<u64>, status: &str) -> Result<(), Closed> {
        let caller = self.caller_now();
        let answer = match caller
            .authorize(&self.state, lectern_domain::policy::Action::PresenceUpdate)
            .await
        {
            Err(p) => Err(p),
            Ok(_) => match Status::parse(status).filter(|s| s.client_settable()) {
                None => Err(Problem::invalid("#/status", "must be online, away or busy")),
                Some(s) => self
                    .state
                    .presence
                    .choose(caller.user_id, s)
                    .await
                    .map_err(Problem::from),
            },
        };
        match answer {
            Ok(now) => {
                self.writer
                    .json(&serde_json::json!({"type": "status", "id": id, "status": now.as_str()}))
                    .await
            }
            Err(p) => self.writer.error(id, None, &p).await,
        }
    }

    async fn subscribe(
        &mut self,
        id: Option<u64>,
        channel: &str,
        since: Option<Since>,
        presence: PresenceMode,
    ) -> Result<(), Closed> {
        let config = self.state.http.realtime.clone();
        let Some(key) = ChannelKey::parse(channel) else {
            let p = Problem::new(
                Code::UNKNOWN_CHANNEL,
                "Channels are board:{lesson_id}, chat:{lesson_id}, lesson:{id} or user:{id}.",
            );
            return self.writer.error(id, Some(channel), &p).await;
        };
        if !self.subs.contains_key(&key) && self.subs.len() >= config.max_channels {
            let p = Problem::new(
                Code::TOO_MANY_CHANNELS,
                format!(
                    "A socket may subscribe to {} channels.",
                    config.max_channels
                ),
            );
            return self.writer.error(id, Some(channel), &p).await;
        }
        let privileged = match access::authorize(&self.state, &self.caller_now(), key).await {
            Ok(p) => p,
            Err(p) => return self.writer.error(id, Some(channel), &p).await,
        };
        // Live events from now on wait in the queue while the history is
        // read; those the history already holds are dropped by offset.
        self.state.realtime.subscribe(key, &self.conn);
        let pool = &self.state.pool;
        let read = async {
            let epoch = self.state.realtime.epoch(pool).await?;
            let top = history::top(pool, key).await?;
            let mut recovered = None;
            let mut reason = None;
            let mut pubs = Vec::new();
            if let Some(since) = since {
                let why = if since.epoch != *epoch {
                    Some("epoch")
                } else if since.offset > top {
                    Some("offset_ahead")
                } else if top - since.offset > config.resume_max_events {
                    Some("too_many")
                } else {
                    let missed = history::read(pool, key, since.offset, top).await?;
                    let mut bytes = 0;
                    for m in &missed {
                        let frame = m.frame_for(self.caller.user_id, privileged);
                        bytes += frame.len();
                        pubs.push(Arc::clone(frame));
                    }
                    (bytes > config.resume_max_bytes).then_some("too_large")
                };
                if why.is_some() {
                    pubs.clear();
                }
                recovered = Some(why.is_none());
                reason = why;
            }
            Ok::<_, sqlx::Error>((epoch, top, recovered, reason, pubs))
        };
        let (epoch, top, recovered, reason, pubs) = match read.await {
            Ok(r) => r,
            Err(e) => {
                self.state.realtime.unsubscribe(key, &self.conn);
                let p = Problem::unavailable(e);
                return self.writer.error(id, Some(channel), &p).await;
            }
        };
        self.subs.insert(
            key,
            Sub {
                last: top,
                privileged,
                presence,
            },
        );
        let presence = match (key.kind, presence) {
            (Kind::Lesson, PresenceMode::Full | PresenceMode::Counts) => {
                match self.lesson_presence(key.id).await {
                    Ok(statuses) if presence == PresenceMode::Full => {
                        Some(serde_json::json!(statuses
                            .iter()
                            .map(|(u, s)| (u.to_string(), s.as_str()))
                            .collect::<HashMap<_, _>>()))
                    }
                    Ok(statuses) => Some(super::hub::counts(statuses.values().copied())),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let reply = Subscribed {
            kind: "subscribed",
            id,
            channel: key.to_string(),
            epoch: epoch.to_string(),
            top,
            recovered,
            reason,
            pubs: pubs
                .iter()
                .filter_map(|f| serde_json::value::RawValue::from_string(f.to_string()).ok())
                .collect(),
            presence,
        };
        self.writer.json(&reply).await
    }

    /// Lesson `lesson`'s participants and their statuses, followed by the
    /// hub from now on. Who takes part comes from the lesson itself, as the
    /// subscription's access check saw it, never from a lagging read model.
    async fn lesson_presence(&self, lesson: Uuid) -> Result<HashMap<Uuid, Status>, Problem> {
        let hub = &self.state.realtime;
        let state = self.state.classroom.lesson_state(lesson).await?;
        let people: Vec<Uuid> = state
            .tutor_id
            .into_iter()
            .chain(state.students.iter().copied())
            .collect();
        // Statuses from the log itself, read once the hub keeps what the
        // tail passes on meanwhile: no change falls between the two.
        hub.join_lesson(lesson, &people);
        match self.state.presence.recorded_many(&people).await {
            Ok(statuses) => hub.watch_lesson(lesson, statuses),
            Err(e) => {
                hub.abandon_join(lesson, &people);
                return Err(e.into());
            }
        }
        Ok(hub.lesson_presence(lesson))
    }

    /// Run a command as its HTTP route does: `(status, body)` or a problem.
    async fn command(
        &mut self,
        op: &str,
        channel: Option<&str>,
        data: serde_json::Value,
    ) -> Result<(u16, serde_json::Value), Problem> {
        let bytes = serde_json::to_vec(&data).map_err(Problem::internal)?;
        let mut caller = self.caller_now();
        caller.origin.request_id = format!("ws-{}-{}", self.conn.id, Uuid::new_v4().simple());
        if op == "video.heartbeat" {
            /// The body of a `video.heartbeat`.
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Beat {
                session_id: Uuid,
                position_ms: u64,
            }
            let beat: Beat = crate::extract::body(&bytes)?;
            let lease =
                crate::routes::video::beat(&self.state, &caller, beat.session_id, beat.position_ms)
                    .await?;
            return Ok((200, serde_json::to_value(lease).map_err(Problem::internal)?));
        }
        let key = channel
            .and_then(ChannelKey::parse)
            .ok_or_else(|| Problem::new(Code::UNKNOWN_CHANNEL, "No such channel."))?;
        let body = match (op, key.kind) {
            ("chat.send", Kind::Chat) => {
                let body = crate::extract::body(&bytes)?;
                let (status, sent) =
                    crate::routes::classroom::chat::send(&self.state, &caller, key.id, body)
                        .await?;
                (
                    status.as_u16(),
                    serde_json::to_value(sent).map_err(Problem::internal)?,
                )
            }
            ("board.ops", Kind::Board) => {
                let body = crate::extract::body(&bytes)?;
                let applied = crate::routes::classroom::boards::draw_batch(
                    &self.state,
                    &caller,
                    key.id,
                    body,
                )
                .await?;
                (
                    200,
                    serde_json::to_value(applied.0).map_err(Problem::internal)?,
                )
            }
            _ => return Err(Problem::new(
                Code::UNKNOWN_COMMAND,
                "Commands are chat.send (on a chat channel), board.ops (on a board channel) and video.heartbeat.",
            )),
        };
        Ok(body)
    }

    async fn ack(
        &mut self,
        channel: &str,
        recv: Option<u64>,
        read: Option<u64>,
    ) -> Result<(), Closed> {
        let key = match ChannelKey::parse(channel) {
            Some(k) if k.kind == Kind::Chat => k,
            _ => {
                let p = Problem::new(Code::UNKNOWN_CHANNEL, "Acks are for chat channels.");
                return self.writer.error(None, Some(channel), &p).await;
            }
        };
        let caller = self.caller_now();
        match caller
            .authorize(&self.state, lectern_domain::policy::Action::ChatAck)
            .await
        {
            Ok(grant) => {
                self.state.realtime.acks.note(
                    &caller,
                    grant.own_only,
                    key.id,
                    recv.unwrap_or(0),
                    read.unwrap_or(0),
                );
                Ok(())
            }
            Err(p) => self.writer.error(None, Some(channel), &p).await,
        }
    }

    /// Relay a pointer position to the board's other subscribers on this
    /// process, at most one per interval; never stored.
    fn cursor(&mut self, channel: &str, x: f64, y: f64) -> Result<(), Closed> {
        let Some(key) = ChannelKey::parse(channel).filter(|k| self.subs.contains_key(k)) else {
            return Ok(());
        };
        let every = Duration::from_millis(self.state.http.realtime.cursor_interval_ms);
        if self.last_cursor.is_some_and(|at| at.elapsed() < every)
            || !x.is_finite()
            || !y.is_finite()
        {
            return Ok(());
        }
        self.last_cursor = Some(Instant::now());
        let frame: Arc<str> = serde_json::json!({
            "type": "cursor", "channel": key.to_string(), "user_id": self.caller.user_id, "x": x, "y": y,
        })
        .to_string()
        .into();
        self.state.realtime.relay(&key, self.conn.id, &frame);
        Ok(())
    }
}

/// When a token expiring at `exp` (Unix seconds) runs out.
fn expiry(exp: i64) -> Instant {
    let left = exp - chrono::Utc::now().timestamp();
    Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0))
}
