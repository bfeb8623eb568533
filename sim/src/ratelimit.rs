//! The exchange's per-key limit as GCRA: each key has a theoretical arrival time (TAT) that
//! advances one interval per admitted request. A request whose slot lies in the future waits for
//! it, as long as fewer than `burst_queue` requests are already waiting; past that it is refused
//! without touching the TAT, so refusals cost nothing and an idle key recovers on its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::RateLimitConfig;

pub(crate) enum Admission {
    Now,
    After(Duration),
    Refused { retry_after_secs: u64 },
}

pub(crate) struct Limiter {
    pub(crate) config: RateLimitConfig,
    interval_ns: u128,
    tat: Mutex<HashMap<String, Instant>>,
}

impl Limiter {
    pub(crate) fn new(config: RateLimitConfig) -> Self {
        let interval_ns = (1e9 / config.per_second).round() as u128;
        Limiter {
            config,
            interval_ns,
            tat: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn admit(&self, key: &str) -> Admission {
        // Rates so high that the interval rounds to zero nanoseconds are unlimited.
        if self.interval_ns == 0 {
            return Admission::Now;
        }
        let now = Instant::now();
        let mut tats = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        // A key seen before is updated in place: no allocation on the hot path.
        let slot = match tats.get_mut(key) {
            Some(slot) => slot,
            None => tats.entry(key.to_owned()).or_insert(now),
        };
        let tat = (*slot).max(now);
        let wait_ns = (tat - now).as_nanos();
        let next = tat + Duration::from_nanos(self.interval_ns as u64);
        if wait_ns == 0 {
            *slot = next;
            return Admission::Now;
        }
        // Slots reserved in the future, minus the one being served right now.
        let waiting = wait_ns.div_ceil(self.interval_ns) - 1;
        if waiting < u128::from(self.config.burst_queue) {
            *slot = next;
            Admission::After(Duration::from_nanos(wait_ns as u64))
        } else {
            let allowed_ns = u128::from(self.config.burst_queue) * self.interval_ns;
            let excess_ns = wait_ns.saturating_sub(allowed_ns);
            Admission::Refused {
                retry_after_secs: excess_ns.div_ceil(1_000_000_000).max(1) as u64,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst_queue: u32) -> Limiter {
        Limiter::new(RateLimitConfig {
            per_second,
            burst_queue,
            send_retry_after: true,
        })
    }

    #[test]
    fn one_served_then_queue_then_refusals() {
        let l = limiter(1.0, 2);
        assert!(matches!(l.admit("k"), Admission::Now));
        assert!(matches!(l.admit("k"), Admission::After(_)));
        assert!(matches!(l.admit("k"), Admission::After(_)));
        match l.admit("k") {
            Admission::Refused { retry_after_secs } => assert_eq!(retry_after_secs, 1),
            _ => panic!("expected a refusal"),
        }
        // Keys are independent.
        assert!(matches!(l.admit("other"), Admission::Now));
    }

    #[test]
    fn huge_rates_do_not_queue_for_long() {
        let l = limiter(1e6, 5);
        for _ in 0..5 {
            match l.admit("k") {
                Admission::Now => {}
                Admission::After(d) => assert!(d < Duration::from_millis(1)),
                Admission::Refused { .. } => {}
            }
        }
        let l = limiter(1e12, 0);
        for _ in 0..100 {
            assert!(matches!(l.admit("k"), Admission::Now));
        }
    }
}
