//! The process's one log tailer for the gateway: it follows the log with the
//! house's gap-free follower (woken by NOTIFY, polling as the fallback),
//! turns each event of a carried stream into a publication once, and hands
//! it to the hub. Events that change who may see what (a revoked session, a
//! role change, a new roster) make the hub close sockets or check their
//! subscriptions again, on every process, since every process tails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lectern_projections::{follow, FollowConfig, Follower, Interest, LogEvent, Wakeup};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use lectern_domain::presence::Status;

use super::channels::{self, ChannelKey, Kind};
use super::hub::{Hub, Outbound};
use super::protocol::close;
use crate::auth::revocations::Revocations;

/// How often the tailer polls when no NOTIFY comes.
pub const POLL: Duration = Duration::from_millis(250);
/// The streams the tailer follows: the channels' and those whose events
/// the gateway acts on (presence changes, video takeovers).
const FOLLOWED: &[&str] = &["Board", "Channel", "Lesson", "User", "Presence", "Playback"];

/// How often the epoch is read again.
const EPOCH_EVERY: Duration = Duration::from_secs(5);

/// Follow the log into `hub` until `cancel` fires. Revocations among the
/// events go into `revocations` before the hub closes their sockets (the
/// revocation watcher, another follower, may not have read them yet).
pub async fn run(
    pool: PgPool,
    hub: Arc<Hub>,
    revocations: Arc<Revocations>,
    wakeup: Wakeup,
    cancel: CancellationToken,
) {
    let config = FollowConfig {
        batch_size: 1000,
        idle_poll: POLL,
        active_poll: Duration::from_millis(5),
        ..FollowConfig::default()
    };
    let mut log: Option<Follower> = None;
    let mut epoch_at = Instant::now();
    loop {
        let read = async {
            let mut conn = pool.acquire().await?;
            let log = match &mut log {
                Some(log) => log,
                None => {
                    // Subscribers read what came before from the log itself.
                    let start = follow::position_since(&mut conn, chrono::Utc::now()).await?;
                    log.insert(Follower::new(
                        start,
                        Interest::types(FOLLOWED),
                        &wakeup,
                        config,
                    ))
                }
            };
            let read = log.read(&mut conn).await?;
            drop(conn);
            for event in &read.events {
                revocations.observe_logged(event);
                deliver(&hub, event);
            }
            if let Some(last) = read.events.last() {
                let lag = (chrono::Utc::now() - last.recorded_at).num_milliseconds();
                metrics::histogram!("lectern_realtime_tail_lag_seconds")
                    .record(lag.max(0) as f64 / 1000.0);
            }
            if let Some(last) = read.last {
                log.advance(last);
            }
            Ok::<_, sqlx::Error>(read.scanned)
        };
        let full = match read.await {
            Ok(n) => n as i64 == config.batch_size,
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "realtime tailer cannot read the log; retrying");
                false
            }
        };
        if epoch_at.elapsed() >= EPOCH_EVERY {
            epoch_at = Instant::now();
            if let Err(e) = hub.refresh_epoch(&pool).await {
                tracing::warn!(error = %e, "cannot read the realtime epoch");
            }
        }
        if !full {
            let waited = match &mut log {
                Some(log) => log.wait(&cancel).await,
                None => tokio::select! {
                    () = cancel.cancelled() => false,
                    () = tokio::time::sleep(POLL) => true,
                },
            };
            if !waited {
                hub.close_all(close::SHUTTING_DOWN);
                return;
            }
        }
    }
}

/// Hand one event to the hub, and act on what it changes about access.
fn deliver(hub: &Hub, event: &LogEvent) {
    let body = event
        .payload
        .get(&event.event_type)
        .unwrap_or(&event.payload);
    let uuid = |field: &str| {
        body.get(field)
            .and_then(|v| v.as_str())
            .and_then(|s| Uuid::parse_str(s).ok())
    };
    let Ok(stream) = Uuid::parse_str(&event.aggregate_id) else {
        return;
    };
    match (event.aggregate_type.as_str(), event.event_type.as_str()) {
        ("Presence", "PresenceChanged") => {
            if let Some(to) = body
                .get("to")
                .and_then(|v| v.as_str())
                .and_then(Status::parse)
            {
                hub.presence_changed(stream, to);
            }
            return;
        }
        ("Playback", kind @ ("VideoTakenOver" | "VideoExpired")) => {
            // The device that played is told to stop, on its user channel.
            let reason = if kind == "VideoTakenOver" {
                "taken_over"
            } else {
                "expired"
            };
            let channel = ChannelKey {
                kind: Kind::User,
                id: stream,
            };
            let frame: Arc<str> = serde_json::json!({
                "type": "video.stop", "channel": channel.to_string(),
                "session_id": body.get("session_id"), "device_id": body.get("device_id"),
                "reason": reason,
            })
            .to_string()
            .into();
            hub.relay(&channel, 0, &frame);
            return;
        }
        ("Lesson", "StudentEnrolled") => {
            if let Some(student) = uuid("student_id") {
                hub.lesson_member(stream, student, Some(Status::Offline));
            }
        }
        ("Lesson", "StudentUnenrolled") => {
            if let Some(student) = uuid("student_id") {
                hub.lesson_member(stream, student, None);
            }
        }
        _ => {}
    }
    let Some(publication) = channels::publication(event) else {
        return;
    };
    let key = publication.key;
    hub.dispatch(Arc::new(publication));
    match (key.kind, event.event_type.as_str()) {
        (Kind::User, "SessionRevoked") => {
            if let Some(session) = uuid("session_id") {
                hub.each_of_user(key.id, |c| {
                    if c.session_id() == session {
                        c.close(close::REVOKED);
                    }
                });
            }
        }
        (Kind::User, "UserDeactivated") => hub.each_of_user(key.id, |c| c.close(close::REVOKED)),
        (Kind::User, "RoleChanged") => {
            hub.each_of_user(key.id, |c| c.push(Outbound::Recheck(None)));
        }
        // A roster copy follows every enrolment change: whoever left the
        // lesson loses its board and chat.
        (Kind::Board | Kind::Chat, "RosterSynced") => hub.recheck(key),
        _ => {}
    }
}
