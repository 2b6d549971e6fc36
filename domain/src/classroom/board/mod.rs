//! The Board aggregate: a lesson's whiteboard, synchronised by the server.
//!
//! The server orders operations: each applied one gets the next
//! `server_version` and a Lamport time of `max(client, server) + 1`. The
//! aggregate holds only what deciding needs: the roster, the clocks, one
//! stamp per live element (who wrote it last, at which Lamport time), and a
//! short memory per client for duplicates and undo. Element contents live in
//! the `board_elements` read model; [`plan`] and [`edit_value`] say how an
//! operation changes them, for the projection and for any client replaying
//! the operation log alike.
//!
//! Conflicts on one element are settled by the board's [`ConflictPolicy`].
//! Operations from the element's last writer never conflict; another
//! client's write conflicts when it cannot have seen the last write (its
//! Lamport time is not above the element's).
//!
//! - `ops.rs`: the operation vocabulary (kinds, requests, outcomes, limits);
//! - `content.rs`: how operations change element contents, and the checksum,
//!   shared with the projection and replaying clients;
//! - `aggregate.rs`: the aggregate, its commands, events and errors;
//! - `tests.rs`: given/when/then tests of the aggregate.

mod aggregate;
mod content;
mod ops;
#[cfg(test)]
mod tests;

pub use aggregate::*;
pub use content::*;
pub use ops::*;
