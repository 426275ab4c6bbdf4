//! The event store the command side writes through: postgres-es's repository for reading
//! streams, and its own append, which
//! - is one `INSERT … RETURNING` statement (atomic on its own, so no `BEGIN`/`COMMIT`
//!   round trips), whose returned `(transaction_id, position)` is the command's answer
//!   (no query for the position afterwards);
//! - wakes the projectors once it has committed ([`Wake::committed`]), since the log has
//!   no trigger that notifies (a NOTIFY in the appending transaction serialises commits).
//!
//! cqrs-es does not pass anything back from `persist`, so the position reaches the command
//! through a task-local slot that [`appending`] opens around the command's execution.
//!
//! [`Presumed`] is the store a command's first attempt goes through: it does not load.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;

use cqrs_es::persist::{
    EventStoreAggregateContext, PersistedEventRepository, PersistedEventStore, PersistenceError,
    ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore};
use murmur_projections::runtime::Wake;
use murmur_projections::Position;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;

tokio::task_local! {
    /// The position of the last event the current command appended.
    static APPENDED: Cell<Option<Position>>;
}

/// Runs `command` (one command's execution, retries included) and answers its result with
/// the position of the last event it appended, if it appended any.
pub async fn appending<T>(command: impl Future<Output = T>) -> (T, Option<Position>) {
    APPENDED
        .scope(Cell::new(None), async move {
            let result = command.await;
            (result, APPENDED.with(Cell::get))
        })
        .await
}

/// murmur's event repository (see the module's comment).
pub struct EventRepository {
    pool: PgPool,
    reads: PostgresEventRepository,
    wake: Wake,
}

impl EventRepository {
    pub fn new(pool: PgPool, wake: Wake) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool.clone()),
            pool,
            wake,
        }
    }
}

/// One statement for any number of events (a command appends one or two).
const APPEND: &str = "INSERT INTO events
     (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                          $6::jsonb[], $7::jsonb[])
     RETURNING transaction_id::text AS xid, position";

fn persistence_error(error: sqlx::Error) -> PersistenceError {
    match &error {
        // The stream's (aggregate, sequence) key is taken: another writer won.
        sqlx::Error::Database(e) if e.code().as_deref() == Some("23505") => {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
            PersistenceError::ConnectionError(Box::new(error))
        }
        _ => PersistenceError::UnknownError(Box::new(error)),
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.reads.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            // murmur configures no snapshots; should one ever be, postgres-es writes it.
            self.reads.persist::<A>(events, snapshot_update).await?;
            self.wake.committed();
            return Ok(());
        }
        if events.is_empty() {
            return Ok(());
        }
        let mut sequences = Vec::with_capacity(events.len());
        for event in events {
            let sequence = i64::try_from(event.sequence)
                .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
            sequences.push(sequence);
        }
        let column =
            |f: fn(&SerializedEvent) -> &str| -> Vec<&str> { events.iter().map(f).collect() };
        let rows = sqlx::query(APPEND)
            .bind(vec![A::TYPE; events.len()])
            .bind(column(|e| &e.aggregate_id))
            .bind(&sequences)
            .bind(column(|e| &e.event_type))
            .bind(column(|e| &e.event_version))
            .bind(events.iter().map(|e| &e.payload).collect::<Vec<_>>())
            .bind(events.iter().map(|e| &e.metadata).collect::<Vec<_>>())
            .fetch_all(&self.pool)
            .await
            .map_err(persistence_error)?;
        self.wake.committed();
        let mut last = None;
        for row in &rows {
            let at =
                Position::from_row(row).map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
            last = last.max(Some(at));
        }
        // Outside `appending` (nothing asked for the position) there is no slot: fine.
        let _ = APPENDED.try_with(|slot| slot.set(slot.get().max(last)));
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_all_events::<A>().await
    }
}

/// An event store that skips loading: it presents every stream as empty, so a command is
/// decided on the aggregate's initial state and appended at sequence 1. Where the stream is
/// in fact empty (a new post, a new edge, a new handle: most commands) that is the true
/// state, and the command costs one round trip instead of two; where it is not, the append
/// conflicts on the stream's key, and the caller decides again on the loaded stream.
pub struct Presumed<A: Aggregate>(pub PersistedEventStore<EventRepository, A>);

impl<A> EventStore<A> for Presumed<A>
where
    A: Aggregate + Send + Sync,
{
    type AC = EventStoreAggregateContext<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.0.load_events(aggregate_id).await
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<A::Error>> {
        Ok(EventStoreAggregateContext {
            aggregate_id: aggregate_id.to_string(),
            aggregate: A::default(),
            current_sequence: 0,
            current_snapshot: None,
        })
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.0.commit(events, context, metadata).await
    }
}
