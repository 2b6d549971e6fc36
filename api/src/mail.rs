//! The mail sender: delivers `outbound_messages` and clears their bodies.
//!
//! The only transport so far writes each message as an RFC 5322 file into a
//! directory (`LECTERN_MAIL_DIR`), like a development mail catcher; an SMTP
//! relay can take the same rows. Rows are claimed with `FOR UPDATE SKIP
//! LOCKED`, so several servers can run senders side by side.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lectern_domain::mask;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How often the outbox is checked.
pub const POLL: Duration = Duration::from_secs(1);

/// Deliver one batch into `dir`. Returns how many messages were delivered.
pub async fn deliver_batch(pool: &PgPool, dir: &Path) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query!(
        // The filter guarantees the body.
        r#"SELECT id, recipient, subject, body AS "body!" FROM outbound_messages
          WHERE sent_at IS NULL AND body IS NOT NULL AND (expires_at IS NULL OR expires_at > now())
          ORDER BY created_at
          LIMIT 20
          FOR UPDATE SKIP LOCKED"#,
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in &rows {
        let (id, recipient, subject, body) = (&row.id, &row.recipient, &row.subject, &row.body);
        let text = format!(
            "To: {recipient}\r\nFrom: Lectern <no-reply@lectern.invalid>\r\nSubject: {subject}\r\n\
             Message-ID: <{id}@lectern.invalid>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        );
        let path = dir.join(format!("{id}.eml"));
        crate::embedded::write_private(&path, &text)?;
        sqlx::query!(
            "UPDATE outbound_messages SET sent_at = now(), body = NULL, attempts = attempts + 1 WHERE id = $1",
            id,
        )
        .execute(&mut *tx)
        .await?;
        tracing::info!(message_id = %id, recipient = %mask::email(recipient), "mail delivered");
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// Deliver into `dir` until `cancel` fires.
pub async fn run(pool: PgPool, dir: PathBuf, cancel: CancellationToken) {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::error!(error = %e, dir = %dir.display(), "cannot create the mail directory; mail stays queued");
        return;
    }
    loop {
        match deliver_batch(&pool, &dir).await {
            Ok(20) => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "mail delivery failed; retrying"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}
