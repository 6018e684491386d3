//! Quotas, so that one tenant's flood cannot starve another. Per API key: a request rate (a
//! token bucket: `key_requests_per_second`, `key_request_burst`) checked when a request is
//! authenticated, on gRPC, REST and MCP alike; a rate of request bytes
//! (`key_bytes_per_second`); and a cap on the searches a key may have running at once
//! (`key_concurrent_searches`). Per memory, whichever key calls: a request rate
//! (`memory_requests_per_second`) and a rate of request bytes (`memory_bytes_per_second`).
//! Bytes are the request's protobuf size, whatever the transport, and are charged once the
//! request is decoded, which is also when its memory is known ([`super::principal`]). The
//! byte and per-memory buckets hold one second's worth; a request larger than that costs a
//! full bucket rather than never passing.
//!
//! Refusals are RESOURCE_EXHAUSTED with how long to wait (a google.rpc.RetryInfo detail),
//! counted per key or memory and limit. The bootstrap admin key and development mode are not
//! limited (they are the operator).

use super::Principal;
use crate::error::ServiceError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The quotas' settings (0: unlimited).
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitSettings {
    /// Requests per second per key, with `burst` of them at once (0: the rate).
    pub requests_per_second: u32,
    pub burst: u32,
    /// Searches (and contexts) one key may have running at once.
    pub concurrent_searches: u32,
    /// Request bytes per second per key.
    pub bytes_per_second: u32,
    /// Requests per second into one memory, from every key together.
    pub memory_requests_per_second: u32,
    /// Request bytes per second into one memory, from every key together.
    pub memory_bytes_per_second: u32,
}

/// Charges between sweeps of idle buckets: per-memory buckets are keyed by whatever memory
/// id a caller names, so buckets indistinguishable from fresh ones are dropped now and then.
const SWEEP_EVERY: u64 = 4096;

/// A token bucket per key (an API key id or a memory id) that one charge may take many
/// tokens from.
struct Bucket {
    limiter: DefaultKeyedRateLimiter<String>,
    capacity: NonZeroU32,
}

impl Bucket {
    /// `rate` tokens a second, holding one second's worth; `None` when `rate` is 0.
    fn per_second(rate: u32) -> Option<Self> {
        let rate = NonZeroU32::new(rate)?;
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate)),
            capacity: rate,
        })
    }

    /// Takes `tokens` (at most a full bucket) from `key`'s bucket, or says how long until
    /// they would be there.
    fn take(&self, key: &str, tokens: usize) -> Result<(), Duration> {
        let n = u32::try_from(tokens)
            .ok()
            .and_then(NonZeroU32::new)
            .map_or(NonZeroU32::MIN, |n| n.min(self.capacity));
        match self.limiter.check_key_n(&key.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until
                .wait_time_from(DefaultClock::default().now())
                .max(Duration::from_millis(1))),
            // n is at most the capacity, so this cannot happen; refusing would be wrong.
            Err(_) => Ok(()),
        }
    }
}

/// Each key's search slots.
type SearchSlots = Mutex<HashMap<String, Arc<Semaphore>>>;

