//! Bulk lesson changes: each item on its own, or all in one append.

use chrono::Utc;
use lectern_domain::classroom::{Actor, Lesson, LessonCommand, LessonEvent};
use lectern_domain::EventMetadata;
use uuid::Uuid;

use super::*;
use crate::bus::Committed;
use crate::store::{Loaded, NewEvent, StreamAppend};

impl ClassroomService {
    /// Run bulk lesson items, each on its own.
    pub async fn bulk(
        &self,
        tutor_id: Uuid,
        by: Actor,
        items: Vec<BulkItem>,
        meta: &EventMetadata,
    ) -> Vec<BulkResult> {
        join_all(items.into_iter().enumerate().map(|(n, item)| async move {
            let create = matches!(item, BulkItem::Create(_));
            let (id, command) = item_command(item, meta.new_id(n as u64), tutor_id, by);
            let outcome = self.lesson(id, command, meta).await;
            BulkResult {
                id: (!create || outcome.is_ok()).then_some(id),
                outcome,
            }
        }))
        .await
    }

    /// Run bulk lesson items all together: every item is decided first, and
    /// then all their events are appended in one statement, or nothing is
    /// written. `Err` carries each item's refusal (or `None` for an item that
    /// was fine but not written).
    pub async fn bulk_atomic(
        &self,
        tutor_id: Uuid,
        by: Actor,
        items: Vec<BulkItem>,
        meta: &EventMetadata,
    ) -> Result<Vec<BulkResult>, Vec<Option<ClassroomError>>> {
        // Decide each item on the state its predecessors on the same lesson
        // left, without writing.
        let mut states: Vec<Pending> = Vec::new();
        let mut placed = Vec::with_capacity(items.len());
        let mut errors: Vec<Option<ClassroomError>> = Vec::with_capacity(items.len());
        for (n, item) in items.into_iter().enumerate() {
            let (id, command) = item_command(item, meta.new_id(n as u64), tutor_id, by);
            let key = id.to_string();
            let slot = match states.iter().position(|s| s.0 == key) {
                Some(i) => i,
                None => {
                    let loaded = if matches!(command, LessonCommand::Schedule { .. }) {
                        Ok(Loaded::default())
                    } else {
                        self.lessons.store().load(&key).await
                    };
                    match loaded {
                        Ok(l) => states.push((key, l.version, l.aggregate, Vec::new())),
                        Err(e) => {
                            errors.push(Some(e.into()));
                            placed.push((id, 0, 0, 0));
                            continue;
                        }
                    }
                    states.len() - 1
                }
            };
            let name = lectern_domain::CommandName::name(&command);
            let state = &mut states[slot];
            match state.2.decide(command) {
                Ok(events) => {
                    let start = state.3.len();
                    let count = events.len();
                    for e in events {
                        cqrs_es::Aggregate::apply(&mut state.2, e.clone());
                        state.3.push((e, meta.clone().for_command(name)));
                    }
                    placed.push((id, slot, start, count));
                    errors.push(None);
                }
                Err(e) => {
                    placed.push((id, slot, 0, 0));
                    errors.push(Some(ClassroomError::Lesson(e)));
                }
            }
        }
        if errors.iter().any(Option::is_some) {
            return Err(errors);
        }
        let streams: Vec<_> = states
            .iter()
            .map(|(key, version, _, events)| StreamAppend {
                aggregate_id: key,
                expected_version: *version,
                events: events
                    .iter()
                    .map(|(payload, metadata)| NewEvent { payload, metadata })
                    .collect(),
            })
            .collect();
        let recorded = match self.lessons.store().append_streams(&streams).await {
            Ok(r) => r,
            Err(e) => {
                let n = placed.len();
                let mut errs: Vec<Option<ClassroomError>> = (0..n).map(|_| None).collect();
                if let Some(first) = errs.first_mut() {
                    *first = Some(e.into());
                }
                return Err(errs);
            }
        };
        Ok(placed
            .into_iter()
            .map(|(id, slot, start, count)| {
                let events = recorded[slot][start..start + count].to_vec();
                BulkResult {
                    id: Some(id),
                    outcome: Ok(Committed {
                        aggregate_id: id.to_string(),
                        version: events.last().map_or(0, |e| e.sequence),
                        position: events.last().map(|e| e.position),
                        events,
                    }),
                }
            })
            .collect())
    }
}

/// A lesson in a bulk request: its id, loaded version, state so far, and
/// the events decided for it.
type Pending = (String, u64, Lesson, Vec<(LessonEvent, EventMetadata)>);

/// The lesson and command of a bulk item; a new lesson gets `new_id`.
fn item_command(item: BulkItem, new_id: Uuid, tutor_id: Uuid, by: Actor) -> (Uuid, LessonCommand) {
    match item {
        BulkItem::Create(details) => (
            new_id,
            LessonCommand::Schedule {
                tutor_id,
                details,
                now: Utc::now(),
            },
        ),
        BulkItem::Update(id, patch) => (
            id,
            LessonCommand::Update {
                by,
                patch,
                now: Utc::now(),
            },
        ),
        BulkItem::Cancel(id, reason) => (id, LessonCommand::Cancel { by, reason }),
    }
}
