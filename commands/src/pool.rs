//! Connection pools tuned for the event store.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Options for a connection to `url` with Lectern's session settings.
///
/// The application name is [`instance`], so `pg_stat_activity` (and
/// `pg_locks` joined to it) tells an operator which process holds a
/// connection or a projection's lock, and other processes can tell whether
/// this one is still alive.
///
/// `idle_in_transaction_session_timeout` bounds how long a forgotten open
/// transaction can hold an xid: every log reader stalls behind one (see
/// ARCHITECTURE "The log": readers stop at the oldest running transaction).
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?
        .application_name(instance())
        .options([
            ("idle_in_transaction_session_timeout", "10s"),
            ("statement_timeout", "30s"),
        ]))
}

/// This process's name on its database connections: `lectern/<pid>/<nonce>`,
/// unique across hosts and restarts (in containers every process may be
/// pid 1), and short enough for PostgreSQL's 63-byte limit.
pub fn instance() -> &'static str {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| {
        let nonce: u32 = rand::random();
        format!("lectern/{}/{nonce:08x}", std::process::id())
    })
}

/// How long a request waits for a connection before it is told the
/// database is unavailable (503): when PostgreSQL is down or restarting,
/// callers hear so within a second instead of hanging.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// A pool for `url` with `max` connections.
///
/// The ping sqlx runs on every acquire is turned off (`test_before_acquire`):
/// it would cost one extra round trip per query. A broken connection surfaces
/// as an error on its next use and is then discarded.
pub async fn connect(url: &str, max: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(connect_options(url)?)
        .await
}
