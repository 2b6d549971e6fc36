//! The delivery-expiry worker: deliveries still `sent` after the TTL are
//! expired, one `DeliveryExpired` event each, through the Inbox aggregate
//! (which skips any acknowledged meanwhile). It also drops idempotency keys
//! past their 24 hours.

use std::time::Duration;

use chrono::Utc;
use lectern_commands::classroom::ClassroomService;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Deliveries expired per sweep at most; a sweep that fills it runs again
/// at once.
const SWEEP_LIMIT: i64 = 1000;

/// Expire what is due now; returns how many deliveries were expired.
pub async fn sweep(
    pool: &PgPool,
    classroom: &ClassroomService,
    ttl: Duration,
) -> anyhow::Result<usize> {
    let cutoff = Utc::now() - chrono::Duration::from_std(ttl)?;
    let due = lectern_projections::classroom::expirable(pool, cutoff, SWEEP_LIMIT).await?;
    let mut expired = 0;
    for (lesson, recipient, seqs) in due {
        let seqs = seqs
            .into_iter()
            .filter_map(|s| u64::try_from(s).ok())
            .collect();
        expired += classroom.expire(lesson, recipient, seqs).await?;
    }
    Ok(expired)
}

/// Sweep every `min(ttl, 60 s)` until `cancel` fires.
pub async fn run(
    pool: PgPool,
    classroom: ClassroomService,
    ttl: Duration,
    cancel: CancellationToken,
) {
    let every = ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        if let Err(e) = crate::idempotency::prune(&pool).await {
            tracing::warn!(error = %e, "idempotency key pruning failed");
        }
        match sweep(&pool, &classroom, ttl).await {
            Ok(n) if n > 0 => {
                tracing::info!(expired = n, "chat deliveries expired");
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "delivery expiry sweep failed"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
