//! The write side: executes commands on the domain's aggregates through cqrs-es over the
//! postgres-es event store (no cqrs-es queries: projectors read the log themselves).
//!
//! Every command carries [`EventMetadata`] (actor, request id, time); an optimistic-concurrency
//! conflict on a stream is retried a few times after a short jittered pause, then answered 409.
//! Registration spans two streams and a table; see [`Commands::register`] for how a crash
//! anywhere in it never leaves a user who cannot log in.
//!
//! - [`store`]: the append (one statement shared by concurrent commands, the position
//!   back, projectors woken).
//! - [`batch`]: group commit, which the append and post ids share.
//! - [`directory`]: whether a user exists, from memory where that is safe, else the log.
//! - `registration`: register and login, and completing interrupted registrations.

pub mod batch;
pub mod directory;
pub mod error;
mod registration;
pub mod store;

pub use error::CommandError;
pub use registration::{Registered, Registration, COMPLETION_PAGE};

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework};
use murmur_domain::rules::validate_post_body;
use murmur_domain::{
    DomainError, EventMetadata, Follow, FollowCommand, Handle, MurmurUpcaster, Post, PostCommand,
    PostId, User, UserDirectory, UserId,
};
use murmur_projections::runtime::{Image, Wake};
use murmur_projections::Position;
use rand::Rng;
use sqlx::PgPool;

use crate::auth::Passwords;
use batch::Batcher;
use directory::Directory;
use store::{appending, Appender, EventRepository, Presumed};

type Store<A> = PersistedEventStore<EventRepository, A>;
type Framework<A> = CqrsFramework<A, Store<A>>;

/// An aggregate's two ways in: a first attempt on the presumed-empty stream, then, when
/// that was wrong or decided nothing, attempts on the loaded stream.
struct Frameworks<A: Aggregate> {
    presumed: CqrsFramework<A, Presumed<A>>,
    loaded: Framework<A>,
}

/// Attempts per command when its stream keeps changing underneath it.
pub const MAX_ATTEMPTS: u32 = 5;

/// A created post.
#[derive(Debug, Clone)]
pub struct CreatedPost {
    pub id: PostId,
    pub author_id: UserId,
    /// As stored (trimmed).
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub position: Position,
}

/// What every aggregate's event store shares.
struct Shared {
    pool: PgPool,
    wake: Wake,
    appender: Arc<Appender>,
}

fn store<A: Aggregate>(shared: &Shared) -> Store<A> {
    let repository = EventRepository::new(
        shared.pool.clone(),
        shared.wake.clone(),
        shared.appender.clone(),
    );
    PersistedEventStore::new_event_store(repository).with_upcasters(vec![Box::new(MurmurUpcaster)])
}

fn frameworks<A: Aggregate>(shared: &Shared, services: A::Services) -> Frameworks<A>
where
    A::Services: Clone,
{
    Frameworks {
        presumed: CqrsFramework::new(Presumed(store(shared)), vec![], services.clone()),
        loaded: CqrsFramework::new(store(shared), vec![], services),
    }
}

/// Post ids for the posts being created at the same moment, from one statement.
type PostIds = Batcher<(), Result<PostId, Arc<sqlx::Error>>>;

fn post_ids(pool: PgPool) -> PostIds {
    Batcher::start(1, 1024, move |requests: Vec<()>| {
        let pool = pool.clone();
        async move {
            let n = requests.len() as i64;
            let ids: Result<Vec<PostId>, sqlx::Error> =
                sqlx::query_scalar("SELECT nextval('post_ids') FROM generate_series(1, $1)")
                    .bind(n)
                    .fetch_all(&pool)
                    .await;
            match ids {
                Ok(ids) => ids.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(Arc::new(e)); requests.len()],
            }
        }
    })
}

/// Runs `command` on stream `id`: first on the stream presumed empty (one round trip when it
/// is), then, if that appended nothing (the stream was not empty, or the command needs its
/// state), on the loaded stream, retrying optimistic-concurrency conflicts (each retry
/// reloads it, so the command is decided again on the newer state). Answers the position of
/// the event it appended, or `None` when the command changed nothing.
async fn execute<A>(
    frameworks: &Frameworks<A>,
    id: &str,
    command: A::Command,
    metadata: &EventMetadata,
) -> Result<Option<Position>, AggregateError<DomainError>>
where
    A: Aggregate<Error = DomainError>,
    A::Command: Clone,
{
    let presumed =
        frameworks
            .presumed
            .execute_with_metadata(id, command.clone(), metadata.to_map());
    match appending(presumed).await {
        (Ok(()), Some(appended)) => return Ok(Some(appended)),
        // Decided on a state the stream may not have: decide again on the real one.
        (Ok(()), None)
        | (Err(AggregateError::UserError(_)), _)
        | (Err(AggregateError::AggregateConflict), _) => {}
        (Err(error), _) => return Err(error),
    }
    let (result, appended) = appending(retrying(&frameworks.loaded, id, command, metadata)).await;
    result.map(|()| appended)
}

