//! (to be filled in) Executes commands on the aggregates through cqrs-es/postgres-es.

use sqlx::PgPool;

pub struct Commands {
    pub pool: PgPool,
}

impl Commands {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}
