//! A place in the event log, in the order projectors apply it.
//!
//! Projectors apply events ordered by (writing transaction id, global position), so that
//! pair — not the position alone — is what a command's result and a projection's progress
//! are compared by. Its text form `"<transaction_id>:<position>"` is what the API hands out
//! (`position` in command responses, `X-Murmur-Position`) and accepts
//! (`X-Murmur-Min-Position`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The writing transaction's xid8.
    pub transaction_id: u64,
    /// The event's global position (`events.position`).
    pub position: i64,
}

impl Position {
    /// Before the first event.
    pub const START: Position = Position {
        transaction_id: 0,
        position: 0,
    };

    pub fn new(transaction_id: u64, position: i64) -> Self {
        Self {
            transaction_id,
            position,
        }
    }
}

/// The one row codec: a position is selected as `transaction_id::text AS xid, position`
/// (`xid8` has no binary decoder in sqlx) and bound as `$n::text::xid8, $m`.
impl Position {
    /// Reads the `xid` and `position` columns of a row.
    pub fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let xid: String = row.try_get("xid")?;
        let transaction_id = xid.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(Self::new(transaction_id, row.try_get("position")?))
    }

    /// The transaction id as text, for a `$n::text::xid8` parameter.
    pub fn xid_text(&self) -> String {
        self.transaction_id.to_string()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transaction_id, self.position)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a position looks like \"<transaction id>:<position>\", e.g. \"812:40\"")]
pub struct BadPosition;

impl FromStr for Position {
    type Err = BadPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (xid, pos) = s.trim().split_once(':').ok_or(BadPosition)?;
        let transaction_id = xid.parse().map_err(|_| BadPosition)?;
        let position: i64 = pos.parse().map_err(|_| BadPosition)?;
        if position < 0 {
            return Err(BadPosition);
        }
        Ok(Self::new(transaction_id, position))
    }
}

impl Serialize for Position {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_orders_by_transaction_first() {
        let a: Position = "812:40".parse().unwrap();
        assert_eq!(a, Position::new(812, 40));
        assert_eq!(a.to_string(), "812:40");
        // A late-committing transaction's lower position still comes after.
        assert!(Position::new(813, 10) > a);
        for bad in ["", "812", "x:1", "1:-1", "1:2:3", ":"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }
}
