//! Aggregates and helpers shared by the tests.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// An aggregate whose `apply` is not idempotent: it counts events and keeps
/// every tag it saw, so applying an event twice shows.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub events: u64,
    pub tags: Vec<String>,
}

/// Emit `count` events tagged `tag`, or refuse when `count` is 0. A tag
/// starting with `half` emits its events and then refuses: the half-changed
/// state such a handler leaves must never be kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Add {
    pub tag: String,
    pub count: u32,
}

impl lectern_domain::CommandName for Add {
    fn name(&self) -> &'static str {
        "Add"
    }
}

/// One counted event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TallyEvent {
    Counted { tag: String, index: u32 },
}

impl DomainEvent for TallyEvent {
    fn event_type(&self) -> String {
        "Counted".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

/// The refusal of an empty Add.
#[derive(Debug, thiserror::Error)]
#[error("nothing to count")]
pub struct NothingToCount;

impl Aggregate for Tally {
    const TYPE: &'static str = "Tally";
    type Command = Add;
    type Event = TallyEvent;
    type Error = NothingToCount;
    type Services = ();

    async fn handle(
        &mut self,
        command: Add,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), NothingToCount> {
        if command.count == 0 {
            return Err(NothingToCount);
        }
        for index in 0..command.count {
            sink.write(
                TallyEvent::Counted {
                    tag: command.tag.clone(),
                    index,
                },
                self,
            )
            .await;
        }
        if command.tag.starts_with("half") {
            return Err(NothingToCount);
        }
        Ok(())
    }

    fn apply(&mut self, event: TallyEvent) {
        let TallyEvent::Counted { tag, .. } = event;
        self.events += 1;
        self.tags.push(tag);
    }
}

/// The sequence numbers stored for one aggregate, in order.
pub async fn stored_sequences(pool: &sqlx::PgPool, aggregate_type: &str, id: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT sequence FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence")
        .bind(aggregate_type)
        .bind(id)
        .fetch_all(pool)
        .await
        .expect("read sequences")
}
