//! The key's pace: one request every `1/--rate` seconds (up to `--burst` back to back), slowed to
//! what the exchange actually admits when it pushes back.
//!
//! A 429 means the key asked for more than the exchange grants. The pacer then measures the rate
//! at which the exchange was admitting requests just before (replies that were not refusals, over
//! the last two seconds) and settles at 95 % of it, so a `--rate` set above the real limit
//! converges on it after one push-back instead of oscillating under it. Only after a minute
//! without push-back does it creep back up (5 % every 10 s, never above `--rate`). A 429 or a 503
//! pauses the whole key, not just the request that heard it, for the `Retry-After` the exchange
//! gave, or one interval (at least a second) after a 429, or a growing maintenance back-off.
//!
//! A GCRA on tokio's clock rather than governor's limiter: the rate here changes at run time, and
//! tokio's paused clock lets the tests below run minutes of exchange traffic in milliseconds.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::Pause;

/// The window over which the exchange's admitted rate is measured.
const MEASURE_WINDOW: Duration = Duration::from_secs(2);
/// Replies, and the time they span, needed before a measurement is trusted (else the spacing
/// doubles).
const MIN_SAMPLES: usize = 4;
const MIN_SPAN: Duration = Duration::from_millis(200);
/// Share of the measured limit the pacer settles at.
const SETTLE_SHARE: f64 = 0.95;
/// The widest spacing the pacer ever uses: one request every 10 s.
const MAX_INTERVAL: Duration = Duration::from_secs(10);
/// Quiet time before the pace creeps back up, and the step it takes then.
const RECOVERY_QUIET: Duration = Duration::from_secs(60);
const RECOVERY_STEP_EVERY: Duration = Duration::from_secs(10);
const RECOVERY_FACTOR: f64 = 1.05;
/// Maintenance back-off without a Retry-After: 2 s, doubling per consecutive 503, up to 60 s.
const MAINTENANCE_FIRST: Duration = Duration::from_secs(2);
const MAINTENANCE_MAX: Duration = Duration::from_secs(60);

pub struct Pacer {
    configured: Duration,
    burst: u32,
    state: Mutex<State>,
}

struct State {
    /// The spacing in force (at least `configured`).
    interval: Duration,
    /// GCRA theoretical arrival time: the next request is on time at `tat - (burst-1)·interval`.
    tat: Instant,
    paused_until: Option<Instant>,
    /// When recent admitted replies came back (bounded).
    admitted: VecDeque<Instant>,
    last_push_back: Option<Instant>,
    last_raise: Option<Instant>,
    maintenance_streak: u32,
}

