//! The classroom service: lessons, boards, chat and delivery marks.
//!
//! The Lesson stream decides who takes part. Its board and channel keep a
//! copy of the roster (a command on each, which only a newer lesson version
//! changes), made by the [`roster::RosterSync`] process manager after the
//! lesson command has answered. Until that copy has caught up, the first
//! refused drawing, message or read re-copies it and tries once more, so a
//! student who has just enrolled can draw and chat at once.

pub mod roster;

use chrono::Utc;
use futures::future::join_all;
use lectern_domain::classroom::inbox::{inbox_id, AckStatus};
use lectern_domain::classroom::lesson::{LessonDetails, LessonPatch};
use lectern_domain::classroom::values::MessageText;
use lectern_domain::classroom::{
    board::OpRequest, Actor, Board, BoardCommand, BoardError, BoardEvent, Channel, ChannelCommand,
    ChannelError, ChannelEvent, ConflictPolicy, Inbox, InboxCommand, InboxError, Lesson,
    LessonCommand, LessonError, LessonEvent, OpOutcome,
};
use lectern_domain::{EventMetadata, Position};
use sqlx::PgPool;
use uuid::Uuid;

use crate::bus::{CommandBus, Committed, DispatchConfig};
use crate::error::{CommandError, StoreError};
use crate::store::{Loaded, NewEvent, PgEventStore, StreamAppend};

/// Boards snapshot this often: a long board loads from its snapshot. The
/// snapshot (clocks, element stamps, each client's recent answers and undo
/// stack) runs to hundreds of KB, so it is written in the background rather
/// than in the append that the drawing clients wait for.
pub const BOARD_SNAPSHOT_EVERY: u64 = 1000;

/// Why a classroom command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClassroomError {
    #[error(transparent)]
    Lesson(LessonError),
    #[error(transparent)]
    Board(BoardError),
    #[error(transparent)]
    Channel(ChannelError),
    #[error("up_to_seq {0} is past the channel's last message {1}")]
    AckBeyondLast(u64, u64),
    #[error("the resource was changed concurrently; retry")]
    Conflict,
    #[error(transparent)]
    Store(StoreError),
}

macro_rules! from_command_error {
    ($e:ty, $variant:ident) => {
        impl From<CommandError<$e>> for ClassroomError {
            fn from(e: CommandError<$e>) -> Self {
                match e {
                    CommandError::Rejected(r) => Self::$variant(r),
                    CommandError::Conflict => Self::Conflict,
                    CommandError::Store(s) => Self::Store(s),
                }
            }
        }
    };
}
from_command_error!(LessonError, Lesson);
from_command_error!(BoardError, Board);
from_command_error!(ChannelError, Channel);

impl From<CommandError<InboxError>> for ClassroomError {
    fn from(e: CommandError<InboxError>) -> Self {
        match e {
            CommandError::Rejected(never) => match never {},
            CommandError::Conflict => Self::Conflict,
            CommandError::Store(s) => Self::Store(s),
        }
    }
}

impl From<StoreError> for ClassroomError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Self::Conflict,
            other => Self::Store(other),
        }
    }
}

/// A message as sending it answered.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message_id: Uuid,
    pub seq: u64,
    /// The message was sent before with this `client_message_id`.
    pub duplicate: bool,
    pub version: u64,
    pub position: Option<Position>,
}

/// One item of a bulk request, checked.
#[derive(Debug, Clone)]
pub enum BulkItem {
    Create(LessonDetails),
    Update(Uuid, LessonPatch),
    Cancel(Uuid, Option<String>),
}

/// The outcome of one bulk item.
#[derive(Debug)]
pub struct BulkResult {
    pub id: Option<Uuid>,
    pub outcome: Result<Committed<LessonEvent>, ClassroomError>,
}

#[derive(Clone)]
pub struct ClassroomService {
    pub lessons: CommandBus<Lesson>,
    pub boards: CommandBus<Board>,
    pub channels: CommandBus<Channel>,
    pub inboxes: CommandBus<Inbox>,
}

impl ClassroomService {
    pub fn new(pool: &PgPool) -> Self {
        Self {
            lessons: CommandBus::new(
                PgEventStore::new(pool.clone()),
                (),
                DispatchConfig::default(),
            ),
            boards: CommandBus::new(
                PgEventStore::new(pool.clone())
                    .with_snapshots(BOARD_SNAPSHOT_EVERY)
                    .with_background_snapshots(),
                (),
                DispatchConfig::default(),
            ),
            channels: CommandBus::new(
                PgEventStore::new(pool.clone()).with_snapshots(500),
                (),
                DispatchConfig::default(),
            ),
            inboxes: CommandBus::new(
                PgEventStore::new(pool.clone()),
                (),
                DispatchConfig::default(),
            ),
        }
    }

