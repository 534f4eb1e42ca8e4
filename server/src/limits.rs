//! Per-user limits: request and query-submission rates (token buckets that
//! answer 429 with `Retry-After`) and caps on open SSE streams, per user and
//! in total. The defaults leave room for a browser resyncing 1,000 pending
//! commands at once (two batches) and for the benches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::{AppError, ErrorKind};

/// Buckets kept before idle full ones are dropped.
const MAX_BUCKETS: usize = 10_000;

/// A token bucket per user: `per_second` sustained, up to `burst` at once.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        RateLimiter {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens from `user`'s bucket at `now`, or says how long
    /// to wait until they would be there.
    pub fn take(&self, user: Uuid, cost: u32, now: Instant) -> Result<(), Duration> {
        let cost = f64::from(cost);
        let mut buckets = self.buckets.lock().expect("rate limiter");
        if buckets.len() > MAX_BUCKETS {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(user).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let refill = now.saturating_duration_since(bucket.updated).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else {
            let missing = cost.min(self.burst) - bucket.tokens;
            Err(Duration::from_secs_f64(missing / self.per_second))
        }
    }

    /// [`RateLimiter::take`] now, as a 429 problem with `retry_after` seconds.
    pub fn check(&self, user: Uuid, cost: u32, what: &str) -> Result<(), AppError> {
        self.take(user, cost, Instant::now())
            .map_err(|wait| too_many(format!("too many {what}; slow down"), wait))
    }
}

/// A 429 problem; the response gets `Retry-After` from `retry_after`.
pub fn too_many(detail: String, wait: Duration) -> AppError {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    AppError::new(ErrorKind::TooManyRequests, detail).with("retry_after", seconds.max(1))
}

/// Open SSE streams per user and in total.
pub struct StreamSlots {
    per_user: usize,
    total: usize,
    open: Mutex<(usize, HashMap<Uuid, usize>)>,
}

/// Holds one stream's slot; dropping it frees the slot.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    user: Uuid,
}

impl StreamSlots {
    pub fn new(per_user: usize, total: usize) -> Arc<Self> {
        Arc::new(StreamSlots {
            per_user,
            total,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot for a new stream of `user`, or 429.
    pub fn acquire(self: &Arc<Self>, user: Uuid) -> Result<StreamSlot, AppError> {
        let mut open = self.open.lock().expect("stream slots");
        let mine = open.1.get(&user).copied().unwrap_or(0);
        if mine >= self.per_user {
            return Err(too_many(
                format!(
                    "at most {} event streams per user are open at once",
                    self.per_user
                ),
                Duration::from_secs(5),
            ));
        }
        if open.0 >= self.total {
            return Err(too_many(
                format!(
                    "the server holds its maximum of {} event streams",
                    self.total
                ),
                Duration::from_secs(5),
            ));
        }
        open.0 += 1;
        *open.1.entry(user).or_insert(0) += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            user,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("stream slots");
        open.0 = open.0.saturating_sub(1);
        if let Some(count) = open.1.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.1.remove(&self.user);
            }
        }
    }
}

/// The limits of one server.
pub struct Limits {
    pub requests: RateLimiter,
    pub queries: RateLimiter,
    pub streams: Arc<StreamSlots>,
}

impl Limits {
    pub fn from_config(config: &crate::Config) -> Self {
        Limits {
            requests: RateLimiter::new(config.rate_limit, config.rate_limit.saturating_mul(2)),
            queries: RateLimiter::new(config.query_rate_limit, config.query_burst),
            streams: StreamSlots::new(config.sse_per_user, config.sse_total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(10, 20);
        let (ann, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let start = Instant::now();
        for _ in 0..20 {
            limiter.take(ann, 1, start).unwrap();
        }
        let wait = limiter.take(ann, 1, start).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Others are not affected; time refills.
        limiter.take(bob, 20, start).unwrap();
        limiter
            .take(ann, 5, start + Duration::from_millis(500))
            .unwrap();
        assert!(limiter
            .take(ann, 1, start + Duration::from_millis(500))
            .is_err());
        // A cost above the burst is never possible at once but reports a finite wait.
        assert!(limiter
            .take(bob, 100, start + Duration::from_secs(10))
            .is_err());
    }

    #[test]
    fn stream_slots_are_freed_on_drop() {
        let slots = StreamSlots::new(2, 3);
        let (ann, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let a1 = slots.acquire(ann).unwrap();
        let _a2 = slots.acquire(ann).unwrap();
        assert!(slots.acquire(ann).is_err(), "per user");
        let _b1 = slots.acquire(bob).unwrap();
        assert!(slots.acquire(bob).is_err(), "in total");
        drop(a1);
        let _b2 = slots.acquire(bob).unwrap();
    }
}
