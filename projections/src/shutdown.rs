//! Stopping a node's tasks, in the manner of mini-redis's `shutdown.rs`: a [`Stop`] tells
//! every [`Shutdown`] handle made from it at once; a task checks [`Shutdown::is_shutdown`]
//! between steps, or awaits [`Shutdown::recv`] (or [`Shutdown::pause`]) in a `select!`.
//! Dropping the `Stop` counts as telling.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Tells every [`Shutdown`] made from it to stop.
#[derive(Debug, Clone)]
pub struct Stop(Arc<watch::Sender<bool>>);

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}

impl Stop {
    pub fn new() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }

    /// A stop told when `signal` completes (a process's SIGTERM), from a task of its own.
    pub fn on(signal: impl Future<Output = ()> + Send + 'static) -> Self {
        let stop = Self::new();
        let told = stop.clone();
        tokio::spawn(async move {
            signal.await;
            told.stop();
        });
        stop
    }

    /// A handle for one task.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }

    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// One task's view of its [`Stop`].
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Whether it has been told to stop.
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once told to stop (at once if it already was).
    pub async fn recv(&mut self) {
        // An error means the `Stop` is gone: stopping too.
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    /// Sleeps for `duration`; true if told to stop meanwhile (or before).
    pub async fn pause(&mut self, duration: Duration) -> bool {
        tokio::select! {
            () = self.recv() => true,
            () = tokio::time::sleep(duration) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_handle_hears_one_stop_even_after_it() {
        let stop = Stop::new();
        let (mut a, b) = (stop.shutdown(), stop.shutdown());
        assert!(!a.is_shutdown());
        assert!(!a.pause(Duration::from_millis(1)).await);
        stop.stop();
        a.recv().await;
        assert!(b.is_shutdown());
        let mut late = stop.shutdown();
        assert!(late.pause(Duration::from_secs(60)).await);
    }

    #[tokio::test]
    async fn a_dropped_stop_stops() {
        let stop = Stop::new();
        let mut handle = stop.shutdown();
        drop(stop);
        handle.recv().await;
    }
}
