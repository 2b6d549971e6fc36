//! Rebuilding a projection: replay the log from position zero into shadow
//! tables while the API keeps serving the live ones, then swap them in one
//! transaction.

use lectern_domain::Position;
use sqlx::{Connection, PgConnection};

use super::batch::{apply_batch, RunError};
use super::Runner;
use crate::follow::Follower;
use crate::projection::{Tables, SHADOW_SUFFIX};

impl Runner {
    /// Rebuild from position zero into shadow tables, then swap them in.
    /// `Ok(None)` when cancelled part-way (the live tables are untouched).
    pub(super) async fn rebuild(
        &mut self,
        conn: &mut PgConnection,
    ) -> Result<Option<Position>, RunError> {
        let name = self.projection.name();
        tracing::info!(projection = name, "rebuild started");
        sqlx::query("UPDATE projection_checkpoints SET status = 'rebuilding', updated_at = now() WHERE name = $1")
            .bind(name)
            .execute(&mut *conn)
            .await?;
        let tables = self.projection.tables();
        for t in tables {
            for sql in [
                format!("DROP TABLE IF EXISTS {t}{SHADOW_SUFFIX}"),
                format!("CREATE TABLE {t}{SHADOW_SUFFIX} (LIKE {t} INCLUDING ALL)"),
            ] {
                sqlx::query(&sql).execute(&mut *conn).await?;
            }
        }
        let shadow = Tables::shadow(tables);
        let mut log = Follower::new(
            Position::ZERO,
            self.projection.interest(),
            &self.wakeup,
            self.config.follow(),
        );
        let mut applied: i64 = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Ok(None);
            }
            let batch = apply_batch(conn, &*self.projection, &shadow, &mut log, false).await?;
            if batch.scanned == 0 {
                break;
            }
            applied += batch.applied as i64;
        }
        let position = log.position();
        let mut tx = conn.begin().await?;
        for t in tables {
            let (schema, table) = t.rsplit_once('.').map_or(("", *t), |(s, t)| (s, t));
            let qualify = |n: &str| {
                if schema.is_empty() {
                    n.to_owned()
                } else {
                    format!("{schema}.{n}")
                }
            };
            for sql in [
                format!("ALTER TABLE {t} RENAME TO {table}__old"),
                format!(
                    "ALTER TABLE {} RENAME TO {table}",
                    qualify(&format!("{table}{SHADOW_SUFFIX}"))
                ),
                format!("DROP TABLE {}", qualify(&format!("{table}__old"))),
            ] {
                sqlx::query(&sql).execute(&mut *tx).await?;
            }
        }
        sqlx::query!(
            "UPDATE projection_checkpoints
                SET last_tx = $2::text::xid8, last_position = $3, events_applied = $4, status = 'running',
                    rebuild_requested_at = NULL, rebuilt_at = now(), last_error = NULL, failing_position = NULL,
                    updated_at = now()
              WHERE name = $1",
            name,
            position.transaction_id.to_string(),
            position.global_position,
            applied,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(
            projection = name,
            events = applied,
            "rebuild finished and swapped in"
        );
        Ok(Some(position))
    }
}
