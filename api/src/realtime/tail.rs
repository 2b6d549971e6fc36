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

use super::channels::{self, Kind, AGGREGATE_TYPES};
use super::hub::{Hub, Outbound};
use super::protocol::close;

/// How often the tailer polls when no NOTIFY comes.
pub const POLL: Duration = Duration::from_millis(250);
/// How often the epoch is read again.
const EPOCH_EVERY: Duration = Duration::from_secs(5);

/// Follow the log into `hub` until `cancel` fires.
pub async fn run(pool: PgPool, hub: Arc<Hub>, wakeup: Wakeup, cancel: CancellationToken) {
    let config = FollowConfig {
        batch_size: 1000,
        idle_poll: POLL,
        active_poll: Duration::from_millis(5),
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
                        Interest::types(AGGREGATE_TYPES),
                        &wakeup,
                        config,
                    ))
                }
            };
            let events = log.read(&mut conn).await?;
            drop(conn);
            for event in &events {
                deliver(&hub, event);
            }
            if let Some(last) = events.last() {
                log.advance(last.position);
                let lag = (chrono::Utc::now() - last.recorded_at).num_milliseconds();
                metrics::histogram!("lectern_realtime_tail_lag_seconds")
                    .record(lag.max(0) as f64 / 1000.0);
            }
            Ok::<_, sqlx::Error>(events.len())
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
    let Some(publication) = channels::publication(event) else {
        return;
    };
    let key = publication.key;
    hub.dispatch(Arc::new(publication));
    let body = event
        .payload
        .get(&event.event_type)
        .unwrap_or(&event.payload);
    let uuid = |field: &str| {
        body.get(field)
            .and_then(|v| v.as_str())
            .and_then(|s| Uuid::parse_str(s).ok())
    };
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
