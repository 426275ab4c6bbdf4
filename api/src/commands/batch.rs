//! Group commit: requests that arrive while a statement runs are answered together by the
//! next one, so many concurrent commands share one round trip, one transaction and one WAL
//! flush instead of paying for each. Nothing waits on a timer: a worker takes whatever is
//! queued the moment it is free, so a lone request goes at once and a busy moment makes
//! larger batches.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

type Queue<T, R> = mpsc::UnboundedReceiver<(T, oneshot::Sender<R>)>;

/// Sends items to workers that run them in batches.
pub struct Batcher<T, R> {
    queue: mpsc::UnboundedSender<(T, oneshot::Sender<R>)>,
}

/// The batch workers are gone (the runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the {0} batcher has stopped")]
pub struct Stopped(pub &'static str);

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts `workers` tasks, each running at most `max` queued items at a time through
    /// `run`, which answers one result per item, in order.
    pub fn start<F, Fut>(workers: usize, max: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let run = Arc::new(run);
        for _ in 0..workers.max(1) {
            let (receiver, run) = (receiver.clone(), run.clone());
            tokio::spawn(async move {
                while let Some((items, replies)) = next_batch(&receiver, max).await {
                    for (reply, result) in replies.into_iter().zip(run(items).await) {
                        // The requester may have gone (its request was cancelled): fine.
                        let _ = reply.send(result);
                    }
                }
            });
        }
        Self { queue }
    }

    /// Queues `item` and waits for its result.
    pub async fn submit(&self, item: T, name: &'static str) -> Result<R, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((item, reply)).map_err(|_| Stopped(name))?;
        answer.await.map_err(|_| Stopped(name))
    }
}

/// Waits for one queued item, then takes whatever else is queued, up to `max` in all. One
/// worker waits at a time (the others are running their batches).
async fn next_batch<T, R>(
    receiver: &Mutex<Queue<T, R>>,
    max: usize,
) -> Option<(Vec<T>, Vec<oneshot::Sender<R>>)> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let (mut items, mut replies) = (vec![first.0], vec![first.1]);
    while items.len() < max {
        match receiver.try_recv() {
            Ok((item, reply)) => {
                items.push(item);
                replies.push(reply);
            }
            Err(_) => break,
        }
    }
    Some((items, replies))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_request_gets_its_own_answer_and_busy_moments_share_batches() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Arc::new(Batcher::start(2, 8, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move {
                tokio::task::yield_now().await;
                items.into_iter().map(|i| i * 10).collect::<Vec<_>>()
            }
        }));
        let mut waiting = Vec::new();
        for i in 0..100 {
            let batcher = batcher.clone();
            waiting.push(tokio::spawn(async move { batcher.submit(i, "test").await }));
        }
        for (i, answer) in waiting.into_iter().enumerate() {
            assert_eq!(answer.await.unwrap().unwrap(), i as u32 * 10);
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.iter().all(|&n| (1..=8).contains(&n)));
        assert!(sizes.len() < 100, "some requests shared a batch: {sizes:?}");
    }
}
