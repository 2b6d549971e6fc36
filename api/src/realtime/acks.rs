//! Delivery acknowledgements from sockets, merged: a client may ack every
//! message it gets, but each recipient's marks in a chat are written at most
//! once per interval (one event), whatever the client sends. The marks are
//! cumulative, so merging loses nothing: the last `recv` and `read` win.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use lectern_domain::classroom::inbox::AckStatus;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Caller;
use crate::routes::classroom::actor;

struct Pending {
    caller: Caller,
    own_only: bool,
    recv: u64,
    read: u64,
    written_recv: u64,
    written_read: u64,
    last_write: Option<Instant>,
}

/// Acknowledgements waiting to be written, per recipient and lesson.
#[derive(Default)]
pub struct Acks {
    pending: Mutex<HashMap<(Uuid, Uuid), Pending>>,
}

impl Acks {
    /// Take note of `caller`'s cumulative marks in lesson `lesson`.
    pub fn note(&self, caller: &Caller, own_only: bool, lesson: Uuid, recv: u64, read: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let p = pending
            .entry((caller.user_id, lesson))
            .or_insert_with(|| Pending {
                caller: caller.clone(),
                own_only,
                recv: 0,
                read: 0,
                written_recv: 0,
                written_read: 0,
                last_write: None,
            });
        p.recv = p.recv.max(recv).max(read);
        p.read = p.read.max(read);
        p.caller = caller.clone();
        p.own_only = own_only;
    }

    /// One write due per recipient and lesson whose interval has passed:
    /// the `read` mark when it moved (it covers delivery too), else `recv`.
    fn due(&self, interval: Duration) -> Vec<(Uuid, Caller, bool, u64, AckStatus)> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due = Vec::new();
        pending.retain(|(_, lesson), p| {
            let idle = p.read <= p.written_read && p.recv <= p.written_recv;
            if p.last_write.is_some_and(|at| at.elapsed() < interval) {
                return true;
            }
            if idle {
                // Nothing new for a whole interval: forget it.
                return p.last_write.is_none_or(|at| at.elapsed() < interval * 2);
            }
            let (upto, status) = if p.read > p.written_read {
                p.written_read = p.read;
                p.written_recv = p.written_recv.max(p.read);
                (p.read, AckStatus::Read)
            } else {
                p.written_recv = p.recv;
                (p.recv, AckStatus::Delivered)
            };
            p.last_write = Some(Instant::now());
            due.push((*lesson, p.caller.clone(), p.own_only, upto, status));
            true
        });
        due
    }
}

/// Write merged acknowledgements until `cancel` fires.
pub async fn run(state: AppState, cancel: CancellationToken) {
    let interval = Duration::from_millis(state.http.realtime.ack_interval_ms.max(1));
    let tick = (interval / 4).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        for (lesson, caller, own_only, upto, status) in state.realtime.acks.due(interval) {
            let grant = crate::auth::Grant { own_only };
            if let Err(e) = state
                .classroom
                .acknowledge(
                    lesson,
                    actor(&caller, grant),
                    upto,
                    status,
                    &caller.metadata(),
                )
                .await
            {
                tracing::info!(error = %e, %lesson, "a socket's acknowledgement was refused");
            }
        }
    }
}