/// The quotas in force.
pub struct Limits {
    requests: Option<DefaultKeyedRateLimiter<String>>,
    searches: Option<(u32, SearchSlots)>,
    key_bytes: Option<Bucket>,
    memory_requests: Option<Bucket>,
    memory_bytes: Option<Bucket>,
    charges: AtomicU64,
    refused: prometheus::IntCounterVec,
    memory_refused: prometheus::IntCounterVec,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = |bucket: &Option<Bucket>| bucket.as_ref().map(|b| b.capacity);
        f.debug_struct("Limits")
            .field("requests", &self.requests.is_some())
            .field("searches", &self.searches.as_ref().map(|(n, _)| n))
            .field("key_bytes", &rate(&self.key_bytes))
            .field("memory_requests", &rate(&self.memory_requests))
            .field("memory_bytes", &rate(&self.memory_bytes))
            .finish()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(LimitSettings::default())
    }
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        let requests = NonZeroU32::new(settings.requests_per_second).map(|rate| {
            let burst = NonZeroU32::new(settings.burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let searches = (settings.concurrent_searches > 0)
            .then(|| (settings.concurrent_searches, Mutex::new(HashMap::new())));
        Self {
            requests,
            searches,
            key_bytes: Bucket::per_second(settings.bytes_per_second),
            memory_requests: Bucket::per_second(settings.memory_requests_per_second),
            memory_bytes: Bucket::per_second(settings.memory_bytes_per_second),
            charges: AtomicU64::new(0),
            refused: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "memd_quota_refusals_total",
                    "Requests refused with RESOURCE_EXHAUSTED by a per-key quota (limit = requests | bytes | searches)",
                ),
                &["key_id", "limit"],
            )
            .expect("valid metric"),
            memory_refused: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "memd_memory_quota_refusals_total",
                    "Requests refused with RESOURCE_EXHAUSTED by a per-memory quota (limit = requests | bytes)",
                ),
                &["memory_id", "limit"],
            )
            .expect("valid metric"),
        }
    }

    /// The refusal counters, for the metrics registry.
    pub fn refusals(&self) -> [prometheus::IntCounterVec; 2] {
        [self.refused.clone(), self.memory_refused.clone()]
    }

    /// Charges a decoded request of `bytes` into `memory_id` ("" for none) to the caller's
    /// byte bucket and to the memory's request and byte buckets.
    pub fn charge(
        &self,
        principal: &Principal,
        memory_id: &str,
        bytes: usize,
    ) -> Result<(), ServiceError> {
        let Some(key_id) = &principal.key_id else {
            return Ok(());
        };
        if self.charges.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for bucket in [&self.memory_requests, &self.memory_bytes]
                .into_iter()
                .flatten()
            {
                bucket.limiter.retain_recent();
            }
        }
        if let Some(bucket) = &self.key_bytes {
            bucket.take(key_id, bytes).map_err(|wait| {
                self.refused.with_label_values(&[key_id, "bytes"]).inc();
                throttled(
                    format!("api key {key_id} is over its request bytes (key_bytes_per_second)"),
                    wait,
                )
            })?;
        }
        if memory_id.is_empty() {
            return Ok(());
        }
        for (bucket, tokens, limit, setting) in [
            (
                &self.memory_requests,
                1,
                "requests",
                "memory_requests_per_second",
            ),
            (
                &self.memory_bytes,
                bytes,
                "bytes",
                "memory_bytes_per_second",
            ),
        ] {
            let Some(bucket) = bucket else { continue };
            bucket.take(memory_id, tokens).map_err(|wait| {
                self.memory_refused
                    .with_label_values(&[memory_id, limit])
                    .inc();
                throttled(
                    format!("memory {memory_id} is over its request {limit} ({setting})"),
                    wait,
                )
            })?;
        }
        Ok(())
    }

    /// Takes one request from the caller's bucket; refused with the wait until the next.
    pub fn admit(&self, principal: &Principal) -> Result<(), ServiceError> {
        let (Some(limiter), Some(key_id)) = (&self.requests, &principal.key_id) else {
            return Ok(());
        };
        limiter.check_key(key_id).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            self.refused.with_label_values(&[key_id, "requests"]).inc();
            throttled(
                format!("api key {key_id} is over its request rate (key_requests_per_second)"),
                wait.max(Duration::from_millis(1)),
            )
        })
    }

    /// A slot for one search by the caller, held until dropped; refused when the key already
    /// has `key_concurrent_searches` running.
    pub fn search(
        &self,
        principal: &Principal,
    ) -> Result<Option<OwnedSemaphorePermit>, ServiceError> {
        let (Some((limit, slots)), Some(key_id)) = (&self.searches, &principal.key_id) else {
            return Ok(None);
        };
        let semaphore = slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key_id.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(*limit as usize)))
            .clone();
        match semaphore.try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                self.refused.with_label_values(&[key_id, "searches"]).inc();
                Err(ServiceError::Throttled {
                    message: format!(
                        "api key {key_id} already has {limit} searches running (key_concurrent_searches)"
                    ),
                    retry_after: Duration::from_millis(100),
                })
            }
        }
    }
}

/// The response header a quota refusal carries its retry delay in, in milliseconds: what
/// [`hold`] reads.
pub const RETRY_AFTER_HEADER: &str = "memd-retry-after-ms";

/// The longest a refusal is held back.
const MAX_HOLD: Duration = Duration::from_secs(1);
/// The least: at a high rate the delay until the next token is a few milliseconds, and a
/// client sending on many streams at once would still refuse-loop thousands of times a
/// second (measured: 5k/s from 32 streams at 200/s with the bare delay).
const MIN_HOLD: Duration = Duration::from_millis(100);

