//! The envelope: the bytes of one event that its leaf hash commits to.
//!
//! A versioned, length-prefixed binary record of the event's columns. The
//! payload and the metadata enter it as PostgreSQL's own text of the jsonb
//! (`payload::text`), the same bytes an export carries, so a verifier never
//! re-serialises JSON: neither key order nor number formatting can differ
//! between the sealer and the verifier (audit-anchors §4, pitfall 2).
//!
//! Layout of version 1 (integers big-endian, strings as a `u32` byte length
//! then UTF-8):
//!
//! ```text
//! 0x01 ‖ global_position i64 ‖ transaction_id u64 ‖ event_id 16 bytes
//!      ‖ aggregate_type ‖ aggregate_id ‖ sequence i64 ‖ event_type
//!      ‖ event_version ‖ recorded_at µs since the Unix epoch i64
//!      ‖ payload text ‖ metadata text
//! ```
//!
//! The leaf hash is RFC 6962's `SHA-256(0x00 ‖ envelope)`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Hash;

/// The envelope format written by this version.
pub const ENVELOPE_VERSION: u8 = 1;

/// One event's columns, borrowed, as the ledger sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<'a> {
    /// `events.global_position`.
    pub global_position: i64,
    /// `events.transaction_id` (xid8).
    pub transaction_id: u64,
    /// `events.event_id`.
    pub event_id: Uuid,
    /// `events.aggregate_type`.
    #[serde(borrow)]
    pub aggregate_type: std::borrow::Cow<'a, str>,
    /// `events.aggregate_id`.
    #[serde(borrow)]
    pub aggregate_id: std::borrow::Cow<'a, str>,
    /// `events.sequence`.
    pub sequence: i64,
    /// `events.event_type`.
    #[serde(borrow)]
    pub event_type: std::borrow::Cow<'a, str>,
    /// `events.event_version`.
    #[serde(borrow)]
    pub event_version: std::borrow::Cow<'a, str>,
    /// `events.recorded_at`, in microseconds since the Unix epoch.
    pub recorded_at_us: i64,
    /// `events.payload::text`, exactly.
    #[serde(borrow)]
    pub payload: std::borrow::Cow<'a, str>,
    /// `events.metadata::text`, exactly.
    #[serde(borrow)]
    pub metadata: std::borrow::Cow<'a, str>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).expect("an event column is smaller than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Envelope<'_> {
    /// The envelope's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.aggregate_type.len()
                + self.aggregate_id.len()
                + self.event_type.len()
                + self.event_version.len()
                + self.payload.len()
                + self.metadata.len(),
        );
        self.encode_into(&mut out);
        out
    }

    /// Append the envelope's bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(&self.global_position.to_be_bytes());
        out.extend_from_slice(&self.transaction_id.to_be_bytes());
        out.extend_from_slice(self.event_id.as_bytes());
        put_str(out, &self.aggregate_type);
        put_str(out, &self.aggregate_id);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        put_str(out, &self.event_type);
        put_str(out, &self.event_version);
        out.extend_from_slice(&self.recorded_at_us.to_be_bytes());
        put_str(out, &self.payload);
        put_str(out, &self.metadata);
    }

    /// The leaf hash, `SHA-256(0x00 ‖ envelope)`.
    pub fn leaf_hash(&self) -> Hash {
        let mut buf = Vec::new();
        self.leaf_hash_with(&mut buf)
    }

    /// The leaf hash, encoding into `buf` (cleared first) to reuse its
    /// allocation across events.
    pub fn leaf_hash_with(&self, buf: &mut Vec<u8>) -> Hash {
        buf.clear();
        self.encode_into(buf);
        tlog_tiles::record_hash(buf)
    }

    /// The digests of the payload and the metadata text. The ledger keeps
    /// them beside each leaf only to say which part of a tampered event
    /// changed; the proof is the leaf and the tree.
    pub fn part_hashes(&self) -> (Hash, Hash) {
        (text_hash(&self.payload), text_hash(&self.metadata))
    }
}

/// `SHA-256` of a text.
pub fn text_hash(text: &str) -> Hash {
    tlog_tiles::Hash(Sha256::digest(text.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope<'static> {
        Envelope {
            global_position: 7,
            transaction_id: 745,
            event_id: Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            aggregate_type: "Lesson".into(),
            aggregate_id: "l-1".into(),
            sequence: 3,
            event_type: "LessonCreated".into(),
            event_version: "1".into(),
            recorded_at_us: 1_700_000_000_000_000,
            payload: r#"{"a": 1.10}"#.into(),
            metadata: "{}".into(),
        }
    }

    #[test]
    fn the_layout_is_fixed() {
        let bytes = sample().encode();
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..9], &7i64.to_be_bytes());
        assert_eq!(&bytes[9..17], &745u64.to_be_bytes());
        assert_eq!(bytes[17], 0x01);
        assert_eq!(&bytes[33..37], &6u32.to_be_bytes());
        assert_eq!(&bytes[37..43], b"Lesson");
        assert!(bytes.ends_with(&[0, 0, 0, 2, b'{', b'}']));
        // A fixed vector (computed independently: SHA-256 over 0x00 and the
        // layout above), so a change of layout cannot go unnoticed.
        assert_eq!(
            hex::encode(sample().leaf_hash().0),
            "ee9c1c85f366e68a13bc770ce251e6cf32ad6090c00fd8616e95fb4b9af52573"
        );
    }

    #[test]
    fn number_text_is_part_of_the_leaf() {
        // jsonb keeps 1.10 and 1.1 apart; so must the leaf.
        let a = sample();
        let mut b = sample();
        b.payload = r#"{"a": 1.1}"#.into();
        assert_ne!(a.leaf_hash(), b.leaf_hash());
    }

    #[test]
    fn a_boundary_shift_between_fields_changes_the_leaf() {
        let a = sample();
        let mut b = sample();
        b.aggregate_type = "Lessonl".into();
        b.aggregate_id = "-1".into();
        assert_ne!(a.leaf_hash(), b.leaf_hash());
    }
}
