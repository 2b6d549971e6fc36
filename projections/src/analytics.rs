//! `analytics.daily_event_counts`: events per day, aggregate type and event type.

use async_trait::async_trait;
use sqlx::PgConnection;

use crate::log::LogEvent;
use crate::projection::{Projection, ProjectionError, Tables};

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

    async fn apply(
        &self,
        conn: &mut PgConnection,
        tables: &Tables,
        event: &LogEvent,
    ) -> Result<(), ProjectionError> {
        let sql = format!(
            "INSERT INTO {} AS t (day, aggregate_type, event_type, events)
             VALUES (($1 AT TIME ZONE 'UTC')::date, $2, $3, 1)
             ON CONFLICT (day, aggregate_type, event_type) DO UPDATE SET events = t.events + 1",
            tables.get(TABLE)
        );
        sqlx::query(&sql)
            .bind(event.recorded_at)
            .bind(&event.aggregate_type)
            .bind(&event.event_type)
            .execute(conn)
            .await?;
        Ok(())
    }
}
