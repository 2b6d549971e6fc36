//! The classroom service: lessons, boards, chat and delivery marks.
//!
//! The Lesson stream decides who takes part. Its board and channel keep a
//! copy of the roster (a command on each, which only a newer lesson version
//! changes), made by the [`roster::RosterSync`] process manager after the
//! lesson command has answered. Until that copy has caught up, the first
//! refused drawing, message or read re-copies it and tries once more, so a
//! student who has just enrolled can draw and chat at once.

mod boards;
mod bulk;
mod chat;
pub mod roster;

use chrono::Utc;
use futures::future::join_all;
use lectern_domain::classroom::lesson::{LessonDetails, LessonPatch};
use lectern_domain::classroom::{
    Board, BoardCommand, BoardError, Channel, ChannelCommand, ChannelError, Inbox, InboxError,
    Lesson, LessonCommand, LessonError, LessonEvent,
};
use lectern_domain::{EventMetadata, Position};
use sqlx::PgPool;
use uuid::Uuid;

use crate::bus::{CommandBus, Committed, DispatchConfig};
use crate::error::{CommandError, StoreError};
use crate::store::PgEventStore;

/// Boards snapshot this often: a long board loads from its snapshot. The
/// snapshot (clocks, element stamps, each client's recent answers and undo
/// stack) runs to hundreds of KB, so it is written in the background rather
/// than in the append that the drawing clients wait for.
pub const BOARD_SNAPSHOT_EVERY: u64 = 1000;

/// Why a classroom command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClassroomError {
    /// A Lesson rule refused it.
    #[error(transparent)]
    Lesson(LessonError),
    /// A Board rule refused it.
    #[error(transparent)]
    Board(BoardError),
    /// A chat rule refused it.
    #[error(transparent)]
    Channel(ChannelError),
    /// Up_to_seq … is past the channel's last message ….
    #[error("up_to_seq {0} is past the channel's last message {1}")]
    AckBeyondLast(u64, u64),
    /// The resource was changed concurrently; retry.
    #[error("the resource was changed concurrently; retry")]
    Conflict,
    /// The store failed underneath.
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
    /// The message.
    pub message_id: Uuid,
    /// The message's sequence number in its channel.
    pub seq: u64,
    /// The message was sent before with this `client_message_id`.
    pub duplicate: bool,
    /// The stream version.
    pub version: u64,
    /// The position in the log.
    pub position: Option<Position>,
}

/// One item of a bulk request, checked.
#[derive(Debug, Clone)]
pub enum BulkItem {
    /// Schedule a lesson with these details.
    Create(LessonDetails),
    /// Change lesson `.0`.
    Update(Uuid, LessonPatch),
    /// Cancel lesson `.0`, with a reason.
    Cancel(Uuid, Option<String>),
}

/// The outcome of one bulk item.
#[derive(Debug)]
pub struct BulkResult {
    /// The id.
    pub id: Option<Uuid>,
    /// The committed events, or why it failed.
    pub outcome: Result<Committed<LessonEvent>, ClassroomError>,
}

/// Lessons, boards, chat and deliveries: the classroom's commands.
#[derive(Clone)]
pub struct ClassroomService {
    /// The Lesson streams.
    pub lessons: CommandBus<Lesson>,
    /// The Board streams.
    pub boards: CommandBus<Board>,
    /// The Channel streams.
    pub channels: CommandBus<Channel>,
    /// The Inbox streams.
    pub inboxes: CommandBus<Inbox>,
}

impl ClassroomService {
    /// The service over `pool`.
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
        // Derived from the request's idempotency attempt, if any: a retry
        // names the same lesson, so it cannot schedule a second one.
        let id = meta.new_id(0);
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
    pub(crate) async fn resync(
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
}
