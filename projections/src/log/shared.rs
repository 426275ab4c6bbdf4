//! Reads of the log shared by a node's projector tasks: each stretch is read from
//! PostgreSQL and decoded once, then applied by every projection, instead of once per
//! projection.
//!
//! A stretch read below the horizon is a fact about the log for good: every event between
//! its start and its end is in it, and none can commit there later (see [`super::horizon`]).
//! So a task whose position falls anywhere inside a kept stretch takes the rest of it, and
//! tasks at different positions (after a reload, say) never see a wrong one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use sqlx::PgConnection;

use super::read::{read_batch_of, StoredEvent};
use crate::Position;

/// A stretch of the log: every event after `after` up to and including `end`.
#[derive(Debug)]
pub struct Stretch {
    after: Position,
    end: Position,
    events: Vec<StoredEvent>,
}

/// The part of a [`Stretch`] after a task's position.
#[derive(Debug)]
pub struct Tail {
    stretch: Arc<Stretch>,
    from: usize,
    /// Taken from the kept stretches (another task read it).
    kept: bool,
}

impl Tail {
    /// The events, of every aggregate type, in commit order.
    pub fn events(&self) -> &[StoredEvent] {
        &self.stretch.events[self.from..]
    }

    /// The last position it covers (the task is there once it has applied it).
    pub fn end(&self) -> Position {
        self.stretch.end
    }

    /// Whether it was kept from another task's read.
    pub fn kept(&self) -> bool {
        self.kept
    }
}

/// Events kept for the slower tasks: a few batches.
const KEPT_EVENTS: usize = 60_000;

/// The stretches a node's tasks read, newest last.
#[derive(Default)]
pub struct SharedReads {
    kept: Mutex<VecDeque<Arc<Stretch>>>,
    /// One read from the database at a time: the others then find its stretch.
    reading: tokio::sync::Mutex<()>,
}

impl SharedReads {
    pub fn new() -> Self {
        Self::default()
    }

    /// What is known after `after`, if a kept stretch covers it.
    fn kept_after(&self, after: Position) -> Option<Tail> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let stretch = kept
            .iter()
            .rev()
            .find(|s| s.after <= after && after < s.end)?;
        let from = stretch.events.partition_point(|e| e.position <= after);
        Some(Tail {
            stretch: stretch.clone(),
            from,
            kept: true,
        })
    }

    fn keep(&self, stretch: Arc<Stretch>) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.push_back(stretch);
        let mut total: usize = kept.iter().map(|s| s.events.len()).sum();
        while total > KEPT_EVENTS && kept.len() > 1 {
            if let Some(oldest) = kept.pop_front() {
                total -= oldest.events.len();
            }
        }
    }

    /// Up to `limit` events after `after` (fewer from a kept stretch); `None` when there is
    /// nothing to read yet.
    pub async fn read(
        &self,
        conn: &mut PgConnection,
        after: Position,
        limit: i64,
    ) -> anyhow::Result<Option<Tail>> {
        if let Some(tail) = self.kept_after(after) {
            return Ok(Some(tail));
        }
        let _reading = self.reading.lock().await;
        // Another task may have read it meanwhile.
        if let Some(tail) = self.kept_after(after) {
            return Ok(Some(tail));
        }
        let batch = read_batch_of(conn, after, limit, None).await?;
        let Some(end) = batch.end else {
            return Ok(None);
        };
        let stretch = Arc::new(Stretch {
            after,
            end,
            events: batch.events,
        });
        self.keep(stretch.clone());
        Ok(Some(Tail {
            stretch,
            from: 0,
            kept: false,
        }))
    }
}
