//! The event store the command side writes through: postgres-es's repository for reading
//! streams, and its own append, which
//! - is one `INSERT … RETURNING` statement (atomic on its own, so no `BEGIN`/`COMMIT`
//!   round trips), whose returned `(transaction_id, position)` is the command's answer
//!   (no query for the position afterwards);
//! - is shared: a command's event (every murmur command appends at most one) joins the
//!   events of the commands appending at the same moment in one statement ([`Appender`],
//!   group commit), where `ON CONFLICT DO NOTHING` tells each command apart whether its
//!   stream's key was taken (its optimistic-concurrency conflict) without failing the others;
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
use std::sync::Arc;

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

use super::batch::Batcher;

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
    appender: Arc<Appender>,
}

impl EventRepository {
    pub fn new(pool: PgPool, wake: Wake, appender: Arc<Appender>) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool.clone()),
            pool,
            wake,
            appender,
        }
    }

    /// Appends a command's one event through the shared [`Appender`].
    async fn append_shared<A: Aggregate>(
        &self,
        event: &SerializedEvent,
    ) -> Result<Position, PersistenceError> {
        let unknown =
            |e: Box<dyn std::error::Error + Send + Sync>| PersistenceError::UnknownError(e);
        let event = NewEvent {
            aggregate_type: A::TYPE,
            aggregate_id: event.aggregate_id.clone(),
            sequence: i64::try_from(event.sequence).map_err(|e| unknown(Box::new(e)))?,
            event_type: event.event_type.clone(),
            event_version: event.event_version.clone(),
            payload: event.payload.to_string(),
            metadata: event.metadata.to_string(),
        };
        match self.appender.append(event).await {
            Ok(Ok(Some(at))) => Ok(at),
            Ok(Ok(None)) => Err(PersistenceError::OptimisticLockError),
            Ok(Err(e)) => Err(persistence_error(e)),
            Err(stopped) => Err(unknown(Box::new(stopped))),
        }
    }

    /// Appends several events of one command in a statement of their own (all or none).
    async fn append_alone<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
    ) -> Result<Position, PersistenceError> {
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
        let mut last = Position::START;
        for row in &rows {
            let at =
                Position::from_row(row).map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
            last = last.max(at);
        }
        Ok(last)
    }
}

/// One statement for any number of events of one command, all or none.
const APPEND: &str = "INSERT INTO events
     (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                          $6::jsonb[], $7::jsonb[])
     RETURNING transaction_id::text AS xid, position";

/// One statement for the single events of many commands: each is inserted unless its
/// stream's key is taken, and the inserted ones come back by key.
const APPEND_EACH: &str = "INSERT INTO events
     (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                          $6::text[]::jsonb[], $7::text[]::jsonb[])
     ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING
     RETURNING aggregate_type, aggregate_id, sequence, transaction_id::text AS xid, position";

/// Statements appending at once, and events per statement at most.
const APPEND_WORKERS: usize = 4;
const APPEND_BATCH: usize = 256;

/// A command's single event, ready for the shared append (payload and metadata as JSON
/// text, encoded by the command's own task).
pub struct NewEvent {
    aggregate_type: &'static str,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
}

/// Where the event went: its position, or `None` when its stream's key was taken.
type Appended = Result<Option<Position>, sqlx::Error>;

/// The group-commit append of single events (see the module's comment).
pub struct Appender(Batcher<NewEvent, Appended>);

impl Appender {
    /// Starts the append workers; `wake` is told of every batch that committed events.
    pub fn start(pool: PgPool, wake: Wake) -> Self {
        Self(Batcher::start(
            APPEND_WORKERS,
            APPEND_BATCH,
            move |events| append_each(pool.clone(), wake.clone(), events),
        ))
    }

    async fn append(&self, event: NewEvent) -> Result<Appended, super::batch::Stopped> {
        self.0.submit(event, "append").await
    }
}

/// Appends a batch of single events in one statement; answers one result per event. Should
/// the statement fail as a whole, each event is tried on its own, so that one bad event
/// fails only its command.
async fn append_each(pool: PgPool, wake: Wake, events: Vec<NewEvent>) -> Vec<Appended> {
    let result = insert_each(&pool, &events).await;
    let results = match result {
        Ok(results) => results,
        Err(error) if events.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::warn!(%error, events = events.len(), "a shared append failed; appending one by one");
            let mut results = Vec::with_capacity(events.len());
            for event in &events {
                results.push(
                    match insert_each(&pool, std::slice::from_ref(event)).await {
                        Ok(mut one) => one.remove(0),
                        Err(error) => Err(error),
                    },
                );
            }
            results
        }
    };
    if results.iter().any(|r| matches!(r, Ok(Some(_)))) {
        wake.committed();
    }
    results
}

