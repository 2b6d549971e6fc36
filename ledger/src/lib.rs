//! Lectern's verifiable ledger, without the database: the event envelope and
//! its leaf hash, the RFC 6962 tree (hashing and proofs from `tlog_tiles`),
//! signed checkpoints (C2SP signed notes, Ed25519) and the offline verifier
//! of an export bundle.
//!
//! The sealer that builds the tree from the log lives on the read side
//! (`lectern_projections::ledger`); this crate is what an auditor needs and
//! nothing more. See docs/audit.md.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod checkpoint;
pub mod envelope;
pub mod tree;
pub mod verify;

pub use checkpoint::{LedgerKey, NoteError, SignedCheckpoint, TrustedKey};
pub use envelope::Envelope;
pub use tlog_tiles::Hash;

/// A hash from 64 hex digits.
pub fn parse_hex_hash(s: &str) -> Option<Hash> {
    let bytes = hex::decode(s).ok()?;
    Some(Hash(bytes.try_into().ok()?))
}