async fn retrying<A>(
    framework: &Framework<A>,
    id: &str,
    command: A::Command,
    metadata: &EventMetadata,
) -> Result<(), AggregateError<DomainError>>
where
    A: Aggregate<Error = DomainError>,
    A::Command: Clone,
{
    let mut attempt = 1;
    loop {
        match framework
            .execute_with_metadata(id, command.clone(), metadata.to_map())
            .await
        {
            Err(AggregateError::AggregateConflict) if attempt < MAX_ATTEMPTS => {
                let pause = rand::rng().random_range(1..=5 * u64::from(attempt));
                tracing::debug!(aggregate = A::TYPE, id, attempt, "conflict; retrying");
                tokio::time::sleep(Duration::from_millis(pause)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The metadata of a command executed now on behalf of `actor` within request `request_id`.
/// The time is cut to microseconds, the precision it is stored with.
pub fn metadata(actor_id: Option<UserId>, request_id: &str) -> EventMetadata {
    let now = Utc::now();
    let time = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let request_id = if request_id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        request_id.to_string()
    };
    EventMetadata {
        actor_id,
        request_id,
        time,
    }
}

/// Executes commands; one per process, shared by all requests.
pub struct Commands {
    pub pool: PgPool,
    pub passwords: Passwords,
    directory: Arc<Directory>,
    post_ids: PostIds,
    handles: Frameworks<Handle>,
    users: Frameworks<User>,
    follows: Frameworks<Follow>,
    posts: Frameworks<Post>,
}

impl Commands {
    /// Commands over `pool`; `image` (the node's memory image) answers which users exist
    /// where it can, and `wake` is told of every append.
    pub fn new(pool: PgPool, image: Image, wake: Wake) -> Self {
        let directory = Arc::new(Directory::new(pool.clone(), image));
        let services: Arc<dyn UserDirectory> = directory.clone();
        let shared = Shared {
            appender: Arc::new(Appender::start(pool.clone(), wake.clone())),
            pool: pool.clone(),
            wake,
        };
        Self {
            handles: frameworks(&shared, ()),
            users: frameworks(&shared, ()),
            follows: frameworks(&shared, services),
            posts: frameworks(&shared, ()),
            passwords: Passwords::default(),
            post_ids: post_ids(pool.clone()),
            directory,
            pool,
        }
    }

    /// Follows (`follow`) or unfollows `followee` as `follower`. Answers the position of the
    /// edge's newest event (the one appended, or the existing one when nothing changed).
    pub async fn set_following(
        &self,
        follower: UserId,
        followee: UserId,
        follow: bool,
        request_id: &str,
    ) -> Result<Position, CommandError> {
        let command = if follow {
            FollowCommand::Follow {
                follower_id: follower,
                followee_id: followee,
            }
        } else {
            FollowCommand::Unfollow {
                follower_id: follower,
                followee_id: followee,
            }
        };
        let stream = Follow::stream_id(follower, followee);
        let metadata = metadata(Some(follower), request_id);
        match execute(&self.follows, &stream, command, &metadata).await? {
            Some(appended) => Ok(appended),
            // Already so: the edge's newest event says since when.
            None => Ok(self.position_of(Follow::TYPE, &stream).await?),
        }
    }

    /// Creates a post by `author` (who must exist) with `body` (trimmed, 1–280 characters).
    pub async fn create_post(
        &self,
        author: UserId,
        body: &str,
        request_id: &str,
    ) -> Result<CreatedPost, CommandError> {
        let body = validate_post_body(body)?;
        if !self
            .directory
            .user_exists(author)
            .await
            .map_err(DomainError::Lookup)?
        {
            return Err(DomainError::UnknownUser(author).into());
        }
        let id = self
            .post_ids
            .submit((), "post id")
            .await
            .map_err(anyhow::Error::new)?
            .map_err(|e| anyhow::anyhow!("allocating a post id: {e}"))?;
        let metadata = metadata(Some(author), request_id);
        let stream = Post::stream_id(id);
        let command = PostCommand::Create {
            post_id: id,
            author_id: author,
            body: body.clone(),
        };
        let position = match execute(&self.posts, &stream, command, &metadata).await? {
            Some(appended) => appended,
            None => self.position_of(Post::TYPE, &stream).await?,
        };
        Ok(CreatedPost {
            id,
            author_id: author,
            body,
            created_at: metadata.time,
            position,
        })
    }

    /// Deletes post `id` as `actor` (its author only; a deleted post is gone: 404).
    pub async fn delete_post(
        &self,
        actor: UserId,
        id: PostId,
        request_id: &str,
    ) -> Result<Position, CommandError> {
        let stream = Post::stream_id(id);
        let command = PostCommand::Delete {
            post_id: id,
            actor_id: actor,
        };
        let appended = execute(
            &self.posts,
            &stream,
            command,
            &metadata(Some(actor), request_id),
        )
        .await?;
        match appended {
            Some(appended) => Ok(appended),
            None => Ok(self.position_of(Post::TYPE, &stream).await?),
        }
    }

    /// The position of the newest event of a stream ([`Position::START`] for an empty one).
    pub async fn position_of(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Position, sqlx::Error> {
        let row = sqlx::query(
            "SELECT transaction_id::text AS xid, position FROM events
             WHERE aggregate_type = $1 AND aggregate_id = $2
             ORDER BY sequence DESC LIMIT 1",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Position::START);
        };
        Position::from_row(&row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_microsecond_precise_and_always_has_a_request_id() {
        let meta = metadata(Some(4), "");
        assert_eq!(meta.time.timestamp_subsec_nanos() % 1_000, 0);
        assert!(!meta.request_id.is_empty());
        assert_eq!(metadata(None, "abc").request_id, "abc");
        // What is stored reads back as the same time.
        let stored = EventMetadata::from_json(&meta.to_json()).unwrap();
        assert_eq!(stored, meta);
    }
}