    /// Schedule a new lesson taught by `tutor_id`.
    pub async fn schedule(
        &self,
        tutor_id: Uuid,
        details: LessonDetails,
        meta: &EventMetadata,
    ) -> Result<(Uuid, Committed<LessonEvent>), ClassroomError> {
        let id = Uuid::new_v4();
        let committed = self
            .lesson(
                id,
                LessonCommand::Schedule {
                    tutor_id,
                    details,
                    now: Utc::now(),
                },
                meta,
            )
            .await?;
        Ok((id, committed))
    }

    /// Run a lesson command. Its answer depends on its own append only: the
    /// roster copy follows through [`roster::RosterSync`].
    pub async fn lesson(
        &self,
        id: Uuid,
        command: LessonCommand,
        meta: &EventMetadata,
    ) -> Result<Committed<LessonEvent>, ClassroomError> {
        Ok(self
            .lessons
            .execute(&id.to_string(), command, meta.clone())
            .await?)
    }

    /// Copy lesson `id`'s current roster to its board and channel. Running it
    /// again changes nothing until the lesson has a newer version.
    pub async fn sync(&self, id: Uuid, meta: &EventMetadata) -> Result<(), ClassroomError> {
        let lesson = self.lessons.store().load(&id.to_string()).await?;
        if lesson.version == 0 {
            return Err(ClassroomError::Lesson(LessonError::NotFound));
        }
        let roster = lesson.aggregate.roster(lesson.version);
        let meta = meta.clone();
        let key = id.to_string();
        let (board, channel) = tokio::join!(
            self.boards.execute(
                &key,
                BoardCommand::SyncRoster {
                    roster: roster.clone()
                },
                meta.clone()
            ),
            self.channels
                .execute(&key, ChannelCommand::SyncRoster { roster }, meta),
        );
        board?;
        channel?;
        Ok(())
    }

    /// [`Self::sync`] after a refusal that a stale roster copy may explain;
    /// `missing` is the error when the lesson does not exist.
    async fn resync(
        &self,
        id: Uuid,
        meta: &EventMetadata,
        missing: ClassroomError,
    ) -> Result<(), ClassroomError> {
        match self.sync(id, meta).await {
            Err(ClassroomError::Lesson(LessonError::NotFound)) => Err(missing),
            other => other,
        }
    }

    /// Apply whiteboard operations; one answer per operation, in order.
    pub async fn draw(
        &self,
        board_id: Uuid,
        by: Actor,
        ops: Vec<OpRequest>,
        meta: &EventMetadata,
    ) -> Result<(Vec<OpOutcome>, Committed<BoardEvent>), ClassroomError> {
        let key = board_id.to_string();
        let meta = meta.clone();
        let run = || {
            self.boards.execute(
                &key,
                BoardCommand::Apply {
                    by,
                    ops: ops.clone(),
                },
                meta.clone(),
            )
        };
        let committed = match run().await {
            Err(CommandError::Rejected(_)) => {
                // The roster copy may be behind the lesson: refresh, retry once.
                self.resync(board_id, &meta, ClassroomError::Board(BoardError::NotFound))
                    .await?;
                run().await?
            }
            other => other?,
        };
        let outcomes = committed
            .events
            .iter()
            .filter_map(|e| e.payload.outcome().map(|(_, _, o)| o))
            .collect();
        Ok((outcomes, committed))
    }

    /// Set a board's conflict policy.
    pub async fn set_policy(
        &self,
        board_id: Uuid,
        by: Actor,
        policy: ConflictPolicy,
        meta: &EventMetadata,
    ) -> Result<Committed<BoardEvent>, ClassroomError> {
        let key = board_id.to_string();
        let command = || BoardCommand::SetPolicy { by, policy };
        let meta = meta.clone();
        match self.boards.execute(&key, command(), meta.clone()).await {
            Err(CommandError::Rejected(BoardError::NotFound)) => {
                self.sync(board_id, &meta).await?;
                Ok(self.boards.execute(&key, command(), meta).await?)
            }
            other => Ok(other?),
        }
    }

