//! The projections' in-memory states: plain folds over the log, one event at a time, no I/O.
//!
//! Each state answers its queries from memory and records which rows of its durable copy
//! the events changed, so that `store` can write just those (see [`Fold::take_changes`]).
//! Because events are applied one at a time, the state after a history never depends on how
//! the history was cut into batches.

pub mod feeds;
pub mod ids;
pub mod posts;
pub mod profiles;

pub use feeds::FeedsState;
pub use posts::PostsState;
pub use profiles::ProfilesState;

use crate::StoredEvent;

/// A projection's state as the runtime drives it.
pub trait Fold: Send + Sync + 'static {
    /// The row changes of the durable copy since the last [`Fold::take_changes`].
    type Changes: Send + Sync + 'static;

    /// Applies one event (the runtime hands only events of the projection's aggregate
    /// types, in commit order, each once).
    fn apply(&mut self, event: &StoredEvent);

    /// Rows changed since the last call, as they stand now; forgets them. A projection may
    /// write some of them as a journal of changes instead (see `FeedsState`), until
    /// [`Fold::complete_next`] asks for whole rows.
    fn take_changes(&mut self) -> Self::Changes;

    /// Makes the next [`Fold::take_changes`] leave the tables complete (no journal to
    /// replay): a rest after a load, a last flush, a test that reads the tables.
    fn complete_next(&mut self) {}

    /// Whether the tables hold a journal that [`Fold::complete_next`] would fold in.
    fn journaled(&self) -> bool {
        false
    }

    /// Whether changes are being recorded. A rebuild turns this off: it writes everything.
    fn set_tracking(&mut self, on: bool);

    /// Rows [`Fold::take_changes`] would write now (an estimate for flush decisions).
    fn pending_rows(&self) -> usize;
}
