//! `audit_log`: one row per event of any kind, with who, when, from where, and
//! a payload summary in which emails and phones are masked and secrets
//! redacted. Auditors query it through `GET /api/v1/audit/events`.

use async_trait::async_trait;
use lectern_domain::mask;
use sqlx::PgConnection;

use crate::log::LogEvent;
use crate::projection::{Projection, ProjectionError, Tables};

/// Writes every event to `audit_log`.
pub struct AuditLog;

const TABLE: &str = "audit_log";

#[async_trait]
impl Projection for AuditLog {
    fn name(&self) -> &'static str {
        "audit_log"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[TABLE]
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        tables: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        let sql = format!(
            "INSERT INTO {} (transaction_id, global_position, event_id, recorded_at, actor_id, actor_role,
                             action, aggregate_type, aggregate_id, sequence, request_id, ip, user_agent, summary)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            tables.get(TABLE)
        );
        sqlx::query(&sql)
            .bind(event.position.transaction_id)
            .bind(event.position.global_position)
            .bind(event.event_id)
            .bind(event.recorded_at)
            .bind(event.meta("actor_id"))
            .bind(event.meta("actor_role"))
            .bind(&event.event_type)
            .bind(&event.aggregate_type)
            .bind(mask::text(&event.aggregate_id))
            .bind(event.sequence)
            .bind(event.meta("request_id"))
            .bind(event.meta("ip"))
            .bind(event.meta("user_agent"))
            .bind(summary(&event.payload))
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// The payload with secrets redacted and personal data masked; the enum
/// wrapper (`{"UserRegistered": {...}}`) is unwrapped, since `action` already
/// names the event.
pub fn summary(payload: &serde_json::Value) -> serde_json::Value {
    let inner = match payload.as_object() {
        Some(map) if map.len() == 1 => map.values().next().unwrap_or(payload),
        _ => payload,
    };
    mask::json(inner)
}
