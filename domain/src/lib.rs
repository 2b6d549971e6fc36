//! Lectern's domain: aggregates, commands, events and value types.
//!
//! Nothing here does I/O. Outside facts (the time, ids, password hashes) arrive
//! in commands or through an aggregate's services.
#![forbid(unsafe_code)]

pub mod access;
pub mod billing;
pub mod classroom;
pub mod identity;
pub mod mask;
pub mod metadata;
pub mod policy;
pub mod position;
pub mod presence;
#[cfg(test)]
mod testing;
pub mod video;

pub use metadata::{CommandName, EventMetadata};
pub use position::Position;
