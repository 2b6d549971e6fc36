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
        self.apply_all(conn, tables, &[event]).await
    }

    /// One multi-row insert for the whole run.
    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        tables: &Tables,
        events: &[&LogEvent],
    ) -> Result<(), ProjectionError> {
        if events.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO {} (transaction_id, global_position, event_id, recorded_at, actor_id, actor_role,
                             action, aggregate_type, aggregate_id, sequence, request_id, ip, user_agent, summary)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::uuid[], $4::timestamptz[], $5::text[],
                                  $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[],
                                  $12::text[], $13::text[], $14::jsonb[])",
            tables.get(TABLE)
        );
        let column = |f: fn(&LogEvent) -> &str| events.iter().map(|e| f(e)).collect::<Vec<_>>();
        sqlx::query(&sql)
            .bind(
                events
                    .iter()
                    .map(|e| e.position.transaction_id)
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.position.global_position)
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
            .bind(column(|e| e.meta("actor_id")))
            .bind(column(|e| e.meta("actor_role")))
            .bind(column(|e| &e.event_type))
            .bind(column(|e| &e.aggregate_type))
            .bind(
                events
                    .iter()
                    .map(|e| mask::text(&e.aggregate_id))
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.sequence).collect::<Vec<_>>())
            .bind(column(|e| e.meta("request_id")))
            .bind(column(|e| e.meta("ip")))
            .bind(column(|e| e.meta("user_agent")))
            .bind(
                events
                    .iter()
                    .map(|e| summary(&e.payload))
                    .collect::<Vec<_>>(),
            )
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

/// One audit-log entry.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    /// The event's place in the log, `<transaction>.<position>`.
    pub position: String,
    /// The event id.
    pub event_id: uuid::Uuid,
    /// When it was recorded.
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    /// Who acted.
    pub actor_id: String,
    /// The actor's role.
    pub actor_role: String,
    /// The event type.
    pub action: String,
    /// The aggregate type.
    pub aggregate_type: String,
    /// The aggregate instance.
    pub aggregate_id: String,
    /// The event's sequence number in its stream.
    pub sequence: i64,
    /// The request id.
    pub request_id: String,
    /// The client address.
    pub ip: String,
    /// The client's User-Agent.
    pub user_agent: String,
    /// The payload, masked and redacted.
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
}

/// Filters of an audit query; `None` matches everything.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    /// Who acted.
    pub actor_id: Option<String>,
    /// The aggregate type.
    pub aggregate_type: Option<String>,
    /// The aggregate instance.
    pub aggregate_id: Option<String>,
    /// The event type.
    pub event_type: Option<String>,
    /// Recorded at or after.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Recorded before.
    pub to: Option<chrono::DateTime<chrono::Utc>>,
}

/// Up to `limit` entries older than `before` (newest first), by keyset on the
/// log position, so the cost does not grow with depth.
pub async fn audit_page(
    pool: &sqlx::PgPool,
    filter: &AuditFilter,
    before: Option<lectern_domain::Position>,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let (tx, pos) = before.map_or((i64::MAX, i64::MAX), |p| {
        (p.transaction_id, p.global_position)
    });
    sqlx::query_as(
        "SELECT transaction_id::text || '.' || global_position::text AS position, event_id, recorded_at,
                actor_id, actor_role, action, aggregate_type, aggregate_id, sequence, request_id, ip,
                user_agent, summary
           FROM audit_log
          WHERE (transaction_id, global_position) < ($1, $2)
            AND ($3::text IS NULL OR actor_id = $3)
            AND ($4::text IS NULL OR aggregate_type = $4)
            AND ($5::text IS NULL OR aggregate_id = $5)
            AND ($6::text IS NULL OR action = $6)
            AND ($7::timestamptz IS NULL OR recorded_at >= $7)
            AND ($8::timestamptz IS NULL OR recorded_at < $8)
          ORDER BY transaction_id DESC, global_position DESC
          LIMIT $9",
    )
    .bind(tx)
    .bind(pos)
    .bind(&filter.actor_id)
    .bind(&filter.aggregate_type)
    .bind(&filter.aggregate_id)
    .bind(&filter.event_type)
    .bind(filter.from)
    .bind(filter.to)
    .bind(limit)
    .fetch_all(pool)
    .await
}
