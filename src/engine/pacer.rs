//! The key's pace: one request every `1/--rate` seconds (up to `--burst` back to back), slowed to
//! what the exchange actually admits when it pushes back, and raised again when it stops.
//!
//! A 429 means the key asked for more than the exchange grants. The pacer then takes the lower of
//! two estimates of what the exchange admits: the rate at which it was answering just before
//! (replies that were not refusals, over the last two seconds; an exchange that queues excess
//! requests answers at exactly its limit), taken at 95 %; or, with too few replies to measure,
//! half the pace that was refused. That pace is remembered as too fast. From then on the pace
//! searches between the fastest pace the exchange served without push-back and the slowest it
//! refused: every `PROBE_AFTER` admitted replies without a 429 it moves halfway up that bracket,
//! and once the bracket is narrower than 10 % it stays at its lower end. The refused pace is
//! forgotten after `REFUSED_MEMORY` without a 429, and the pace climbs again (25 % a step, never
//! above `--rate`), so a limit that lifts is found again.
//!
//! A 429 or a 503 pauses the whole key, not just the request that heard it, for the `Retry-After`
//! the exchange gave, or else one interval of the new pace (doubling while 429s follow each other
//! with no request admitted between), or a growing maintenance back-off. A 429 for a request that
//! left under an older pace says nothing about the pace in force: it pauses the key but does not
//! slow it again. Slots handed out before a pause keep their spacing after it: the pace never lets
//! two requests leave closer than its interval allows (`--burst` aside).
//!
//! A GCRA on tokio's clock rather than governor's limiter: the rate here changes at run time, a
//! new governor limiter would start with a full burst (two requests back to back across the
//! change), and tokio's paused clock lets the tests below run minutes of exchange traffic in
//! milliseconds.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::Pause;

/// The window over which the exchange's admitted rate is measured (longer at slow paces).
const MEASURE_WINDOW: Duration = Duration::from_secs(2);
/// Replies, and the time they span, needed before a measurement is trusted.
const MIN_SAMPLES: usize = 4;
const MIN_SPAN: Duration = Duration::from_millis(200);
/// Share of the measured limit the pacer settles at.
const SETTLE_SHARE: f64 = 0.95;
/// Without a measurement, a 429 halves the pace.
const BLIND_CUT: f64 = 0.5;
/// The widest spacing the pacer ever uses: one request every 10 s.
const MAX_INTERVAL: Duration = Duration::from_secs(10);
/// Admitted replies, and time, at one pace before it counts as served and the pace moves up.
const PROBE_AFTER: u32 = 4;
const PROBE_MIN_TIME: Duration = Duration::from_millis(500);
/// Replies at this share of the pace or faster: the exchange kept up with it.
const KEPT_UP_SHARE: f64 = 0.9;
/// The bracket between served and refused paces below which the search stops.
const SETTLED_RATIO: f64 = 1.10;
/// How long a refused pace is remembered, and the step the pace climbs by once it is forgotten.
const REFUSED_MEMORY: Duration = Duration::from_secs(30);
const CLIMB_FACTOR: f64 = 1.25;
/// Maintenance back-off without a Retry-After: 2 s, doubling per consecutive 503, up to 60 s.
const MAINTENANCE_FIRST: Duration = Duration::from_secs(2);
const MAINTENANCE_MAX: Duration = Duration::from_secs(60);

/// Whether a request goes ahead of others waiting for the key's pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// A cancel-all (or the listing a run cannot start without): the next free slot.
    Now,
    /// A listing that proves or records: only a slot no urgent request wants.
    CanWait,
}

/// Which pace a request was spaced at: a push-back for a request of an older pace says nothing of
/// the pace in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaceTicket(u64);

pub struct Pacer {
    configured: Duration,
    burst: u32,
    state: Mutex<State>,
    /// Wakes the requests waiting for a slot when the slots are handed out anew.
    reslotted: tokio::sync::Notify,
}

struct State {
    /// The spacing in force (at least `configured`).
    interval: Duration,
    /// GCRA theoretical arrival time: the next request is on time at `tat - (burst-1)·interval`.
    tat: Instant,
    paused_until: Option<Instant>,
    /// Bumped when the pace slows or the key pauses: a slot handed out before is taken again.
    epoch: u64,
    /// The latest slot a request left at.
    last_departure: Instant,
    /// When recent admitted replies came back (bounded).
    admitted: VecDeque<Instant>,
    /// When the pace in force was set, how many times it has changed, and the replies admitted
    /// since.
    changed_at: Instant,
    generation: u64,
    admitted_since_change: u32,
    /// When the replies were last measured against the pace: the measurement sorts the recent
    /// replies, so it runs a few times a second, not once per reply.
    measured_at: Instant,
    /// The fastest spacing the exchange served without push-back.
    served: Option<Duration>,
    /// The slowest spacing the exchange refused, and when it last did.
    refused: Option<(Duration, Instant)>,
    /// 429s in a row with nothing admitted between.
    rate_limited_streak: u32,
    maintenance_streak: u32,
}

