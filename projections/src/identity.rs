//! The identity read models: `users`, `sessions` and `devices`, from the User
//! streams.

use async_trait::async_trait;
use lectern_domain::identity::UserEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::log::LogEvent;
use crate::projection::{Interest, Projection, ProjectionError, Tables};

/// Keeps `users`, `sessions` and `devices`.
pub struct IdentityProjection;

const USERS: &str = "users";
const SESSIONS: &str = "sessions";
const DEVICES: &str = "devices";

#[async_trait]
impl Projection for IdentityProjection {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[USERS, SESSIONS, DEVICES]
    }

    fn interest(&self) -> Interest {
        Interest::types(&["User"])
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != "User" {
            return Ok(());
        }
        let user_id = Uuid::parse_str(&event.aggregate_id)
            .map_err(|e| ProjectionError::Invalid(format!("user id: {e}")))?;
        let payload: UserEvent = serde_json::from_value(event.payload.clone())
            .map_err(|e| ProjectionError::Invalid(format!("payload: {e}")))?;
        let at = event.recorded_at;
        let version = event.sequence;
        let (users, sessions, devices) = (t.get(USERS), t.get(SESSIONS), t.get(DEVICES));
        // Every event moves the user's version and updated_at.
        let touch = format!("UPDATE {users} SET version = $2, updated_at = $3 WHERE id = $1");
        match payload {
            UserEvent::UserRegistered {
                email,
                display_name,
                role,
                ..
            } => {
                sqlx::query(&format!(
                    "INSERT INTO {users} (id, email, display_name, role, status, created_at, updated_at, version)
                     VALUES ($1, $2, $3, $4, 'active', $5, $5, $6)"
                ))
                .bind(user_id)
                .bind(email)
                .bind(display_name)
                .bind(role.as_str())
                .bind(at)
                .bind(version)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            UserEvent::ProfileUpdated { display_name } => {
                exec(
                    conn,
                    &format!("UPDATE {users} SET display_name = $2 WHERE id = $1"),
                    user_id,
                    &display_name,
                )
                .await?;
            }
            UserEvent::LoginSucceeded { .. } => {
                sqlx::query(&format!(
                    "UPDATE {users} SET last_login_at = $2, locked_until = NULL WHERE id = $1"
                ))
                .bind(user_id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::AccountLocked { until, .. } => {
                sqlx::query(&format!(
                    "UPDATE {users} SET locked_until = $2 WHERE id = $1"
                ))
                .bind(user_id)
                .bind(until)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::SessionStarted {
                session_id,
                started_at,
                expires_at,
                ..
            } => {
                sqlx::query(&format!(
                    "INSERT INTO {sessions} (id, user_id, started_at, expires_at, ip, user_agent)
                     VALUES ($1, $2, $3, $4, $5, $6)"
                ))
                .bind(session_id)
                .bind(user_id)
                .bind(started_at)
                .bind(expires_at)
                .bind(event.meta("ip"))
                .bind(event.meta("user_agent"))
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::SessionRefreshed {
                session_id,
                generation,
                ..
            } => {
                sqlx::query(&format!(
                    "UPDATE {sessions} SET generation = $2, last_refresh_at = $3, ip = $4, user_agent = $5 WHERE id = $1"
                ))
                .bind(session_id)
                .bind(i32::try_from(generation).unwrap_or(i32::MAX))
                .bind(at)
                .bind(event.meta("ip"))
                .bind(event.meta("user_agent"))
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::SessionRevoked { session_id, reason } => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                sqlx::query(&format!(
                    "UPDATE {sessions} SET revoked_at = $2, revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL"
                ))
                .bind(session_id)
                .bind(at)
                .bind(reason)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::PasswordChanged { .. } => {
                sqlx::query(&format!(
                    "UPDATE {users} SET must_change_password = false, locked_until = NULL WHERE id = $1"
                ))
                .bind(user_id)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::PasswordResetForced {} => {
                sqlx::query(&format!(
                    "UPDATE {users} SET must_change_password = true WHERE id = $1"
                ))
                .bind(user_id)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::RoleChanged { to, .. } => {
                exec(
                    conn,
                    &format!("UPDATE {users} SET role = $2 WHERE id = $1"),
                    user_id,
                    to.as_str(),
                )
                .await?;
            }
            UserEvent::UserDeactivated {} => {
                exec(
                    conn,
                    &format!("UPDATE {users} SET status = $2 WHERE id = $1"),
                    user_id,
                    "deactivated",
                )
                .await?;
            }
            UserEvent::DeviceRegistered {
                device_id,
                name,
                platform,
            } => {
                let platform = serde_json::to_value(platform)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                // A device id revoked earlier may be registered again.
                sqlx::query(&format!(
                    "INSERT INTO {devices} (user_id, device_id, name, platform, registered_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (user_id, device_id) DO UPDATE
                        SET name = EXCLUDED.name, platform = EXCLUDED.platform, active = false,
                            registered_at = EXCLUDED.registered_at, revoked_at = NULL"
                ))
                .bind(user_id)
                .bind(device_id)
                .bind(name)
                .bind(platform)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::ActiveDeviceTransferred { to, .. } => {
                sqlx::query(&format!(
                    "UPDATE {devices} SET active = (device_id = $2) WHERE user_id = $1 AND revoked_at IS NULL"
                ))
                .bind(user_id)
                .bind(to)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::DeviceRevoked { device_id } => {
                sqlx::query(&format!(
                    "UPDATE {devices} SET revoked_at = $3, active = false WHERE user_id = $1 AND device_id = $2"
                ))
                .bind(user_id)
                .bind(device_id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::LoginFailed { .. }
            | UserEvent::RefreshTokenReused { .. }
            | UserEvent::PasswordResetRequested { .. } => {}
        }
        sqlx::query(&touch)
            .bind(user_id)
            .bind(version)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

async fn exec(
    conn: &mut PgConnection,
    sql: &str,
    id: Uuid,
    value: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql).bind(id).bind(value).execute(conn).await?;
    Ok(())
}

/// One row of `users`, as the API shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UserRow {
    /// The id.
    pub id: Uuid,
    /// The email address, normalised.
    pub email: String,
    /// The name shown to other users.
    pub display_name: String,
    /// The role.
    pub role: String,
    /// The status.
    pub status: String,
    /// Tokens allow only the password change until it is changed.
    pub must_change_password: bool,
    /// Locked until then.
    pub locked_until: Option<chrono::DateTime<chrono::Utc>>,
    /// When it was created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it last changed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// When the user last logged in.
    pub last_login_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The stream version.
    pub version: i64,
}

const USER_COLUMNS: &str =
    "id, email, display_name, role, status, must_change_password, locked_until, \
                            created_at, updated_at, last_login_at, version";

/// The user with `id`.
pub async fn user(pool: &sqlx::PgPool, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A page of users, oldest first, optionally filtered by role and status,
/// with the total count.
pub async fn users_page(
    pool: &sqlx::PgPool,
    role: Option<&str>,
    status: Option<&str>,
    offset: i64,
    limit: i64,
) -> Result<(Vec<UserRow>, i64), sqlx::Error> {
    let filter = "($1::text IS NULL OR role = $1) AND ($2::text IS NULL OR status = $2)";
    let rows = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE {filter} ORDER BY created_at, id OFFSET $3 LIMIT $4"
    ))
    .bind(role)
    .bind(status)
    .bind(offset)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar(&format!("SELECT count(*) FROM users WHERE {filter}"))
        .bind(role)
        .bind(status)
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}

/// One row of `sessions`.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SessionRow {
    /// The id.
    pub id: Uuid,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When it expires.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// When it was last refreshed.
    pub last_refresh_at: Option<chrono::DateTime<chrono::Utc>>,
    /// How many times it was refreshed.
    pub generation: i32,
    /// The client address.
    pub ip: String,
    /// The client's User-Agent.
    pub user_agent: String,
    /// When it ended.
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Why it ended.
    pub revoke_reason: Option<String>,
}

/// A user's sessions, newest first; only live ones unless `all`.
pub async fn sessions_of(
    pool: &sqlx::PgPool,
    user_id: Uuid,
    all: bool,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as!(
        SessionRow,
        "SELECT id, started_at, expires_at, last_refresh_at, generation, ip, user_agent, revoked_at, revoke_reason
           FROM sessions
          WHERE user_id = $1 AND ($2 OR (revoked_at IS NULL AND expires_at > now()))
          ORDER BY started_at DESC, id
          LIMIT 100",
        user_id,
        all,
    )
    .fetch_all(pool)
    .await
}

/// One row of `devices`.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeviceRow {
    /// The client-chosen device id.
    pub device_id: String,
    /// The name shown to the user.
    pub name: String,
    /// The device platform.
    pub platform: String,
    /// Whether it is the active device.
    pub active: bool,
    /// When it was registered.
    pub registered_at: chrono::DateTime<chrono::Utc>,
}

/// A user's devices that are not revoked, in registration order.
pub async fn devices_of(pool: &sqlx::PgPool, user_id: Uuid) -> Result<Vec<DeviceRow>, sqlx::Error> {
    sqlx::query_as!(
        DeviceRow,
        "SELECT device_id, name, platform, active, registered_at FROM devices
          WHERE user_id = $1 AND revoked_at IS NULL ORDER BY registered_at, device_id",
        user_id,
    )
    .fetch_all(pool)
    .await
}

/// How many active admins there are besides `except`, once the identity
/// projection has applied every event committed so far (at most `bound`
/// later; `None` if it has not caught up by then).
pub async fn other_active_admins(
    pool: &sqlx::PgPool,
    except: Uuid,
    bound: std::time::Duration,
) -> Result<Option<i64>, sqlx::Error> {
    let head = sqlx::query!(
        r#"SELECT transaction_id::text::bigint AS "tx!", global_position
             FROM events ORDER BY global_position DESC LIMIT 1"#,
    )
    .fetch_optional(pool)
    .await?;
    if let Some(head) = head {
        let at = lectern_domain::Position {
            transaction_id: head.tx,
            global_position: head.global_position,
        };
        if !crate::status::wait_for(pool, "identity", at, bound).await? {
            return Ok(None);
        }
    }
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM users
            WHERE role = 'admin' AND status = 'active' AND id <> $1"#,
        except,
    )
    .fetch_one(pool)
    .await
    .map(Some)
}
