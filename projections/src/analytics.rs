//! `analytics.daily_event_counts`: events per day, aggregate type and event type.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::NaiveDate;
use sqlx::PgConnection;

use crate::log::LogEvent;
use crate::projection::{Interest, Projection, ProjectionError, Tables};

/// Counts every event by UTC day, aggregate type and event type.
pub struct DailyEventCounts;

const TABLE: &str = "analytics.daily_event_counts";

#[async_trait]
impl Projection for DailyEventCounts {
    fn name(&self) -> &'static str {
        "analytics_daily_event_counts"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[TABLE]
    }

    fn interest(&self) -> Interest {
        // Counting needs neither payloads nor metadata.
        Interest {
            aggregate_types: None,
            body: false,
        }
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        tables: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_all(conn, tables, &[event]).await
    }

    /// Counts the run in memory, then one upsert per (day, type, event type).
    async fn apply_all(
        &self,
        conn: &mut PgConnection,
        tables: &Tables,
        events: &[&LogEvent],
    ) -> Result<(), ProjectionError> {
        let mut counts: BTreeMap<(NaiveDate, &str, &str), i64> = BTreeMap::new();
        for e in events {
            *counts
                .entry((
                    e.recorded_at.date_naive(),
                    e.aggregate_type.as_str(),
                    e.event_type.as_str(),
                ))
                .or_default() += 1;
        }
        if counts.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO {} AS t (day, aggregate_type, event_type, events)
             SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::bigint[])
             ON CONFLICT (day, aggregate_type, event_type) DO UPDATE SET events = t.events + EXCLUDED.events",
            tables.get(TABLE)
        );
        sqlx::query(&sql)
            .bind(counts.keys().map(|k| k.0).collect::<Vec<_>>())
            .bind(counts.keys().map(|k| k.1).collect::<Vec<_>>())
            .bind(counts.keys().map(|k| k.2).collect::<Vec<_>>())
            .bind(counts.values().copied().collect::<Vec<_>>())
            .execute(conn)
            .await?;
        Ok(())
    }
}
