//! `messages` and `deliveries`: the projection and its queries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lectern_domain::classroom::inbox::AckStatus;
use lectern_domain::classroom::{ChannelEvent, InboxEvent};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{decode, uuid_of};
use crate::log::LogEvent;
use crate::projection::{Interest, Projection, ProjectionError, Tables};

/// Keeps `messages` and `deliveries`.
pub struct ChatProjection;

const MESSAGES: &str = "messages";
const DELIVERIES: &str = "deliveries";

#[async_trait]
impl Projection for ChatProjection {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[MESSAGES, DELIVERIES]
    }

    fn interest(&self) -> Interest {
        Interest::types(&["Channel", "Inbox"])
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        t: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        let (messages, deliveries) = (t.get(MESSAGES), t.get(DELIVERIES));
        match event.aggregate_type.as_str() {
            "Channel" => {
                let ChannelEvent::MessageSent {
                    message_id,
                    seq,
                    sender_id,
                    client_message_id,
                    text,
                    sent_at,
                    recipients,
                } = decode(event)?
                else {
                    return Ok(());
                };
                let lesson = uuid_of(event)?;
                let seq = i64::try_from(seq).unwrap_or(i64::MAX);
                sqlx::query(&format!(
                    "WITH d AS (
                        INSERT INTO {deliveries} (recipient_id, lesson_id, seq, status, sent_at, updated_at)
                        SELECT r, $1, $2, 'sent', $7, $7 FROM unnest($8::uuid[]) AS r)
                     INSERT INTO {messages} (lesson_id, seq, message_id, sender_id, client_message_id, text, sent_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(lesson)
                .bind(seq)
                .bind(message_id)
                .bind(sender_id)
                .bind(client_message_id)
                .bind(text.as_str())
                .bind(sent_at)
                .bind(recipients)
                .execute(&mut *conn)
                .await?;
            }
            "Inbox" => {
                let (sql, lesson, recipient, seq) = match decode(event)? {
                    InboxEvent::DeliveriesAcknowledged {
                        lesson_id,
                        recipient_id,
                        up_to_seq,
                        status,
                    } => {
                        let from = match status {
                            AckStatus::Delivered => "('sent')",
                            AckStatus::Read => "('sent', 'delivered')",
                        };
                        (
                            format!(
                                "UPDATE {deliveries} SET status = '{}', updated_at = $4
                                  WHERE recipient_id = $1 AND lesson_id = $2 AND seq <= $3 AND status IN {from}",
                                status.as_str()
                            ),
                            lesson_id,
                            recipient_id,
                            up_to_seq,
                        )
                    }
                    InboxEvent::DeliveryExpired {
                        lesson_id,
                        recipient_id,
                        seq,
                    } => (
                        format!(
                            "UPDATE {deliveries} SET status = 'expired', updated_at = $4
                              WHERE recipient_id = $1 AND lesson_id = $2 AND seq = $3 AND status = 'sent'"
                        ),
                        lesson_id,
                        recipient_id,
                        seq,
                    ),
                };
                sqlx::query(&sql)
                    .bind(recipient)
                    .bind(lesson)
                    .bind(i64::try_from(seq).unwrap_or(i64::MAX))
                    .bind(event.recorded_at)
                    .execute(&mut *conn)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A chat message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageRow {
    /// The lesson.
    pub lesson_id: Uuid,
    /// The message's sequence number in its channel.
    pub seq: i64,
    /// The message.
    pub message_id: Uuid,
    /// Who sent it.
    pub sender_id: Uuid,
    /// The client's id for the message.
    pub client_message_id: String,
    /// The message text.
    pub text: String,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

/// At most `limit` messages of a lesson after `after_seq`, in sequence
/// order.
pub async fn messages(
    pool: &PgPool,
    lesson: Uuid,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as!(
        MessageRow,
        "SELECT lesson_id, seq, message_id, sender_id, client_message_id, text, sent_at
           FROM messages WHERE lesson_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        lesson,
        after_seq,
        i64::from(limit),
    )
    .fetch_all(pool)
    .await
}

/// A delivery still waiting for its recipient, with its message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PendingRow {
    /// The message.
    #[serde(flatten)]
    pub message: MessageRow,
    /// Always `sent`: not yet acknowledged.
    pub status: String,
}

/// Where a pending-deliveries page continues: `(sent_at, lesson_id, seq)`.
pub type PendingKey = (DateTime<Utc>, Uuid, i64);

/// `recipient`'s unacknowledged deliveries in the order they were sent.
pub async fn pending(
    pool: &PgPool,
    recipient: Uuid,
    after: Option<PendingKey>,
    limit: u32,
) -> Result<Vec<PendingRow>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT m.lesson_id, m.seq, m.message_id, m.sender_id, m.client_message_id, m.text, m.sent_at, d.status
           FROM deliveries d JOIN messages m ON m.lesson_id = d.lesson_id AND m.seq = d.seq
          WHERE d.recipient_id = $1 AND d.status = 'sent'
            AND ($2::timestamptz IS NULL OR (d.sent_at, d.lesson_id, d.seq) > ($2, $3::uuid, $4::bigint))
          ORDER BY d.sent_at, d.lesson_id, d.seq
          LIMIT $5",
        recipient,
        after.map(|a| a.0),
        after.map(|a| a.1),
        after.map(|a| a.2),
        i64::from(limit),
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PendingRow {
            message: MessageRow {
                lesson_id: r.lesson_id,
                seq: r.seq,
                message_id: r.message_id,
                sender_id: r.sender_id,
                client_message_id: r.client_message_id,
                text: r.text,
                sent_at: r.sent_at,
            },
            status: r.status,
        })
        .collect())
}

/// A recipient's statuses of a lesson's deliveries: `(seq, status)`.
pub async fn delivery_statuses(
    pool: &PgPool,
    lesson: Uuid,
    recipient: Uuid,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT seq, status FROM deliveries WHERE lesson_id = $1 AND recipient_id = $2 ORDER BY seq",
        lesson,
        recipient,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.seq, r.status)).collect())
}

/// Deliveries sent before `cutoff` and still unacknowledged, grouped by
/// `(lesson, recipient)` with their sequence numbers ascending.
pub async fn expirable(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid, Vec<i64>)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT lesson_id, recipient_id, array_agg(seq ORDER BY seq) AS "seqs!"
             FROM (SELECT lesson_id, recipient_id, seq FROM deliveries
                    WHERE status = 'sent' AND sent_at < $1 ORDER BY sent_at LIMIT $2) d
            GROUP BY lesson_id, recipient_id"#,
        cutoff,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.lesson_id, r.recipient_id, r.seqs))
        .collect())
}