/// The retry delay a response's [`RETRY_AFTER_HEADER`] value says.
pub fn retry_after(header: Option<&tonic::codegen::http::HeaderValue>) -> Option<Duration> {
    let ms: u64 = header?.to_str().ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// Adds a refusal's delay to an HTTP response (REST, MCP): HTTP's `Retry-After` in whole
/// seconds, rounded up, and [`RETRY_AFTER_HEADER`] in milliseconds.
pub fn insert_retry_headers(headers: &mut tonic::codegen::http::HeaderMap, delay: Duration) {
    use tonic::codegen::http::{HeaderValue, header};
    let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    headers.insert(RETRY_AFTER_HEADER, HeaderValue::from(ms));
}

/// Holds a quota refusal back for its retry delay (at least 100 ms, at most a second, and
/// never past the caller's deadline, `left`) before it is sent. A refusal does no work, but a client that
/// ignores the delay and asks again at once would otherwise turn refusals into a tight loop
/// whose CPU the other tenants need (docs/reliability.md, noisy tenants); held, each of its
/// connections asks at most as fast as the quota refills. Waiting costs a timer, not a thread.
pub async fn hold(delay: Duration, left: Option<Duration>) {
    let mut delay = delay.clamp(MIN_HOLD, MAX_HOLD);
    if let Some(left) = left {
        // Answer before the deadline, so the caller still hears why.
        delay = delay.min(left.saturating_sub(Duration::from_millis(20)));
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// A refusal that says how long to wait, in its message and as a RetryInfo detail.
fn throttled(reason: String, wait: Duration) -> ServiceError {
    ServiceError::Throttled {
        message: format!("{reason}; retry in {} ms", wait.as_millis().max(1)),
        retry_after: wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::StoredPolicy;

    fn key(id: &str) -> Principal {
        Principal::with_policy(id.into(), &StoredPolicy::default())
    }

    #[test]
    fn each_key_has_its_own_bucket_and_the_operator_none() {
        let limits = Limits::new(LimitSettings {
            requests_per_second: 1,
            burst: 3,
            ..Default::default()
        });
        let (a, b) = (key("ka"), key("kb"));
        for _ in 0..3 {
            limits.admit(&a).unwrap();
        }
        match limits.admit(&a) {
            Err(ServiceError::Throttled { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
            }
            other => panic!("the fourth request in a second passed: {other:?}"),
        }
        limits.admit(&b).unwrap();
        let operator = Principal::superuser();
        for _ in 0..100 {
            limits.admit(&operator).unwrap();
        }
        assert_eq!(
            limits.refusals()[0]
                .with_label_values(&["ka", "requests"])
                .get(),
            1
        );
    }

    #[test]
    fn searches_beyond_the_cap_are_refused_until_one_ends() {
        let limits = Limits::new(LimitSettings {
            concurrent_searches: 2,
            ..Default::default()
        });
        let a = key("ka");
        let first = limits.search(&a).unwrap();
        let _second = limits.search(&a).unwrap();
        assert!(matches!(
            limits.search(&a),
            Err(ServiceError::Throttled { .. })
        ));
        assert!(limits.search(&key("kb")).unwrap().is_some());
        drop(first);
        assert!(limits.search(&a).unwrap().is_some());
    }

    #[test]
    fn bytes_are_charged_per_key_and_a_request_larger_than_the_bucket_still_passes() {
        let limits = Limits::new(LimitSettings {
            bytes_per_second: 1000,
            ..Default::default()
        });
        let (a, b) = (key("ka"), key("kb"));
        limits.charge(&a, "", 600).unwrap();
        match limits.charge(&a, "", 600) {
            Err(ServiceError::Throttled {
                retry_after,
                message,
            }) => {
                assert!(message.contains("key_bytes_per_second"), "{message}");
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
            }
            other => panic!("1200 bytes in a second passed a 1000-byte bucket: {other:?}"),
        }
        // Another key has its own bucket; a request bigger than a whole bucket costs one.
        limits.charge(&b, "", 50_000).unwrap();
        assert!(limits.charge(&b, "", 1).is_err());
        for _ in 0..10 {
            limits.charge(&Principal::superuser(), "", 50_000).unwrap();
        }
        assert_eq!(
            limits.refusals()[0]
                .with_label_values(&["ka", "bytes"])
                .get(),
            1
        );
    }

    #[test]
    fn a_memory_is_limited_whichever_key_calls() {
        let limits = Limits::new(LimitSettings {
            memory_requests_per_second: 2,
            memory_bytes_per_second: 10_000,
            ..Default::default()
        });
        let (a, b) = (key("ka"), key("kb"));
        limits.charge(&a, "m1", 10).unwrap();
        limits.charge(&b, "m1", 10).unwrap();
        match limits.charge(&a, "m1", 10) {
            Err(ServiceError::Throttled { message, .. }) => {
                assert!(message.contains("memory m1"), "{message}");
                assert!(message.contains("memory_requests_per_second"), "{message}");
            }
            other => panic!("a third request into m1 passed: {other:?}"),
        }
        // Other memories, and requests naming none, are not held back by m1.
        limits.charge(&a, "m2", 10).unwrap();
        limits.charge(&a, "", 10).unwrap();
        // The byte bucket refuses on its own.
        limits.charge(&a, "m3", 9_000).unwrap();
        match limits.charge(&b, "m3", 9_000) {
            Err(ServiceError::Throttled { message, .. }) => {
                assert!(message.contains("memory_bytes_per_second"), "{message}")
            }
            other => panic!("18 kB into m3 passed a 10 kB bucket: {other:?}"),
        }
        let refused = &limits.refusals()[1];
        assert_eq!(refused.with_label_values(&["m1", "requests"]).get(), 1);
        assert_eq!(refused.with_label_values(&["m3", "bytes"]).get(), 1);
    }
}