impl Pacer {
    /// `rate` must be positive and finite (the flag parser bounds it).
    pub fn new(rate: f64, burst: u32) -> Self {
        // Rounded up to the nanosecond, so the pace never exceeds --rate.
        let configured = Duration::from_nanos((1e9 / rate).ceil() as u64);
        Pacer {
            configured,
            burst: burst.max(1),
            state: Mutex::new(State {
                interval: configured,
                tat: Instant::now(),
                paused_until: None,
                admitted: VecDeque::new(),
                last_push_back: None,
                last_raise: None,
                maintenance_streak: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rate in force, in requests per second.
    pub fn current_rate(&self) -> f64 {
        1.0 / self.state().interval.as_secs_f64()
    }

    /// Waits until the key may send one more request.
    pub async fn admit(&self) {
        loop {
            let now = Instant::now();
            let wait = {
                let mut s = self.state();
                match s.paused_until {
                    Some(until) if until > now => Err(until),
                    _ => {
                        s.paused_until = None;
                        let tolerance = s.interval * (self.burst - 1);
                        let earliest = s.tat.checked_sub(tolerance).unwrap_or(now);
                        let slot = now.max(earliest);
                        s.tat = s.tat.max(slot) + s.interval;
                        Ok(slot)
                    }
                }
            };
            match wait {
                Err(paused_until) => tokio::time::sleep_until(paused_until).await,
                Ok(slot) => {
                    tokio::time::sleep_until(slot).await;
                    // A push-back that came in while this request waited for its slot holds it.
                    let paused = self.state().paused_until;
                    if paused.is_none_or(|p| p <= Instant::now()) {
                        return;
                    }
                }
            }
        }
    }

    /// A reply the exchange did not refuse for load: it admitted the request.
    pub fn on_admitted(&self) {
        let now = Instant::now();
        let mut s = self.state();
        s.maintenance_streak = 0;
        s.admitted.push_back(now);
        while s.admitted.len() > 4096
            || s.admitted
                .front()
                .is_some_and(|&t| t + MEASURE_WINDOW < now)
        {
            s.admitted.pop_front();
        }
        let quiet = s
            .last_push_back
            .is_some_and(|t| now.duration_since(t) >= RECOVERY_QUIET);
        let step_due = s
            .last_raise
            .is_none_or(|t| now.duration_since(t) >= RECOVERY_STEP_EVERY);
        if s.interval > self.configured && quiet && step_due {
            s.interval = s.interval.div_f64(RECOVERY_FACTOR).max(self.configured);
            s.last_raise = Some(now);
            tracing::info!(
                rate = 1.0 / s.interval.as_secs_f64(),
                "no push-back for a while; pace raised"
            );
        }
    }

    /// The exchange pushed back on the key (429 or 503). Returns the pause it now observes; the
    /// replies of one burst count once.
    pub fn on_push_back(&self, pause: Pause) -> Duration {
        let now = Instant::now();
        let mut s = self.state();
        if let Some(until) = s.paused_until
            && until > now
        {
            if let Some(longer) = pause.retry_after().map(|r| now + r).filter(|&t| t > until) {
                s.paused_until = Some(longer);
                s.tat = longer;
            }
            return s.paused_until.map_or(Duration::ZERO, |u| u - now);
        }
        let wait = match pause {
            Pause::RateLimited(retry_after) => {
                let measured = admitted_rate(&s.admitted, now);
                let settled = match measured {
                    Some(rate) => Duration::from_nanos((1e9 / (rate * SETTLE_SHARE)).ceil() as u64),
                    None => s.interval * 2,
                };
                // Never faster on a 429 than before it.
                s.interval = settled.max(s.interval).min(MAX_INTERVAL);
                tracing::warn!(
                    measured_rate = measured,
                    rate = 1.0 / s.interval.as_secs_f64(),
                    "rate limited (429): the whole key pauses, then paces at what the exchange admitted"
                );
                retry_after.unwrap_or(s.interval.max(Duration::from_secs(1)))
            }
            Pause::Maintenance(retry_after) => {
                s.maintenance_streak += 1;
                let backoff = MAINTENANCE_FIRST
                    .saturating_mul(1 << (s.maintenance_streak - 1).min(6))
                    .min(MAINTENANCE_MAX);
                let wait = retry_after.unwrap_or(backoff);
                tracing::warn!(
                    pause_ms = wait.as_millis() as u64,
                    "exchange under maintenance (503): the whole key pauses"
                );
                wait
            }
        };
        s.paused_until = Some(now + wait);
        s.tat = now + wait;
        s.last_push_back = Some(now);
        s.admitted.clear();
        wait
    }
}

/// Admitted requests per second over the measuring window, if there are enough replies to trust:
/// the median gap between replies, which a saturated exchange spaces at its limit (the median
/// ignores the gap of a pause of our own, and jitter). Replies arriving together (an exchange that
/// serves in parallel) fall back to replies over their span.
fn admitted_rate(admitted: &VecDeque<Instant>, now: Instant) -> Option<f64> {
    let recent: Vec<Instant> = admitted
        .iter()
        .copied()
        .filter(|&t| t + MEASURE_WINDOW >= now)
        .collect();
    let (first, last) = (*recent.first()?, *recent.last()?);
    let span = last.duration_since(first);
    if recent.len() < MIN_SAMPLES || span < MIN_SPAN {
        return None;
    }
    let mut gaps: Vec<Duration> = recent.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2];
    Some(if median >= Duration::from_millis(1) {
        1.0 / median.as_secs_f64()
    } else {
        (recent.len() - 1) as f64 / span.as_secs_f64()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The exchange's side (as the simulator and the spec have it): GCRA at `limit` per second
    /// with `queue` requests held instead of refused.
    struct Exchange {
        interval: Duration,
        queue: u32,
        tat: Mutex<Instant>,
    }

    impl Exchange {
        fn new(limit: f64, queue: u32) -> Self {
            Exchange {
                interval: Duration::from_secs_f64(1.0 / limit),
                queue,
                tat: Mutex::new(Instant::now()),
            }
        }

        /// When the request is served, or `None` for a 429.
        fn arrive(&self) -> Option<Instant> {
            let now = Instant::now();
            let mut tat = self.tat.lock().unwrap();
            let slot = (*tat).max(now);
            let waiting = (slot - now).as_secs_f64() / self.interval.as_secs_f64();
            if waiting > f64::from(self.queue) {
                return None;
            }
            *tat = slot + self.interval;
            Some(slot)
        }
    }

    /// Runs `workers` concurrent callers for `span` of (virtual) time; returns (served, 429s).
    async fn traffic(pacer: Arc<Pacer>, exchange: Arc<Exchange>, span: Duration) -> (u64, u64) {
        let end = Instant::now() + span;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (pacer, exchange) = (pacer.clone(), exchange.clone());
                tokio::spawn(async move {
                    let (mut ok, mut refused) = (0, 0);
                    while Instant::now() < end {
                        pacer.admit().await;
                        if Instant::now() >= end {
                            break;
                        }
                        match exchange.arrive() {
                            Some(served) => {
                                tokio::time::sleep_until(served + Duration::from_millis(20)).await;
                                pacer.on_admitted();
                                ok += 1;
                            }
                            None => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                pacer.on_push_back(Pause::RateLimited(None));
                                refused += 1;
                            }
                        }
                    }
                    (ok, refused)
                })
            })
            .collect();
        let mut totals = (0, 0);
        for t in tasks {
            let (ok, refused) = t.await.unwrap();
            totals.0 += ok;
            totals.1 += refused;
        }
        totals
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_above_the_limit_settles_just_under_it() {
        // --rate 20 --burst 5 against the exchange's 10/s with 5 queued (the old pacer settled
        // near 5/s and took 64 s for what 30 s could do), and a rate four times the limit.
        for configured in [20.0, 40.0] {
            let pacer = Arc::new(Pacer::new(configured, 5));
            let exchange = Arc::new(Exchange::new(10.0, 5));
            let (served, refused) = traffic(pacer.clone(), exchange, Duration::from_secs(50)).await;
            let rate = pacer.current_rate();
            assert!(
                (9.0..=10.0).contains(&rate),
                "--rate {configured}: settled at {rate}/s"
            );
            assert!(
                served >= 450,
                "--rate {configured}: {served} served in 50 s"
            );
            assert!(refused <= 4, "--rate {configured}: {refused} refusals");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_under_the_limit_is_kept_and_never_refused() {
        let pacer = Arc::new(Pacer::new(5.0, 1));
        let exchange = Arc::new(Exchange::new(10.0, 5));
        let (served, refused) = traffic(pacer.clone(), exchange, Duration::from_secs(20)).await;
        assert_eq!(refused, 0);
        assert!((99..=101).contains(&served), "{served}");
        assert_eq!(pacer.current_rate(), 5.0);
    }

    #[tokio::test(start_paused = true)]
    async fn push_back_pauses_the_key_for_retry_after_and_counts_once_per_burst() {
        let pacer = Pacer::new(100.0, 1);
        let start = Instant::now();
        let first = pacer.on_push_back(Pause::RateLimited(Some(Duration::from_secs(3))));
        assert_eq!(first, Duration::from_secs(3));
        let rate_after_first = pacer.current_rate();
        // The rest of the burst: no further slowdown, but a longer Retry-After extends the pause.
        pacer.on_push_back(Pause::RateLimited(None));
        assert_eq!(pacer.current_rate(), rate_after_first);
        pacer.on_push_back(Pause::RateLimited(Some(Duration::from_secs(5))));
        pacer.admit().await;
        assert!(Instant::now() - start >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn maintenance_pauses_the_key_longer_each_time_without_slowing_it() {
        let pacer = Pacer::new(10.0, 1);
        assert_eq!(
            pacer.on_push_back(Pause::Maintenance(None)),
            MAINTENANCE_FIRST
        );
        tokio::time::sleep(MAINTENANCE_FIRST).await;
        assert_eq!(
            pacer.on_push_back(Pause::Maintenance(None)),
            MAINTENANCE_FIRST * 2
        );
        assert_eq!(pacer.current_rate(), 10.0);
        let start = Instant::now();
        pacer.admit().await;
        assert!(Instant::now() - start >= MAINTENANCE_FIRST * 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

        /// Whatever rate and burst the flags allow, and whatever the exchange answers, the pacer
        /// never panics, never runs above --rate, and never holds a request longer than the
        /// longest pause it can impose.
        #[test]
        fn any_flags_and_any_push_back_are_safe(
            rate in 0.1f64..=100_000.0,
            burst in 1u32..=100,
            events in proptest::collection::vec((0u8..4, 0u64..=300_000), 0..40),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                let pacer = Pacer::new(rate, burst);
                for (kind, ms) in events {
                    let retry_after = (ms % 3 != 0).then(|| Duration::from_millis(ms));
                    match kind {
                        0 => {
                            let start = Instant::now();
                            pacer.admit().await;
                            let waited = Instant::now() - start;
                            let longest = Duration::from_secs(300)
                                .max(MAINTENANCE_MAX)
                                .max(MAX_INTERVAL * burst)
                                + MAX_INTERVAL;
                            proptest::prop_assert!(waited <= longest, "{waited:?}");
                        }
                        1 => pacer.on_admitted(),
                        2 => {
                            pacer.on_push_back(Pause::RateLimited(retry_after));
                        }
                        _ => {
                            pacer.on_push_back(Pause::Maintenance(retry_after));
                        }
                    }
                    let current = pacer.current_rate();
                    proptest::prop_assert!(current > 0.0 && current <= rate * (1.0 + 1e-9), "{current}");
                }
                Ok(())
            })?;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_pace_recovers_slowly_after_a_quiet_minute() {
        let pacer = Arc::new(Pacer::new(10.0, 1));
        pacer.on_push_back(Pause::RateLimited(None));
        let slowed = pacer.current_rate();
        assert!(slowed <= 5.0, "{slowed}");
        let exchange = Arc::new(Exchange::new(1000.0, 5));
        traffic(pacer.clone(), exchange, Duration::from_secs(55)).await;
        assert_eq!(pacer.current_rate(), slowed, "no change within a minute");
        let exchange = Arc::new(Exchange::new(1000.0, 5));
        traffic(pacer.clone(), exchange, Duration::from_secs(200)).await;
        assert_eq!(pacer.current_rate(), 10.0, "back to --rate, never above");
    }
}
