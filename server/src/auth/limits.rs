//! Per-key quotas, so that one tenant's flood cannot starve another: a request rate per API
//! key (a token bucket: `key_requests_per_second`, `key_request_burst`) checked when a
//! request is authenticated, on gRPC, REST and MCP alike, and a cap on the searches each key
//! may have running at once (`key_concurrent_searches`). Refusals are RESOURCE_EXHAUSTED
//! with how long to wait, and are counted per key and limit. The bootstrap admin key and
//! development mode are not limited (they are the operator).

use super::Principal;
use crate::error::ServiceError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The quotas' settings (0: unlimited).
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitSettings {
    pub requests_per_second: u32,
    pub burst: u32,
    pub concurrent_searches: u32,
}

/// Each key's search slots.
type SearchSlots = Mutex<HashMap<String, Arc<Semaphore>>>;

/// The quotas in force.
pub struct Limits {
    requests: Option<DefaultKeyedRateLimiter<String>>,
    searches: Option<(u32, SearchSlots)>,
    refused: prometheus::IntCounterVec,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("requests", &self.requests.is_some())
            .field("searches", &self.searches.as_ref().map(|(n, _)| n))
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
            refused: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "memd_quota_refusals_total",
                    "Requests refused with RESOURCE_EXHAUSTED by a per-key quota (limit = requests | searches)",
                ),
                &["key_id", "limit"],
            )
            .expect("valid metric"),
        }
    }

    /// The refusal counter, for the metrics registry.
    pub fn refusals(&self) -> prometheus::IntCounterVec {
        self.refused.clone()
    }

    /// Takes one request from the caller's bucket; refused with the wait until the next.
    pub fn admit(&self, principal: &Principal) -> Result<(), ServiceError> {
        let (Some(limiter), Some(key_id)) = (&self.requests, &principal.key_id) else {
            return Ok(());
        };
        limiter.check_key(key_id).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            self.refused.with_label_values(&[key_id, "requests"]).inc();
            ServiceError::Throttled {
                message: format!(
                    "api key {key_id} is over its request rate (key_requests_per_second); retry in {} ms",
                    wait.as_millis().max(1)
                ),
                retry_after: wait.max(Duration::from_millis(1)),
            }
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
            concurrent_searches: 0,
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
            limits
                .refusals()
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
}
