//! The read-your-writes token a command returns.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A point in the event log: the writing transaction and the global position.
///
/// Projections read the log in `(transaction_id, global_position)` order, so a
/// projection has seen an event exactly when its checkpoint pair is at or past
/// this pair. On the wire it is the opaque string `"<tx>.<position>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The writing transaction's id (PostgreSQL `xid8`).
    pub transaction_id: i64,
    /// The event's `global_position`.
    pub global_position: i64,
}

impl Position {
    /// The start of the log, before any event.
    pub const ZERO: Self = Self {
        transaction_id: 0,
        global_position: 0,
    };
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.transaction_id, self.global_position)
    }
}

/// A position token that is not of the form `<tx>.<position>`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a position token has the form <transaction>.<position>, both non-negative integers")]
pub struct InvalidPosition;

impl FromStr for Position {
    type Err = InvalidPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tx, pos) = s.split_once('.').ok_or(InvalidPosition)?;
        let parse = |v: &str| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0 && v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(InvalidPosition)
        };
        Ok(Self {
            transaction_id: parse(tx)?,
            global_position: parse(pos)?,
        })
    }
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_order_by_transaction_first() {
        let p: Position = "17.4".parse().expect("valid token");
        assert_eq!(p.to_string(), "17.4");
        assert!("17.4".parse::<Position>().expect("valid") > "16.90".parse().expect("valid"));
    }

    #[test]
    fn malformed_positions_are_refused() {
        for bad in ["", "17", "a.b", "-1.2", "1.-2", "1.2.3", "+1.2"] {
            assert_eq!(bad.parse::<Position>(), Err(InvalidPosition), "{bad}");
        }
    }
}
