//! The settings both binaries (`murmur` and `replay`) take, as one set of flags: where the
//! database is, and the celebrity threshold the feeds are built with (a rebuild must use
//! the live projectors' value, or the feeds differ).

use crate::db::DEFAULT_DATABASE_URL;
use crate::state::feeds::DEFAULT_CELEBRITY_THRESHOLD;

#[derive(clap::Args, Debug, Clone)]
pub struct SharedArgs {
    /// PostgreSQL connection string (its value is not shown in --help: it may hold a password).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,

    /// Authors with more followers than this are not fanned out on write (read-time merge
    /// instead; back to fan-out at 10% below). Part of the feeds projection's identity.
    #[arg(
        long,
        env = "MURMUR_CELEBRITY_THRESHOLD",
        default_value_t = DEFAULT_CELEBRITY_THRESHOLD,
        global = true
    )]
    pub celebrity_threshold: i64,
}
