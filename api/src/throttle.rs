//! Login throttling: after [`MAX_FAILURES`] failed logins for one handle, or
//! [`MAX_FAILURES_PER_ADDRESS`] from one client address, within [`WINDOW`], further logins
//! for it are answered 429 with `Retry-After` until the window ends, without checking the
//! password. A successful login clears its handle's count (not its address's).
//!
//! Memory is bounded: each table tracks at most [`MAX_TRACKED`] keys; when full, expired
//! windows go first, then the oldest. The address is the TCP peer's: behind a proxy it is
//! the proxy's, and the per-handle limit still holds.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 5;
pub const MAX_FAILURES_PER_ADDRESS: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const MAX_TRACKED: usize = 65_536;

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

struct Table<K> {
    limit: u32,
    windows: Mutex<HashMap<K, Window>>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Window>> {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long `key` must still wait, if it has used up its failures.
    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let windows = self.lock();
        let window = windows.get(key)?;
        let ends = window.started + WINDOW;
        (window.failures >= self.limit && ends > now).then(|| ends - now)
    }

    fn fail(&self, key: K, now: Instant) {
        let mut windows = self.lock();
        if !windows.contains_key(&key) && windows.len() >= MAX_TRACKED {
            windows.retain(|_, w| w.started + WINDOW > now);
            if windows.len() >= MAX_TRACKED {
                let oldest = windows
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    windows.remove(&oldest);
                }
            }
        }
        let window = windows.entry(key).or_insert(Window {
            started: now,
            failures: 0,
        });
        if window.started + WINDOW <= now {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures += 1;
    }

    fn clear(&self, key: &K) {
        self.lock().remove(key);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The login throttle of one process.
pub struct LoginThrottle {
    handles: Table<String>,
    addresses: Table<IpAddr>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            handles: Table::new(MAX_FAILURES),
            addresses: Table::new(MAX_FAILURES_PER_ADDRESS),
        }
    }
}

impl LoginThrottle {
    /// How long a login for `handle` from `address` must wait, if it must (whole seconds,
    /// rounded up, as `Retry-After` takes them).
    pub fn retry_after(&self, handle: &str, address: Option<IpAddr>) -> Option<u64> {
        let now = Instant::now();
        let by_handle = self.handles.wait(&key(handle), now);
        let by_address = address.and_then(|a| self.addresses.wait(&a, now));
        by_handle
            .max(by_address)
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }

    pub fn failed(&self, handle: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        self.handles.fail(key(handle), now);
        if let Some(address) = address {
            self.addresses.fail(address, now);
        }
    }

    pub fn succeeded(&self, handle: &str) {
        self.handles.clear(&key(handle));
    }

    /// Keys tracked (handles, addresses).
    pub fn tracked(&self) -> (usize, usize) {
        (self.handles.len(), self.addresses.len())
    }
}

/// Handles are one key however they are cased; an overlong one is cut (it names no user).
fn key(handle: &str) -> String {
    handle.chars().take(64).collect::<String>().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_is_held_after_its_failures_and_released_by_a_success() {
        let t = LoginThrottle::default();
        for _ in 0..MAX_FAILURES {
            assert_eq!(t.retry_after("Ann", None), None);
            t.failed("ann", None);
        }
        let wait = t.retry_after("ANN", None).unwrap();
        assert!(wait > 0 && wait <= WINDOW.as_secs());
        assert_eq!(t.retry_after("bob", None), None);
        t.succeeded("ann");
        assert_eq!(t.retry_after("ann", None), None);
    }

    #[test]
    fn an_address_is_held_across_handles() {
        let t = LoginThrottle::default();
        let address: IpAddr = "192.0.2.7".parse().unwrap();
        for n in 0..MAX_FAILURES_PER_ADDRESS {
            t.failed(&format!("user{n}"), Some(address));
        }
        assert!(t.retry_after("someone_else", Some(address)).is_some());
        assert_eq!(
            t.retry_after("someone_else", Some("192.0.2.8".parse().unwrap())),
            None
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let t = LoginThrottle::default();
        for n in 0..MAX_TRACKED + 10 {
            t.failed(&format!("h{n}"), None);
        }
        assert_eq!(t.tracked().0, MAX_TRACKED);
    }
}