impl Pacer {
    /// `rate` must be positive and finite (the flag parser bounds it).
    pub fn new(rate: f64, burst: u32) -> Self {
        // Rounded up to the nanosecond, so the pace never exceeds --rate.
        let configured = Duration::from_nanos((1e9 / rate).ceil() as u64);
        let now = Instant::now();
        Pacer {
            configured,
            burst: burst.max(1),
            state: Mutex::new(State {
                interval: configured,
                tat: now,
                paused_until: None,
                epoch: 0,
                last_departure: now,
                admitted: VecDeque::new(),
                changed_at: now,
                generation: 0,
                admitted_since_change: 0,
                measured_at: now,
                served: None,
                refused: None,
                rate_limited_streak: 0,
                maintenance_streak: 0,
            }),
            reslotted: tokio::sync::Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rate in force, in requests per second.
    pub fn current_rate(&self) -> f64 {
        1.0 / self.state().interval.as_secs_f64()
    }

    /// Waits until the key may send one more request; returns the pace it was spaced at, which
    /// the request's reply hands back to `on_push_back`. An urgent request (a cancel-all) takes
    /// the next free slot, however far ahead; one that can wait (a listing) takes a slot only when
    /// it is due at once, so it never holds a slot an urgent request could have had.
    pub async fn admit(&self, urgency: Urgency) -> PaceTicket {
        if urgency == Urgency::CanWait {
            return self.admit_when_free().await;
        }
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
                        Ok((slot, PaceTicket(s.generation), s.epoch))
                    }
                }
            };
            match wait {
                Err(paused_until) => tokio::time::sleep_until(paused_until).await,
                Ok((slot, ticket, epoch)) => {
                    // A push-back or a new pace while this request waits for its slot: the slot
                    // was spaced for a pace no longer in force, and it takes another.
                    let reslotted = self.reslotted.notified();
                    tokio::pin!(reslotted);
                    reslotted.as_mut().enable();
                    let current = self.state().epoch == epoch;
                    if current {
                        tokio::select! {
                            _ = tokio::time::sleep_until(slot) => {}
                            _ = &mut reslotted => {}
                        }
                    }
                    // Woken early though nothing changed: the slot is still this request's.
                    let early = {
                        let s = self.state();
                        s.epoch == epoch && Instant::now() < slot
                    };
                    if early {
                        tokio::time::sleep_until(slot).await;
                    }
                    let mut s = self.state();
                    if s.epoch == epoch && s.paused_until.is_none_or(|p| p <= Instant::now()) {
                        s.last_departure = s.last_departure.max(slot);
                        return ticket;
                    }
                }
            }
        }
    }

    async fn admit_when_free(&self) -> PaceTicket {
        loop {
            let now = Instant::now();
            let (due, epoch) = {
                let mut s = self.state();
                match s.paused_until {
                    Some(until) if until > now => (until, s.epoch),
                    _ => {
                        s.paused_until = None;
                        let tolerance = s.interval * (self.burst - 1);
                        let earliest = s.tat.checked_sub(tolerance).unwrap_or(now);
                        if earliest <= now {
                            s.tat = s.tat.max(now) + s.interval;
                            s.last_departure = s.last_departure.max(now);
                            return PaceTicket(s.generation);
                        }
                        (earliest, s.epoch)
                    }
                }
            };
            let reslotted = self.reslotted.notified();
            tokio::pin!(reslotted);
            reslotted.as_mut().enable();
            if self.state().epoch == epoch {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = &mut reslotted => {}
                }
            }
        }
    }

    /// Moves the pace to `interval` (bounded by --rate and the widest spacing).
    fn set_interval(&self, s: &mut State, interval: Duration, now: Instant) {
        let interval = interval.clamp(self.configured, MAX_INTERVAL);
        if interval != s.interval {
            // Slots already handed out were spaced for the old pace: every waiting request takes
            // a new one, spaced from the last departure. Slowing down also spends the burst
            // credit, so nothing leaves back to back right after a push-back.
            s.epoch += 1;
            s.tat = if interval > s.interval {
                s.last_departure + interval * self.burst
            } else {
                s.tat.min(s.last_departure + interval)
            };
            self.reslotted.notify_waiters();
            s.interval = interval;
            s.changed_at = now;
            s.generation += 1;
            s.admitted_since_change = 0;
        }
    }

    /// A reply the exchange did not refuse for load: it admitted the request.
    pub fn on_admitted(&self) {
        let now = Instant::now();
        let mut s = self.state();
        s.maintenance_streak = 0;
        s.rate_limited_streak = 0;
        s.admitted.push_back(now);
        let window = measure_window(s.interval);
        while s.admitted.len() > 4096 || s.admitted.front().is_some_and(|&t| t + window < now) {
            s.admitted.pop_front();
        }
        s.admitted_since_change = s.admitted_since_change.saturating_add(1);
        let long_enough = s.admitted_since_change >= PROBE_AFTER
            && now.duration_since(s.changed_at) >= PROBE_MIN_TIME.max(s.interval * PROBE_AFTER);
        // Served means answered as fast as it was asked: an exchange that queues what exceeds
        // its limit answers more slowly than the pace long before it refuses anything. (A run
        // that sends less than the pace allows is not served either: it has no use for more.)
        if !long_enough || now.duration_since(s.measured_at) < MIN_SPAN {
            return;
        }
        s.measured_at = now;
        let answered = admitted_rate(&s.admitted, s.changed_at, measure_window(s.interval), now);
        let Some(answered) = answered else {
            return;
        };
        if answered < KEPT_UP_SHARE * rate_of(s.interval) {
            // Answered more slowly than asked, at length: the exchange queues what exceeds its
            // limit (or the run has no use for this pace). Back to the fastest pace served, or
            // to the rate it answers at, and this pace counts as refused: the pace in force
            // says what the key really sends, and no queue fills up until a 429 says so.
            let asked = s.interval;
            let back = s
                .served
                .filter(|&served| served > asked)
                .unwrap_or_else(|| interval_of(answered));
            s.refused = Some((asked, now));
            self.set_interval(&mut s, back, now);
            return;
        }
        // This pace was served: the search moves up from it.
        let interval = s.interval;
        s.served = Some(s.served.map_or(interval, |served| served.min(interval)));
        if s.refused
            .is_some_and(|(_, at)| now.duration_since(at) >= REFUSED_MEMORY)
        {
            s.refused = None;
        }
        if interval <= self.configured {
            return;
        }
        let next = match s.refused {
            // Halfway (in rate) between this pace and the refused one, unless they are close.
            Some((refused, _)) => {
                let (rate, too_fast) = (rate_of(interval), rate_of(refused));
                if too_fast / rate <= SETTLED_RATIO {
                    s.admitted_since_change = 0;
                    s.changed_at = now;
                    return;
                }
                interval_of((rate + too_fast) / 2.0)
            }
            None => interval.div_f64(CLIMB_FACTOR),
        };
        self.set_interval(&mut s, next, now);
        tracing::info!(
            rate = rate_of(s.interval),
            "no push-back at this pace; pace raised"
        );
    }

    /// The exchange pushed back on the key (429 or 503) for a request `admit` let through with
    /// `ticket`. Returns the pause it now observes; the replies of one burst count once.
    pub fn on_push_back(&self, pause: Pause, ticket: PaceTicket) -> Duration {
        let now = Instant::now();
        let mut s = self.state();
        if let Some(until) = s.paused_until
            && until > now
        {
            if let Some(longer) = pause.retry_after().map(|r| now + r).filter(|&t| t > until) {
                s.paused_until = Some(longer);
                s.tat = s.tat.max(longer);
            }
            return s.paused_until.map_or(Duration::ZERO, |u| u - now);
        }
        let wait = match pause {
            Pause::RateLimited(retry_after) => {
                s.rate_limited_streak += 1;
                // A request that left under an older (faster) pace says nothing of this one.
                if ticket.0 == s.generation {
                    let refused = s.interval;
                    // Only replies under this pace measure it: older ones came at an older pace.
                    let since = s.changed_at;
                    let measured =
                        admitted_rate(&s.admitted, since, measure_window(s.interval), now);
                    // A pace the exchange served, slower than the one it just refused, is where
                    // the search falls back to; a served pace this fast or faster is out of date
                    // (the limit came down).
                    let served = s.served.filter(|&served| served > refused);
                    s.served = served;
                    let (estimate, limit) = match measured {
                        // Answered more slowly than it was asked: an exchange that queues what
                        // exceeds its limit answers at exactly it.
                        Some(rate) if rate < rate_of(refused) => {
                            (interval_of(rate * SETTLE_SHARE), interval_of(rate))
                        }
                        _ => (refused.div_f64(BLIND_CUT), refused),
                    };
                    // At least a step slower than the refused pace. Without a measurement, never
                    // slower than a pace served; with one, its 95 % wins even over a served pace
                    // (served at the limit, a queueing exchange stays full and refuses at once).
                    let mut next = estimate.max(refused.div_f64(SETTLE_SHARE));
                    if let Some(served) = served
                        && limit == refused
                    {
                        next = next.min(served);
                    }
                    // The search's upper end: the measured limit, unless it contradicts a pace
                    // already served (an exchange that refuses rather than queues answers below
                    // its limit while it refuses).
                    let refused = match served {
                        Some(served) if limit > served => refused,
                        _ => limit,
                    };
                    s.refused = Some((refused, now));
                    self.set_interval(&mut s, next, now);
                    s.admitted.clear();
                    tracing::warn!(
                        measured_rate = measured,
                        rate = rate_of(s.interval),
                        "rate limited (429): the whole key pauses, then paces at what the exchange admits"
                    );
                }
                let doubling = 1u32 << (s.rate_limited_streak - 1).min(6);
                retry_after.unwrap_or(s.interval.saturating_mul(doubling).min(MAX_INTERVAL))
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
        // Every waiting request takes a new slot after the pause, spaced from the last departure
        // and with no burst credit: the pause never lets two requests out closer than the pace.
        s.epoch += 1;
        s.tat = (now + wait).max(s.last_departure + s.interval) + s.interval * (self.burst - 1);
        self.reslotted.notify_waiters();
        wait
    }
}

/// At a slow pace two seconds hold too few replies to measure: the window spans enough intervals.
fn measure_window(interval: Duration) -> Duration {
    MEASURE_WINDOW.max(interval * (MIN_SAMPLES as u32 + 2))
}

fn rate_of(interval: Duration) -> f64 {
    1.0 / interval.as_secs_f64()
}

fn interval_of(rate: f64) -> Duration {
    Duration::from_nanos((1e9 / rate).ceil() as u64)
}

/// Admitted requests per second over the measuring window (replies since `since` only), if there
/// are enough replies to trust:
/// the median gap between replies, which a saturated exchange spaces at its limit (the median
/// ignores the gap of a pause of our own, and jitter). Replies arriving together (an exchange that
/// serves in parallel) fall back to replies over their span.
fn admitted_rate(
    admitted: &VecDeque<Instant>,
    since: Instant,
    window: Duration,
    now: Instant,
) -> Option<f64> {
    let recent: Vec<Instant> = admitted
        .iter()
        .copied()
        .filter(|&t| t + window >= now && t >= since)
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
                        let ticket = pacer.admit(Urgency::Now).await;
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
                                pacer.on_push_back(Pause::RateLimited(None), ticket);
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
            // Each probe above the limit costs the requests in flight at that moment.
            assert!(
                refused * 20 <= served,
                "--rate {configured}: {refused} refusals for {served} served"
            );
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
        let ticket = PaceTicket(0);
        let first = pacer.on_push_back(Pause::RateLimited(Some(Duration::from_secs(3))), ticket);
        assert_eq!(first, Duration::from_secs(3));
        let rate_after_first = pacer.current_rate();
        // The rest of the burst: no further slowdown, but a longer Retry-After extends the pause.
        pacer.on_push_back(Pause::RateLimited(None), ticket);
        assert_eq!(pacer.current_rate(), rate_after_first);
        pacer.on_push_back(Pause::RateLimited(Some(Duration::from_secs(5))), ticket);
        pacer.admit(Urgency::Now).await;
        assert!(Instant::now() - start >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn maintenance_pauses_the_key_longer_each_time_without_slowing_it() {
        let pacer = Pacer::new(10.0, 1);
        assert_eq!(
            pacer.on_push_back(Pause::Maintenance(None), PaceTicket(0)),
            MAINTENANCE_FIRST
        );
        tokio::time::sleep(MAINTENANCE_FIRST).await;
        assert_eq!(
            pacer.on_push_back(Pause::Maintenance(None), PaceTicket(0)),
            MAINTENANCE_FIRST * 2
        );
        assert_eq!(pacer.current_rate(), 10.0);
        let start = Instant::now();
        pacer.admit(Urgency::Now).await;
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
                            pacer.admit(Urgency::Now).await;
                            let waited = Instant::now() - start;
                            let longest = Duration::from_secs(300)
                                .max(MAINTENANCE_MAX)
                                .max(MAX_INTERVAL * burst)
                                + MAX_INTERVAL;
                            proptest::prop_assert!(waited <= longest, "{waited:?}");
                        }
                        1 => pacer.on_admitted(),
                        2 => {
                            pacer.on_push_back(Pause::RateLimited(retry_after), PaceTicket(0));
                        }
                        _ => {
                            pacer.on_push_back(Pause::Maintenance(retry_after), PaceTicket(0));
                        }
                    }
                    let current = pacer.current_rate();
                    proptest::prop_assert!(current > 0.0 && current <= rate * (1.0 + 1e-9), "{current}");
                }
                Ok(())
            })?;
        }
    }

    /// One sweep of `total` requests by 8 workers, each request retried until served: when the
    /// last one was served, the 429s on the way, and when each request left.
    async fn sweep(pacer: Arc<Pacer>, exchange: Arc<Exchange>, total: u32) -> Sweep {
        let start = Instant::now();
        let left = Arc::new(std::sync::atomic::AtomicU32::new(total));
        let departures = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (pacer, exchange) = (pacer.clone(), exchange.clone());
                let (left, departures) = (left.clone(), departures.clone());
                tokio::spawn(async move {
                    let mut refused = 0u32;
                    let order = std::sync::atomic::Ordering::SeqCst;
                    while left
                        .fetch_update(order, order, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        loop {
                            let ticket = pacer.admit(Urgency::Now).await;
                            let interval = pacer.state().interval;
                            departures.lock().unwrap().push((Instant::now(), interval));
                            match exchange.arrive() {
                                Some(served) => {
                                    tokio::time::sleep_until(served + Duration::from_millis(20))
                                        .await;
                                    pacer.on_admitted();
                                    break;
                                }
                                None => {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                    pacer.on_push_back(Pause::RateLimited(None), ticket);
                                    refused += 1;
                                }
                            }
                        }
                    }
                    refused
                })
            })
            .collect();
        let mut refused = 0;
        for t in tasks {
            refused += t.await.unwrap();
        }
        let mut departures = std::mem::take(&mut *departures.lock().unwrap());
        departures.sort();
        Sweep {
            took: Instant::now() - start,
            refused,
            departures,
        }
    }

    struct Sweep {
        took: Duration,
        refused: u32,
        /// When each request left, with the spacing in force then.
        departures: Vec<(Instant, Duration)>,
    }

    #[tokio::test(start_paused = true)]
    async fn twice_the_limit_with_a_burst_finishes_near_the_bound() {
        // Issue 17's first push-back scenario: --rate 20 --burst 5 against an exchange admitting
        // 10/s with 5 queued. The old pacer ended at 5/s (40 s for 200 where 20 are possible).
        let pacer = Arc::new(Pacer::new(20.0, 5));
        let exchange = Arc::new(Exchange::new(10.0, 5));
        let sweep = sweep(pacer.clone(), exchange, 200).await;
        let bound = Duration::from_secs(20);
        assert!(
            sweep.took <= bound.mul_f64(1.25),
            "{:?} for 200 at 10/s ({} refused, ended at {}/s)",
            sweep.took,
            sweep.refused,
            pacer.current_rate()
        );
        let rate = pacer.current_rate();
        assert!((9.0..=10.0).contains(&rate), "settled at {rate}/s");
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_twice_the_limit_with_nothing_queued_finishes_near_the_bound() {
        // The second: --rate 5 --burst 1 against 2/s with nothing queued. The old pacer halved on
        // every 429 down to 0.1/s and had not finished 30 requests after 120 s.
        let pacer = Arc::new(Pacer::new(5.0, 1));
        let exchange = Arc::new(Exchange::new(2.0, 0));
        let sweep = sweep(pacer.clone(), exchange, 30).await;
        let bound = Duration::from_secs(15);
        assert!(
            sweep.took <= bound.mul_f64(1.25),
            "{:?} for 30 at 2/s ({} refused, ended at {}/s)",
            sweep.took,
            sweep.refused,
            pacer.current_rate()
        );
        let rate = pacer.current_rate();
        assert!((1.8..=2.0).contains(&rate), "settled at {rate}/s");
    }

    #[tokio::test(start_paused = true)]
    async fn with_burst_one_no_two_requests_leave_closer_than_the_pace() {
        for (limit, queue) in [(2.0, 0), (4.0, 5), (3.0, 1)] {
            let pacer = Arc::new(Pacer::new(5.0, 1));
            let exchange = Arc::new(Exchange::new(limit, queue));
            let sweep = sweep(pacer.clone(), exchange, 60).await;
            assert!(
                pacer.current_rate() < 5.0,
                "limit {limit}/s: the scenario must slow the pace ({} refused)",
                sweep.refused
            );
            for pair in sweep.departures.windows(2) {
                let ((first, _), (second, _)) = (pair[0], pair[1]);
                // Whatever the pace did in between, it is never faster than --rate.
                let gap = second - first;
                assert!(
                    gap >= Duration::from_millis(200),
                    "limit {limit}/s: two requests {gap:?} apart under --rate 5 --burst 1"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_pace_climbs_back_when_the_limit_lifts() {
        let pacer = Arc::new(Pacer::new(10.0, 1));
        let tight = Arc::new(Exchange::new(2.0, 0));
        sweep(pacer.clone(), tight, 40).await;
        let slowed = pacer.current_rate();
        assert!(slowed <= 2.0, "{slowed}");
        // The limit lifts: within a minute of traffic the pace is back at --rate, never above.
        let lifted = Arc::new(Exchange::new(1000.0, 5));
        let (_, refused) = traffic(pacer.clone(), lifted, Duration::from_secs(60)).await;
        assert_eq!(refused, 0);
        assert_eq!(pacer.current_rate(), 10.0, "back to --rate, never above");
    }

    #[tokio::test(start_paused = true)]
    async fn no_listing_delays_a_cancel_all() {
        // 40 cancel-alls at 10/s from 8 workers, and 8 listings wanting the pace all along:
        // every cancel-all leaves when it would with no listing at all, and the listings take
        // the slots after the last one.
        let pacer = Arc::new(Pacer::new(10.0, 1));
        let start = Instant::now();
        let cancels = Arc::new(std::sync::atomic::AtomicU32::new(40));
        let left = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for worker in 0..16 {
            let (pacer, cancels, left) = (pacer.clone(), cancels.clone(), left.clone());
            tasks.push(tokio::spawn(async move {
                let order = std::sync::atomic::Ordering::SeqCst;
                let urgent = worker < 8;
                loop {
                    if urgent
                        && cancels
                            .fetch_update(order, order, |n| n.checked_sub(1))
                            .is_err()
                    {
                        break;
                    }
                    let urgency = if urgent {
                        Urgency::Now
                    } else {
                        Urgency::CanWait
                    };
                    pacer.admit(urgency).await;
                    left.lock().unwrap().push((Instant::now() - start, urgent));
                    if !urgent && cancels.load(order) == 0 && left.lock().unwrap().len() >= 60 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let left = left.lock().unwrap().clone();
        let cancel_times: Vec<Duration> = left.iter().filter(|l| l.1).map(|l| l.0).collect();
        assert_eq!(cancel_times.len(), 40);
        for (k, at) in cancel_times.iter().enumerate() {
            // The k-th cancel-all leaves k intervals after the start, as if alone.
            assert_eq!(*at, Duration::from_millis(100) * k as u32, "cancel-all {k}");
        }
        let last_cancel = *cancel_times.last().unwrap();
        assert!(
            left.iter().filter(|l| !l.1).all(|l| l.0 > last_cancel),
            "a listing took a slot before the last cancel-all: {left:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pace_the_exchange_answers_more_slowly_than_is_not_kept() {
        // Four requests in flight against 10/s with 5 queued: the queue never fills, so no 429
        // says the pace is too fast; the replies do. The pace in force must say what is sent.
        let pacer = Arc::new(Pacer::new(20.0, 5));
        let exchange = Arc::new(Exchange::new(10.0, 5));
        let end = Instant::now() + Duration::from_secs(30);
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (pacer, exchange) = (pacer.clone(), exchange.clone());
                tokio::spawn(async move {
                    while Instant::now() < end {
                        let ticket = pacer.admit(Urgency::Now).await;
                        match exchange.arrive() {
                            Some(served) => {
                                tokio::time::sleep_until(served + Duration::from_millis(20)).await;
                                pacer.on_admitted();
                            }
                            None => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                pacer.on_push_back(Pause::RateLimited(None), ticket);
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let rate = pacer.current_rate();
        assert!(
            rate <= 11.0,
            "the pace says {rate}/s where 10/s is answered"
        );
    }
}
