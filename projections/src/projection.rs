//! The projections murmur keeps, in one place: [`Kind`] names each one and its tables,
//! [`AnyState`] holds any of their in-memory states, so that the runtime and `replay`
//! drive all three through one interface.

use sqlx::PgConnection;

use crate::state::{FeedsState, Fold, PostsState, ProfilesState};
use crate::store::{Durable, Settings, Snapshot};
use crate::StoredEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Profiles,
    Posts,
    Feeds,
}

macro_rules! by_kind {
    ($kind:expr, $s:ident => $e:expr) => {
        match $kind {
            Kind::Profiles => {
                type $s = ProfilesState;
                $e
            }
            Kind::Posts => {
                type $s = PostsState;
                $e
            }
            Kind::Feeds => {
                type $s = FeedsState;
                $e
            }
        }
    };
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Profiles, Kind::Posts, Kind::Feeds];

    /// Its place in [`Kind::ALL`].
    pub fn index(self) -> usize {
        match self {
            Kind::Profiles => 0,
            Kind::Posts => 1,
            Kind::Feeds => 2,
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The checkpoint name (one of `read_model::names`).
    pub fn name(self) -> &'static str {
        by_kind!(self, S => S::NAME)
    }

    /// The tables of its durable copy, unqualified.
    pub fn tables(self) -> &'static [&'static str] {
        by_kind!(self, S => S::TABLES)
    }

    /// The aggregate types whose events it applies.
    pub fn aggregate_types(self) -> &'static [&'static str] {
        by_kind!(self, S => S::AGGREGATE_TYPES)
    }

    /// Indexes only queries read (built after a rebuild's bulk load).
    pub fn deferred_indexes(self) -> &'static [&'static str] {
        by_kind!(self, S => S::DEFERRED_INDEXES)
    }

    /// The settings its contents depend on, as stored with its checkpoint.
    pub fn identity(self, settings: &Settings) -> serde_json::Value {
        by_kind!(self, S => S::identity(settings))
    }

    pub fn empty(self, settings: &Settings) -> AnyState {
        match self {
            Kind::Profiles => AnyState::Profiles(ProfilesState::empty(settings)),
            Kind::Posts => AnyState::Posts(PostsState::empty(settings)),
            Kind::Feeds => AnyState::Feeds(FeedsState::empty(settings)),
        }
    }

    /// Loads the durable copy as `snapshot` sees it.
    pub async fn load(
        self,
        snapshot: &mut Snapshot,
        settings: &Settings,
    ) -> anyhow::Result<AnyState> {
        Ok(match self {
            Kind::Profiles => AnyState::Profiles(ProfilesState::load(snapshot, settings).await?),
            Kind::Posts => AnyState::Posts(PostsState::load(snapshot, settings).await?),
            Kind::Feeds => AnyState::Feeds(FeedsState::load(snapshot, settings).await?),
        })
    }
}

/// The in-memory state of one projection.
// One per projection and node, moved only when installed: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum AnyState {
    Profiles(ProfilesState),
    Posts(PostsState),
    Feeds(FeedsState),
}

/// Row changes of one projection, ready to write.
pub enum AnyChanges {
    Profiles(<ProfilesState as Fold>::Changes),
    Posts(<PostsState as Fold>::Changes),
    Feeds(<FeedsState as Fold>::Changes),
}

macro_rules! each_state {
    ($state:expr, $s:ident => $e:expr) => {
        match $state {
            AnyState::Profiles($s) => $e,
            AnyState::Posts($s) => $e,
            AnyState::Feeds($s) => $e,
        }
    };
}

impl AnyState {
    pub fn kind(&self) -> Kind {
        match self {
            AnyState::Profiles(_) => Kind::Profiles,
            AnyState::Posts(_) => Kind::Posts,
            AnyState::Feeds(_) => Kind::Feeds,
        }
    }

    /// Applies one event if it is of the projection's aggregate types.
    pub fn apply(&mut self, event: &StoredEvent) {
        if self
            .kind()
            .aggregate_types()
            .contains(&event.aggregate_type.as_str())
        {
            each_state!(self, s => s.apply(event))
        }
    }

    pub fn take_changes(&mut self) -> AnyChanges {
        match self {
            AnyState::Profiles(s) => AnyChanges::Profiles(s.take_changes()),
            AnyState::Posts(s) => AnyChanges::Posts(s.take_changes()),
            AnyState::Feeds(s) => AnyChanges::Feeds(s.take_changes()),
        }
    }

    pub fn set_tracking(&mut self, on: bool) {
        each_state!(self, s => s.set_tracking(on))
    }

    /// See [`Fold::complete_next`].
    pub fn complete_next(&mut self) {
        each_state!(self, s => s.complete_next())
    }

    /// See [`Fold::journaled`].
    pub fn journaled(&self) -> bool {
        each_state!(self, s => s.journaled())
    }

    pub fn pending_rows(&self) -> usize {
        each_state!(self, s => s.pending_rows())
    }

    /// Writes every table of the state into empty tables.
    pub async fn write_all(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        each_state!(self, s => s.write_all(conn).await)
    }

    pub fn as_profiles(&self) -> Option<&ProfilesState> {
        match self {
            AnyState::Profiles(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_posts(&self) -> Option<&PostsState> {
        match self {
            AnyState::Posts(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_feeds(&self) -> Option<&FeedsState> {
        match self {
            AnyState::Feeds(s) => Some(s),
            _ => None,
        }
    }
}

impl AnyChanges {
    /// Writes the changes inside the caller's transaction.
    pub async fn write(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        match self {
            AnyChanges::Profiles(c) => ProfilesState::write_changes(conn, c).await,
            AnyChanges::Posts(c) => PostsState::write_changes(conn, c).await,
            AnyChanges::Feeds(c) => FeedsState::write_changes(conn, c).await,
        }
    }
}
