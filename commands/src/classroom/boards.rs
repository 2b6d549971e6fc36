//! Whiteboards: drawing and the conflict policy.

use lectern_domain::classroom::{
    board::OpRequest, Actor, BoardCommand, BoardError, BoardEvent, ConflictPolicy, OpOutcome,
};
use lectern_domain::EventMetadata;
use uuid::Uuid;

use super::*;
use crate::bus::Committed;
use crate::error::CommandError;

impl ClassroomService {
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
}
