//! Whether a user exists, for the commands that need one (follow, post).
//!
//! A user exists once `UserRegistered` is in their stream, and users are never removed, so
//! a user the node's memory image has a profile of exists for good: that answer costs no
//! round trip. A user the image does not know (yet: it trails the log a little, or is
//! still loading) is looked up in the log, so follows never depend on a projection's lag.

use cqrs_es::Aggregate;
use murmur_domain::{User, UserDirectory, UserId};
use murmur_projections::runtime::Image;
use sqlx::PgPool;

pub struct Directory {
    pool: PgPool,
    image: Image,
}

impl Directory {
    pub fn new(pool: PgPool, image: Image) -> Self {
        Self { pool, image }
    }
}

#[async_trait::async_trait]
impl UserDirectory for Directory {
    async fn user_exists(&self, id: UserId) -> Result<bool, String> {
        if self.image.knows_user(id) {
            return Ok(true);
        }
        sqlx::query_scalar(
            "SELECT EXISTS(SELECT 1 FROM events WHERE aggregate_type = $1 AND aggregate_id = $2)",
        )
        .bind(User::TYPE)
        .bind(User::stream_id(id))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| format!("checking whether user {id} exists: {e}"))
    }
}
