//! The one LISTEN loop: follows a notification channel on the primary until shut down,
//! reconnecting when the connection drops; on a hot standby (which refuses `LISTEN`) hands
//! over to the listener's own way of following, and switches back when it is promoted. The
//! projectors' wake-ups ([`crate::runtime`]) and the checkpoint view
//! ([`crate::checkpoints`]) both run on it.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;

use super::standby;
use crate::shutdown::Shutdown;

/// What a [`follow`] loop does with its channel.
#[async_trait::async_trait]
pub trait Listening: Send + Sync {
    /// The channel, and the name warnings give the loop.
    const CHANNEL: &'static str;
    const WHAT: &'static str;

    /// After each (re)connection, once `LISTEN` has taken effect: whatever changed before
    /// was not notified.
    async fn connected(&self) {}

    /// One notification's payload.
    fn heard(&self, payload: &str);

    /// How often [`Listening::tick`] runs while connected (never if `None`).
    fn tick_every(&self) -> Option<Duration> {
        None
    }

    async fn tick(&self) {}

    /// While the database is a hot standby: returns once it is promoted, a query fails, or
    /// `shutdown` is told.
    async fn on_standby(&self, shutdown: &mut Shutdown);
}

/// Runs `listening` on `pool` until `shutdown` is told; waits `retry` after each failure.
pub async fn follow<L: Listening>(
    pool: &PgPool,
    listening: &L,
    mut shutdown: Shutdown,
    retry: Duration,
) {
    while !shutdown.is_shutdown() {
        match standby::in_recovery(pool).await {
            Ok(true) => listening.on_standby(&mut shutdown).await,
            Ok(false) => match connect(pool, L::CHANNEL).await {
                Ok(listener) => follow_connection(listener, listening, &mut shutdown).await,
                Err(e) => tracing::warn!(error = %e, "{} cannot LISTEN", L::WHAT),
            },
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "{} cannot connect", L::WHAT),
        }
        if shutdown.pause(retry).await {
            return;
        }
    }
}

async fn connect(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Follows one connection until it fails or `shutdown` is told.
async fn follow_connection<L: Listening>(
    mut listener: PgListener,
    listening: &L,
    shutdown: &mut Shutdown,
) {
    listening.connected().await;
    // An hour stands for "never" when the listener has no tick.
    let every = listening.tick_every();
    let period = every.unwrap_or(Duration::from_secs(3600));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // try_recv, not recv: recv would reconnect silently, losing what was notified
            // meanwhile without a `connected` to catch up.
            received = listener.try_recv() => match received {
                Ok(Some(notification)) => listening.heard(notification.payload()),
                Ok(None) => {
                    tracing::warn!("{} lost its connection", L::WHAT);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "{} failed", L::WHAT);
                    return;
                }
            },
            _ = ticks.tick(), if every.is_some() => listening.tick().await,
            () = shutdown.recv() => return,
        }
    }
}
