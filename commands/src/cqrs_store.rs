//! `cqrs_es::EventStore` over [`PgEventStore`], so a stock `CqrsFramework`
//! can run on Lectern's store and get correct snapshots.

use std::collections::HashMap;

use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use lectern_domain::EventMetadata;

use crate::error::StoreError;
use crate::store::{Loaded, NewEvent, PgEventStore, RecordedEvent};

/// The loaded state a `CqrsFramework` hands back to [`PgEventStore::commit`].
pub struct PgAggregateContext<A> {
    aggregate_id: String,
    loaded: Loaded<A>,
}

impl<A: Aggregate> AggregateContext<A> for PgAggregateContext<A> {
    fn aggregate(&mut self) -> &mut A {
        &mut self.loaded.aggregate
    }
}

fn to_aggregate_error<E: std::error::Error>(e: StoreError) -> AggregateError<E> {
    match e {
        StoreError::Conflict => AggregateError::AggregateConflict,
        StoreError::Database(e) => AggregateError::DatabaseConnectionError(Box::new(e)),
        StoreError::Serialization(e) => AggregateError::DeserializationError(Box::new(e)),
        StoreError::WorkerGone => AggregateError::UnexpectedError(Box::new(StoreError::WorkerGone)),
    }
}

/// The envelope for a recorded event. Its metadata is the stored metadata plus
/// `event_id`, `global_position` and `transaction_id`, which only exist once
/// the event is stored (`EventEnvelope` has no field for them).
fn envelope<A: Aggregate>(e: RecordedEvent<A::Event>) -> EventEnvelope<A> {
    let mut metadata = e.metadata.to_map();
    metadata.insert("event_id".into(), e.event_id.to_string());
    metadata.insert(
        "global_position".into(),
        e.position.global_position.to_string(),
    );
    metadata.insert(
        "transaction_id".into(),
        e.position.transaction_id.to_string(),
    );
    EventEnvelope {
        aggregate_id: e.aggregate_id,
        sequence: usize::try_from(e.sequence).unwrap_or(usize::MAX),
        payload: e.payload,
        metadata,
    }
}

impl<A> EventStore<A> for PgEventStore<A>
where
    A: Aggregate,
{
    type AC = PgAggregateContext<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let events = PgEventStore::load_events(self, aggregate_id)
            .await
            .map_err(to_aggregate_error)?;
        Ok(events.into_iter().map(envelope).collect())
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<A::Error>> {
        let loaded = self.load(aggregate_id).await.map_err(to_aggregate_error)?;
        Ok(PgAggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            loaded,
        })
    }

    /// `context`'s aggregate already has `events` applied: cqrs-es 0.5's
    /// `EventSink::write` applies each event as the command handler emits it.
    /// So the snapshot stores that state as it is.
    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let metadata = EventMetadata::from_map(&metadata);
        let new: Vec<_> = events
            .iter()
            .map(|payload| NewEvent {
                payload,
                metadata: &metadata,
            })
            .collect();
        let recorded = self
            .append(
                &context.aggregate_id,
                context.loaded.version,
                &new,
                Some(&context.loaded.aggregate),
            )
            .await
            .map_err(to_aggregate_error)?;
        Ok(recorded.into_iter().map(envelope).collect())
    }
}