/// The statement of [`append_each`]. Events are inserted in key order (two statements
/// inserting the same keys then wait for each other in one order, never in a cycle); a
/// second event for a key already in the batch is answered as a conflict.
async fn insert_each(pool: &PgPool, events: &[NewEvent]) -> Result<Vec<Appended>, sqlx::Error> {
    fn key(e: &NewEvent) -> (&str, &str, i64) {
        (e.aggregate_type, &e.aggregate_id, e.sequence)
    }
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by(|&a, &b| key(&events[a]).cmp(&key(&events[b])));
    order.dedup_by(|&mut later, &mut earlier| key(&events[later]) == key(&events[earlier]));
    let column =
        |f: fn(&NewEvent) -> &str| -> Vec<&str> { order.iter().map(|&i| f(&events[i])).collect() };
    let rows = sqlx::query(APPEND_EACH)
        .bind(column(|e| e.aggregate_type))
        .bind(column(|e| &e.aggregate_id))
        .bind(
            order
                .iter()
                .map(|&i| events[i].sequence)
                .collect::<Vec<_>>(),
        )
        .bind(column(|e| &e.event_type))
        .bind(column(|e| &e.event_version))
        .bind(column(|e| &e.payload))
        .bind(column(|e| &e.metadata))
        .fetch_all(pool)
        .await?;
    let mut inserted = HashMap::with_capacity(rows.len());
    for row in &rows {
        use sqlx::Row;
        let at = Position::from_row(row)?;
        let (t, id, seq): (String, String, i64) = (
            row.try_get("aggregate_type")?,
            row.try_get("aggregate_id")?,
            row.try_get("sequence")?,
        );
        inserted.insert((t, id, seq), at);
    }
    // Each position is handed out once: a duplicate key in the batch is a conflict.
    Ok(events
        .iter()
        .map(|e| {
            let k = (
                e.aggregate_type.to_string(),
                e.aggregate_id.clone(),
                e.sequence,
            );
            Ok(inserted.remove(&k))
        })
        .collect())
}

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
        let last = match events {
            [event] => self.append_shared::<A>(event).await?,
            _ => self.append_alone::<A>(events).await?,
        };
        // Outside `appending` (nothing asked for the position) there is no slot: fine.
        let _ = APPENDED.try_with(|slot| slot.set(slot.get().max(Some(last))));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn follow(id: &str, sequence: i64, payload: &str) -> NewEvent {
        NewEvent {
            aggregate_type: "Follow",
            aggregate_id: id.into(),
            sequence,
            event_type: "Followed".into(),
            event_version: "1".into(),
            payload: payload.into(),
            metadata: r#"{"request_id":"t"}"#.into(),
        }
    }

    const OK: &str = r#"{"Followed":{"follower_id":1,"followee_id":2}}"#;

    #[sqlx::test(migrations = "../migrations")]
    async fn a_shared_append_answers_each_command_apart(pool: PgPool) {
        let taken = append_each(pool.clone(), Wake::default(), vec![follow("1:2", 1, OK)]).await;
        assert!(matches!(taken[..], [Ok(Some(_))]), "{taken:?}");
        let results = append_each(
            pool.clone(),
            Wake::default(),
            vec![
                follow("1:3", 1, OK),
                follow("1:2", 1, OK), // the stream's key is taken: a conflict
                follow("1:4", 1, OK),
                follow("1:3", 1, OK), // a second event for a key of this batch: a conflict
            ],
        )
        .await;
        let positions: Vec<Option<Position>> = results.into_iter().map(|r| r.unwrap()).collect();
        assert!(positions[0].is_some() && positions[2].is_some());
        assert_eq!((positions[1], positions[3]), (None, None));
        assert_ne!(positions[0], positions[2]);
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(stored, 3);
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn one_bad_event_fails_only_its_own_command(pool: PgPool) {
        let results = append_each(
            pool.clone(),
            Wake::default(),
            vec![
                follow("5:6", 1, OK),
                follow("5:7", 1, "{not json"),
                follow("5:8", 1, OK),
            ],
        )
        .await;
        assert!(matches!(results[0], Ok(Some(_))), "{:?}", results[0]);
        assert!(results[1].is_err(), "{:?}", results[1]);
        assert!(matches!(results[2], Ok(Some(_))), "{:?}", results[2]);
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT aggregate_id FROM events ORDER BY aggregate_id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(stored, ["5:6", "5:8"]);
    }
}
