//! The identity read models: `users`, `sessions` and `devices`, from the User
//! streams.

use async_trait::async_trait;
use lectern_domain::identity::UserEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::log::LogEvent;
use crate::projection::{Projection, ProjectionError, Tables};

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
                exec(conn, &format!("UPDATE {users} SET display_name = $2 WHERE id = $1"), user_id, &display_name).await?;
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
                sqlx::query(&format!("UPDATE {users} SET locked_until = $2 WHERE id = $1"))
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
                sqlx::query(&format!("UPDATE {users} SET must_change_password = true WHERE id = $1"))
                    .bind(user_id)
                    .execute(&mut *conn)
                    .await?;
            }
            UserEvent::RoleChanged { to, .. } => {
                exec(conn, &format!("UPDATE {users} SET role = $2 WHERE id = $1"), user_id, to.as_str()).await?;
            }
            UserEvent::UserDeactivated {} => {
                exec(conn, &format!("UPDATE {users} SET status = $2 WHERE id = $1"), user_id, "deactivated").await?;
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

async fn exec(conn: &mut PgConnection, sql: &str, id: Uuid, value: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).bind(id).bind(value).execute(conn).await?;
    Ok(())
}
