//! Client-side limits for one model endpoint: requests in flight, and a token budget per
//! minute (a bucket refilled continuously). Callers block until both allow the call.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Concurrency and token-rate limits shared by every job using an endpoint.
#[derive(Debug)]
pub struct Limits {
    max_concurrent: usize,
    tokens_per_minute: u32,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    tokens: f64,
    refilled: Instant,
}

/// Held while a request is in flight.
pub struct Permit<'a> {
    limits: &'a Limits,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limits.lock().in_flight -= 1;
        self.limits.freed.notify_one();
    }
}

impl Limits {
    pub fn new(max_concurrent: usize, tokens_per_minute: u32) -> Self {
        Self {
            max_concurrent: max_concurrent.max(1),
            tokens_per_minute,
            state: Mutex::new(State {
                in_flight: 0,
                tokens: f64::from(tokens_per_minute),
                refilled: Instant::now(),
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until a request of about `tokens` tokens may start.
    pub fn acquire(&self, tokens: u64) -> Permit<'_> {
        let mut state = self.lock();
        loop {
            let mut wait = Duration::from_millis(100);
            if self.tokens_per_minute > 0 {
                let budget = f64::from(self.tokens_per_minute);
                let now = Instant::now();
                let refill = now.duration_since(state.refilled).as_secs_f64() / 60.0 * budget;
                state.tokens = (state.tokens + refill).min(budget);
                state.refilled = now;
                // A request larger than the whole budget waits for a full bucket.
                let needed = (tokens as f64).min(budget);
                if state.tokens < needed {
                    let missing = needed - state.tokens;
                    wait = Duration::from_secs_f64(missing / budget * 60.0).max(wait);
                } else if state.in_flight < self.max_concurrent {
                    state.tokens -= needed;
                    state.in_flight += 1;
                    return Permit { limits: self };
                }
            } else if state.in_flight < self.max_concurrent {
                state.in_flight += 1;
                return Permit { limits: self };
            }
            state = self
                .freed
                .wait_timeout(state, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn never_more_in_flight_than_allowed() {
        let limits = Arc::new(Limits::new(2, 0));
        let peak = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (limits, peak, now) = (limits.clone(), peak.clone(), now.clone());
                std::thread::spawn(move || {
                    let _permit = limits.acquire(1);
                    let current = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(current, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn token_budget_delays_the_next_call() {
        // 6000 tokens per minute = 100 per second: after spending the bucket, 50 more
        // tokens take about half a second.
        let limits = Limits::new(4, 6000);
        drop(limits.acquire(6000));
        let started = Instant::now();
        drop(limits.acquire(50));
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
    }
}
