//! Failed sign-ins, counted per client address and per account over a sliding
//! window: past the limit, sign-ins from there (or to that account) are
//! refused with 429 until the oldest failure leaves the window. Per instance
//! and in memory: an attacker spreading over instances gets at most one
//! window's failures per instance.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept before the oldest half of the keys is forgotten.
const MAX_KEYS: usize = 100_000;

/// Counts failures per key.
#[derive(Debug)]
pub struct FailureLimiter {
    limit: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailureLimiter {
    /// At most `limit` failures per key within `window`.
    pub fn new(limit: usize, window: Duration) -> Self {
        Self {
            limit,
            window,
            failures: Mutex::default(),
        }
    }

    /// None when `key` may try now; else how long until it may.
    pub fn wait_for(&self, key: &str) -> Option<Duration> {
        let mut failures = self.failures.lock().ok()?;
        let times = failures.get_mut(key)?;
        let now = Instant::now();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() < self.limit {
            return None;
        }
        let oldest = *times.front()?;
        Some(self.window.saturating_sub(now.duration_since(oldest)))
    }

    /// Records a failure of `key`.
    pub fn failed(&self, key: &str) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() >= MAX_KEYS {
            let now = Instant::now();
            let window = self.window;
            failures.retain(|_, t| t.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let times = failures.entry(key.to_owned()).or_default();
        times.push_back(Instant::now());
        while times.len() > self.limit {
            times.pop_front();
        }
    }

    /// Forgets `key`'s failures (a successful sign-in to the account).
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_until_the_window_passes() {
        let limiter = FailureLimiter::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            assert_eq!(limiter.wait_for("a"), None);
            limiter.failed("a");
        }
        let wait = limiter.wait_for("a").unwrap();
        assert!(wait > Duration::from_millis(100) && wait <= Duration::from_millis(200));
        assert_eq!(limiter.wait_for("b"), None, "other keys are not affected");
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(limiter.wait_for("a"), None);
        limiter.failed("a");
        limiter.succeeded("a");
        assert_eq!(limiter.wait_for("a"), None);
    }
}