    /// Send a chat message to lesson `lesson_id`.
    pub async fn send(
        &self,
        lesson_id: Uuid,
        by: Actor,
        client_message_id: String,
        text: MessageText,
        meta: &EventMetadata,
    ) -> Result<Sent, ClassroomError> {
        let key = lesson_id.to_string();
        let message_id = Uuid::new_v4();
        let meta = meta.clone();
        // Everyone enrolled by now gets a delivery, whether or not the roster
        // copy has caught up: the channel refuses a copy older than this.
        let lesson_version = self.lessons.store().version(&key).await?;
        let run = || {
            self.channels.execute(
                &key,
                ChannelCommand::Send {
                    by,
                    message_id,
                    client_message_id: client_message_id.clone(),
                    text: text.clone(),
                    sent_at: Utc::now(),
                    lesson_version,
                },
                meta.clone(),
            )
        };
        let mut result = run().await;
        if let Err(CommandError::Rejected(
            ChannelError::NotFound
            | ChannelError::NotParticipant
            | ChannelError::Closed
            | ChannelError::RosterBehind,
        )) = result
        {
            self.resync(
                lesson_id,
                &meta,
                ClassroomError::Channel(ChannelError::NotFound),
            )
            .await?;
            result = run().await;
        }
        match result {
            Ok(committed) => {
                let seq = committed
                    .events
                    .iter()
                    .find_map(|e| match &e.payload {
                        ChannelEvent::MessageSent { seq, .. } => Some(*seq),
                        ChannelEvent::RosterSynced { .. } => None,
                    })
                    .unwrap_or_default();
                Ok(Sent {
                    message_id,
                    seq,
                    duplicate: false,
                    version: committed.version,
                    position: committed.position,
                })
            }
            Err(CommandError::Rejected(ChannelError::Duplicate { message_id, seq })) => Ok(Sent {
                message_id,
                seq,
                duplicate: true,
                version: 0,
                position: None,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The channel of lesson `lesson_id`, checked for `by` taking part.
    pub async fn channel_for(&self, lesson_id: Uuid, by: Actor) -> Result<Channel, ClassroomError> {
        let channel = self.channels.store().load(&lesson_id.to_string()).await?;
        match channel.aggregate.may_take_part(by) {
            Ok(()) => Ok(channel.aggregate),
            // The roster copy may be behind the lesson: refresh, check again.
            Err(ChannelError::NotFound | ChannelError::NotParticipant)
                if self.lesson_exists(lesson_id).await? =>
            {
                self.sync(lesson_id, &EventMetadata::system(&lesson_id.to_string()))
                    .await?;
                let channel = self.channels.store().load(&lesson_id.to_string()).await?;
                channel
                    .aggregate
                    .may_take_part(by)
                    .map_err(ClassroomError::Channel)?;
                Ok(channel.aggregate)
            }
            Err(e) => Err(ClassroomError::Channel(e)),
        }
    }

    async fn lesson_exists(&self, id: Uuid) -> Result<bool, ClassroomError> {
        Ok(self.lessons.store().load(&id.to_string()).await?.version > 0)
    }

    /// `Lesson(NotFound)` unless lesson `id` was ever scheduled: for readers
    /// who may see every lesson, so that an unknown id is not an empty page.
    pub async fn require_lesson(&self, id: Uuid) -> Result<(), ClassroomError> {
        if self.lesson_exists(id).await? {
            Ok(())
        } else {
            Err(ClassroomError::Lesson(LessonError::NotFound))
        }
    }

    /// Move `by`'s delivery marks in lesson `lesson_id` forward. `None` when
    /// nothing moved (the acknowledgement was not ahead of the marks).
    pub async fn acknowledge(
        &self,
        lesson_id: Uuid,
        by: Actor,
        up_to_seq: u64,
        status: AckStatus,
        meta: &EventMetadata,
    ) -> Result<Committed<lectern_domain::classroom::InboxEvent>, ClassroomError> {
        let channel = self.channel_for(lesson_id, by).await?;
        if up_to_seq > channel.seq {
            return Err(ClassroomError::AckBeyondLast(up_to_seq, channel.seq));
        }
        let command = InboxCommand::Acknowledge {
            lesson_id,
            recipient_id: by.user_id,
            up_to_seq,
            status,
        };
        self.inboxes
            .execute(&inbox_id(lesson_id, by.user_id), command, meta.clone())
            .await
            .map_err(ClassroomError::from)
    }

    /// Expire `recipient`'s deliveries `seqs` in lesson `lesson_id`.
    pub async fn expire(
        &self,
        lesson_id: Uuid,
        recipient: Uuid,
        seqs: Vec<u64>,
    ) -> Result<usize, ClassroomError> {
        let command = InboxCommand::Expire {
            lesson_id,
            recipient_id: recipient,
            seqs,
        };
        let committed = self
            .inboxes
            .execute(
                &inbox_id(lesson_id, recipient),
                command,
                EventMetadata::system(&lesson_id.to_string()),
            )
            .await
            .map_err(ClassroomError::from)?;
        Ok(committed.events.len())
    }

    /// Run bulk lesson items, each on its own.
    pub async fn bulk(
        &self,
        tutor_id: Uuid,
        by: Actor,
        items: Vec<BulkItem>,
        meta: &EventMetadata,
    ) -> Vec<BulkResult> {
        join_all(items.into_iter().map(|item| async move {
            let create = matches!(item, BulkItem::Create(_));
            let (id, command) = item_command(item, tutor_id, by);
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
        for item in items {
            let (id, command) = item_command(item, tutor_id, by);
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

/// The lesson and command of a bulk item.
fn item_command(item: BulkItem, tutor_id: Uuid, by: Actor) -> (Uuid, LessonCommand) {
    match item {
        BulkItem::Create(details) => (
            Uuid::new_v4(),
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
