//! The export bundle: what `lectern audit export` writes and
//! `lectern audit verify` reads.
//!
//! ```text
//! DIR/events.jsonl          one line per event, in feed order: its sequence
//!                           number in the ledger, its envelope (payload and
//!                           metadata as the exact jsonb text), and what the
//!                           sealer recorded for it
//! DIR/checkpoints/<size>.note   every signed checkpoint
//! DIR/ledger.pub            the server's verifier key (for reference: the
//!                           auditor verifies with their own copy)
//! DIR/prefix.json           with --from: the tree's peaks before the first line
//! ```

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::Hash;

/// The events file.
pub const EVENTS_FILE: &str = "events.jsonl";
/// The checkpoints directory.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The server's verifier key.
pub const PUBKEY_FILE: &str = "ledger.pub";
/// The prefix of a partial bundle.
pub const PREFIX_FILE: &str = "prefix.json";

/// The file name of the checkpoint of a tree of `size` leaves.
pub fn checkpoint_file(size: u64) -> String {
    format!("{size:020}.note")
}

/// One line of `events.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line<'a> {
    /// The leaf index in the ledger; absent for an event the ledger has not
    /// sealed.
    pub seq: Option<u64>,
    /// The event's columns; absent for a sealed leaf whose event is gone.
    #[serde(borrow)]
    pub event: Option<Envelope<'a>>,
    /// What the sealer recorded; absent for an event not sealed.
    pub sealed: Option<Sealed>,
}

/// What the sealer recorded for a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sealed {
    /// The event's transaction id when it was sealed.
    pub transaction_id: u64,
    /// The event's global position when it was sealed.
    pub global_position: i64,
    /// The leaf hash.
    #[serde(with = "hex_hash")]
    pub leaf: Hash,
    /// SHA-256 of the payload text.
    #[serde(with = "hex_hash")]
    pub payload: Hash,
    /// SHA-256 of the metadata text.
    #[serde(with = "hex_hash")]
    pub metadata: Hash,
}

/// The peaks of the tree before a partial bundle's first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prefix {
    /// The number of leaves before the first line.
    pub size: u64,
    /// The hashes at `tree::peak_indexes(size)`, in order.
    #[serde(with = "hex_hashes")]
    pub peaks: Vec<Hash>,
}

/// Hashes as lowercase hex in JSON.
pub mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::Hash;

    /// Serialize as hex.
    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(h.0))
    }

    /// Deserialize from hex.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        crate::parse_hex_hash(&s).ok_or_else(|| serde::de::Error::custom("not a 32-byte hex hash"))
    }
}

/// Lists of hashes as lowercase hex in JSON.
pub mod hex_hashes {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::Hash;

    /// Serialize as a list of hex strings.
    pub fn serialize<S: Serializer>(v: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|h| hex::encode(h.0)))
    }

    /// Deserialize from a list of hex strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| {
                crate::parse_hex_hash(s)
                    .ok_or_else(|| serde::de::Error::custom("not a 32-byte hex hash"))
            })
            .collect()
    }
}
