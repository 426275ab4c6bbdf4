//! The memory image: each projection's in-memory state as readers and the projector share
//! it, with how far it has applied the log.
//!
//! The projector holds the write lock for at most [`MAX_HOLD`] at a time (releasing it at a
//! transaction boundary), readers hold the read lock only to copy out what they answer, and
//! nobody holds either across an `.await`; so a reader never waits for a database commit or
//! for a whole batch.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::log::standby::ReplicaStatus;
use crate::projection::{AnyState, Kind};
use crate::store::Settings;
use crate::{Position, StoredEvent};

/// Longest the projector keeps readers out while applying events.
pub const MAX_HOLD: Duration = Duration::from_millis(1);

/// One projection's shared state.
pub struct Live {
    kind: Kind,
    state: RwLock<AnyState>,
    /// The last event applied; moves only forward, after the state has applied it.
    position: watch::Sender<Position>,
    /// False until a state has been loaded: an empty state is not an answer.
    loaded: watch::Sender<bool>,
    /// What the projector task last measured and met (for `/readyz`, without queries).
    health: Mutex<Health>,
}

/// A projection's health as its task last saw it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    /// Committed events not applied in memory yet, measured at most a second ago.
    pub lag_events: i64,
    /// Age of the oldest of them, in seconds.
    pub lag_seconds: f64,
    /// Events the durable copy has still to write (on the node that leads it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable_lag_events: Option<i64>,
    /// The task's last failure, while it has not got past it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The transaction keeping committed events from being read, while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back_by: Option<Blocker>,
}

/// The oldest transaction in flight in the cluster (`pg_snapshot_xmin` is cluster-wide).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Blocker {
    pub pid: i32,
    pub database: Option<String>,
    pub age_seconds: f64,
}

impl Live {
    /// An empty, not yet loaded state.
    pub fn new(kind: Kind, settings: &Settings) -> Self {
        Self {
            kind,
            state: RwLock::new(kind.empty(settings)),
            position: watch::Sender::new(Position::START),
            loaded: watch::Sender::new(false),
            health: Mutex::new(Health::default()),
        }
    }

    /// The task's last figures and failure.
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn update_health(&self, change: impl FnOnce(&mut Health)) {
        change(
            &mut self
                .health
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The last event applied to the state.
    pub fn position(&self) -> Position {
        *self.position.borrow()
    }

    pub fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }

    /// Notified whenever the position moves.
    pub fn subscribe(&self) -> watch::Receiver<Position> {
        self.position.subscribe()
    }

    /// The state, for reading. Hold it briefly and never across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, AnyState> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, AnyState> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the state with one at `at` (never behind the current position).
    pub(crate) fn install(&self, state: AnyState, at: Position) {
        let old = std::mem::replace(&mut *self.write(), state);
        self.position.send_if_modified(|p| {
            let moved = at > *p;
            *p = (*p).max(at);
            moved
        });
        self.loaded.send_replace(true);
        // Freed outside the lock: dropping a large state takes a while.
        drop(old);
    }

    /// Applies `events` (in commit order, after the position) and moves the position to
    /// `to`, in short exclusive stretches that end only between two transactions' events,
    /// so readers never see half of one.
    pub(crate) fn apply(&self, events: &[StoredEvent], to: Position) {
        let mut next = 0;
        while next < events.len() {
            let mut state = self.write();
            let started = Instant::now();
            while next < events.len() {
                state.apply(&events[next]);
                next += 1;
                let boundary = events.get(next).is_none_or(|e| {
                    e.position.transaction_id != events[next - 1].position.transaction_id
                });
                if boundary && started.elapsed() >= MAX_HOLD {
                    break;
                }
            }
        }
        self.position.send_if_modified(|p| {
            let moved = to > *p;
            *p = (*p).max(to);
            moved
        });
    }
}

/// Every projection's shared state: what a node serves its reads from.
#[derive(Clone)]
pub struct Image {
    lives: Arc<[Arc<Live>; 3]>,
    /// Why the projector runtime stopped, once it has (its state is frozen from then on).
    stopped: Arc<watch::Sender<Option<String>>>,
    /// How far the hot standby this node reads trails the primary (`None`: it reads the
    /// primary).
    replica: Arc<Mutex<Option<ReplicaStatus>>>,
}

impl Image {
    pub fn new(settings: &Settings) -> Self {
        Self {
            lives: Arc::new(Kind::ALL.map(|kind| Arc::new(Live::new(kind, settings)))),
            stopped: Arc::new(watch::Sender::new(None)),
            replica: Arc::default(),
        }
    }

    /// How far the standby this node reads trails the primary, as last measured.
    pub fn replica(&self) -> Option<ReplicaStatus> {
        self.replica
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_replica(&self, status: Option<ReplicaStatus>) {
        *self
            .replica
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = status;
    }

    /// The least position of the projections: every one has applied the log up to there.
    pub fn least_position(&self) -> Position {
        self.lives
            .iter()
            .map(|live| live.position())
            .min()
            .unwrap_or(Position::START)
    }

    /// Why the runtime keeping this image stopped, if it has.
    pub fn stopped(&self) -> Option<String> {
        self.stopped.borrow().clone()
    }

    /// Waits until the runtime keeping this image stops; answers why.
    pub async fn wait_stopped(&self) -> String {
        let mut stopped = self.stopped.subscribe();
        let reason = match stopped.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The sender lives as long as `self`.
            Err(_) => String::new(),
        };
        reason
    }

    pub(crate) fn mark_stopped(&self, reason: String) {
        self.stopped.send_replace(Some(reason));
    }

    pub fn get(&self, kind: Kind) -> &Arc<Live> {
        &self.lives[kind.index()]
    }

    pub fn profiles(&self) -> &Live {
        self.get(Kind::Profiles)
    }

    pub fn posts(&self) -> &Live {
        self.get(Kind::Posts)
    }

    pub fn feeds(&self) -> &Live {
        self.get(Kind::Feeds)
    }

    /// Whether the profiles projection has user `id` (registered for good: users are never
    /// removed). False may only mean "not yet": the image trails the log.
    pub fn knows_user(&self, id: murmur_domain::UserId) -> bool {
        self.profiles()
            .read()
            .as_profiles()
            .is_some_and(|s| s.profile(id).is_some())
    }

    /// Whether every projection has been loaded.
    pub fn is_loaded(&self) -> bool {
        self.lives.iter().all(|live| live.is_loaded())
    }

    /// Waits until every projection has been loaded.
    pub async fn loaded(&self) {
        for live in self.lives.iter() {
            let mut loaded = live.loaded.subscribe();
            // The sender lives as long as `live`: this cannot fail.
            let _ = loaded.wait_for(|l| *l).await;
        }
    }
}
