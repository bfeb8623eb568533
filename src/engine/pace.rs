//! The key's pace: governor spaces the requests at the pace in force ([`Throttle`]), and a pure
//! [`Controller`] moves that pace: down only on a 429 (slow answers say nothing of the key's
//! limit), up while the exchange answers as fast as asked, never above `--rate`. 429s and 503s
//! also pause the key (`Retry-After`, or a back-off that grows while they follow each other).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter, clock::Clock, middleware::NoOpMiddleware};
use tokio::time::Instant;

/// The replies over which the admitted rate is measured, and how many make a measurement.
const MEASURE_WINDOW: Duration = Duration::from_secs(2);
const MIN_SAMPLES: usize = 4;
/// The share of the measured rate a 429 settles the pace at; without a measurement, the share
/// of the pace in force (each 429 of a new pace cuts again, so a few steps reach any limit).
const SETTLE_SHARE: f64 = 0.95;
const BLIND_CUT: f64 = 0.75;
/// Admitted replies, and time, at one pace before it climbs.
const PROBE_AFTER: u32 = 4;
const PROBE_TIME: Duration = Duration::from_millis(500);
/// The pace climbs only while the exchange answers at least this share of it: a pace the key
/// does not reach (too little work, too few in flight, an exchange that queues) proves nothing.
const KEPT_UP: f64 = 0.97;
/// A refused pace this close above the pace in force ends the climb toward it; once the refusal
/// is forgotten, the pace climbs by as much a step, so a probe past a limit overshoots it little.
const SETTLED: f64 = 1.10;
/// How long a refused pace is remembered.
const REFUSED_MEMORY: Duration = Duration::from_secs(30);
/// The slowest pace: one request every 10 s.
const MIN_RATE: f64 = 0.1;
/// A 503 without `Retry-After` pauses the key 2 s, doubling while they follow each other, to 60 s.
const MAINTENANCE_FIRST: Duration = Duration::from_secs(2);
const MAINTENANCE_MAX: Duration = Duration::from_secs(60);

/// What a reply tells the pace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Heard {
    /// The exchange took the request (whatever it answered).
    Admitted,
    /// 429, with the `Retry-After` it gave.
    RateLimited(Option<Duration>),
    /// 503, with the `Retry-After` it gave.
    Maintenance(Option<Duration>),
}

/// The pace in force: requests per second, and a pause before the next one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub per_second: f64,
    pub not_before: Option<Instant>,
}

/// Moves the pace from what replies say. No clock and no locks: time comes with each reply.
pub struct Controller {
    configured: f64,
    rate: f64,
    /// Bumped on each change of rate: a 429 to a request sent at an older pace does not lower
    /// the pace again.
    generation: u64,
    changed_at: Instant,
    since_change: u32,
    admitted: VecDeque<Instant>,
    refused: Option<(f64, Instant)>,
    rate_limited_streak: u32,
    maintenance_streak: u32,
}

impl Controller {
    /// `rate` is `--rate`, positive and finite (the flag parser bounds it).
    pub fn new(rate: f64, now: Instant) -> Self {
        Controller {
            configured: rate,
            rate,
            generation: 0,
            changed_at: now,
            since_change: 0,
            admitted: VecDeque::new(),
            refused: None,
            rate_limited_streak: 0,
            maintenance_streak: 0,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The pace a request leaving now is sent under, for [`Controller::on_reply`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What a reply to a request sent under `generation` changes, if anything.
    pub fn on_reply(&mut self, now: Instant, generation: u64, heard: Heard) -> Option<Pace> {
        let retry_after = match heard {
            Heard::Admitted => return self.admitted(now),
            Heard::Maintenance(retry_after) => {
                self.maintenance_streak += 1;
                let backoff =
                    MAINTENANCE_FIRST.saturating_mul(1 << (self.maintenance_streak - 1).min(5));
                let until = now + retry_after.unwrap_or(backoff.min(MAINTENANCE_MAX));
                return Some(self.pace(Some(until)));
            }
            Heard::RateLimited(retry_after) => retry_after,
        };
        self.rate_limited_streak += 1;
        if generation != self.generation {
            // Sent at a pace no longer in force: the pause the exchange asked for still holds.
            return retry_after.map(|wait| self.pace(Some(now + wait)));
        }
        let since = now.checked_sub(self.window()).unwrap_or(self.changed_at);
        let lower = match rate_since(&self.admitted, since) {
            Some(measured) => (measured * SETTLE_SHARE).min(self.rate),
            None => self.rate * BLIND_CUT,
        };
        self.refused = Some((self.rate, now));
        self.set_rate(lower, now);
        let doublings = (self.rate_limited_streak - 1).min(6);
        let backoff = self.interval().saturating_mul(1 << doublings);
        Some(self.pace(Some(now + retry_after.unwrap_or(backoff))))
    }

    fn admitted(&mut self, now: Instant) -> Option<Pace> {
        (self.rate_limited_streak, self.maintenance_streak) = (0, 0);
        self.admitted.push_back(now);
        let keep = self.window();
        while self.admitted.len() > 4096 || self.admitted.front().is_some_and(|&t| t + keep < now) {
            self.admitted.pop_front();
        }
        self.since_change = self.since_change.saturating_add(1);
        let climb = self.since_change >= PROBE_AFTER
            && now - self.changed_at >= PROBE_TIME.max(self.interval() * PROBE_AFTER)
            && self.rate < self.configured
            && rate_since(&self.admitted, self.changed_at)
                .is_some_and(|r| r >= KEPT_UP * self.rate);
        if !climb {
            return None;
        }
        self.refused = self.refused.filter(|&(_, at)| now - at < REFUSED_MEMORY);
        let before = self.rate;
        self.set_rate(
            match self.refused {
                // Close enough: stay, and measure the pace afresh.
                Some((too_fast, _)) if too_fast / self.rate <= SETTLED => self.rate,
                // Halfway (in rate) toward the refused pace.
                Some((too_fast, _)) => (self.rate + too_fast) / 2.0,
                None => self.rate * SETTLED,
            },
            now,
        );
        (self.rate != before).then(|| self.pace(None))
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate)
    }

    /// How far back admitted replies are kept and measured: longer at a slow pace, so that the
    /// window holds enough of them.
    fn window(&self) -> Duration {
        MEASURE_WINDOW.max(self.interval() * (PROBE_AFTER + 2))
    }

    fn set_rate(&mut self, rate: f64, now: Instant) {
        let old = self.rate;
        let rate = rate.clamp(MIN_RATE.min(self.configured), self.configured);
        if rate != old {
            let direction = if rate < old { "lowered" } else { "raised" };
            tracing::info!(from = old, to = rate, "pace {direction}");
            (self.rate, self.generation) = (rate, self.generation + 1);
        }
        (self.changed_at, self.since_change) = (now, 0);
    }

    fn pace(&self, not_before: Option<Instant>) -> Pace {
        Pace {
            per_second: self.rate,
            not_before,
        }
    }
}

/// Replies per second among `admitted` since `since`, once there are enough to tell: one over
/// the median gap between them, so a pause of the key's own does not read as a slow exchange
/// (replies arriving together, as from an exchange serving in parallel, fall back to their span).
fn rate_since(admitted: &VecDeque<Instant>, since: Instant) -> Option<f64> {
    let recent: Vec<Instant> = admitted.iter().copied().filter(|&t| t >= since).collect();
    let span = recent.last()?.duration_since(*recent.first()?);
    if recent.len() < MIN_SAMPLES || span.is_zero() {
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

/// tokio's clock for governor, so a paused test clock paces too.
#[derive(Clone, Copy)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// governor's limiter at the pace in force (rebuilt when the pace changes), and the pause in force.
pub struct Throttle {
    limiter: Limiter,
    per_second: f64,
    burst: NonZeroU32,
    paused_until: Option<Instant>,
}

impl Throttle {
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Throttle {
            limiter: limiter(per_second, burst),
            per_second,
            burst,
            paused_until: None,
        }
    }

    /// Follows a new pace. A new limiter starts with its burst full; that burst is taken at once,
    /// so the first request under the new pace leaves one interval after the change, not early.
    pub fn follow(&mut self, pace: Pace) {
        self.paused_until = self.paused_until.max(pace.not_before);
        if pace.per_second != self.per_second {
            self.per_second = pace.per_second;
            self.limiter = limiter(pace.per_second, self.burst);
            let _ = self.limiter.check_n(self.burst);
        }
    }

    /// Takes a place for one request now, or says when one is free.
    pub fn take(&self) -> Result<(), Instant> {
        match self.paused_until {
            Some(until) if until > Instant::now() => Err(until),
            _ => Ok(self.limiter.check().map_err(|e| e.earliest_possible())?),
        }
    }
}

/// Its period rounded up to the nanosecond, so the pace never runs above the rate.
fn limiter(per_second: f64, burst: NonZeroU32) -> Limiter {
    let period = Duration::from_nanos((1e9 / per_second).ceil().max(1.0) as u64);
    let quota = Quota::with_period(period).expect("a period of at least a nanosecond");
    Limiter::direct_with_clock(quota.allow_burst(burst), TokioClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_settles_the_pace_just_under_what_was_admitted() {
        let t0 = Instant::now();
        let mut c = Controller::new(20.0, t0);
        // Admitted at 10/s for two seconds: the exchange's real limit.
        for i in 0..20 {
            c.on_reply(at(t0, 100 * i), 0, Heard::Admitted);
        }
        let pace = c
            .on_reply(at(t0, 2000), 0, Heard::RateLimited(None))
            .unwrap();
        assert!((pace.per_second - 9.5).abs() < 0.01, "{pace:?}");
        // No Retry-After: one interval of the new pace.
        let pause = pace.not_before.unwrap() - at(t0, 2000);
        assert!((pause.as_secs_f64() - 1.0 / 9.5).abs() < 0.001, "{pause:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_measurement_a_429_cuts_the_pace_and_retry_after_is_honoured() {
        let t0 = Instant::now();
        let mut c = Controller::new(10.0, t0);
        let pace = c
            .on_reply(t0, 0, Heard::RateLimited(Some(Duration::from_secs(3))))
            .unwrap();
        assert_eq!(pace.per_second, 7.5);
        assert_eq!(pace.not_before, Some(at(t0, 3000)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_to_a_request_of_an_older_pace_does_not_lower_it_again() {
        let t0 = Instant::now();
        let mut c = Controller::new(10.0, t0);
        let old = c.generation();
        c.on_reply(t0, old, Heard::RateLimited(None)).unwrap();
        assert_eq!(c.rate(), 7.5);
        assert_eq!(c.on_reply(at(t0, 10), old, Heard::RateLimited(None)), None);
        let asked = c.on_reply(
            at(t0, 20),
            old,
            Heard::RateLimited(Some(Duration::from_secs(2))),
        );
        assert_eq!(
            asked.unwrap().not_before,
            Some(at(t0, 2020)),
            "its Retry-After still holds"
        );
        assert_eq!(c.rate(), 7.5);
    }

    #[tokio::test(start_paused = true)]
    async fn maintenance_pauses_longer_each_time_without_slowing_the_pace() {
        let t0 = Instant::now();
        let mut c = Controller::new(10.0, t0);
        let first = c.on_reply(t0, 0, Heard::Maintenance(None)).unwrap();
        assert_eq!(first.not_before, Some(t0 + MAINTENANCE_FIRST));
        let second = c.on_reply(t0, 0, Heard::Maintenance(None)).unwrap();
        assert_eq!(second.not_before, Some(t0 + MAINTENANCE_FIRST * 2));
        assert_eq!(c.rate(), 10.0);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_answers_are_not_push_back() {
        // The exchange answers one request a second while the pace asks for ten: slow, but it
        // refuses nothing, so the pace stays.
        let t0 = Instant::now();
        let mut c = Controller::new(10.0, t0);
        for s in 0..60 {
            assert_eq!(c.on_reply(at(t0, 1000 * s), 0, Heard::Admitted), None);
        }
        assert_eq!(c.rate(), 10.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pace_climbs_back_halfway_then_all_the_way_once_the_refusal_is_old() {
        let t0 = Instant::now();
        let mut c = Controller::new(10.0, t0);
        c.on_reply(t0, 0, Heard::RateLimited(None));
        c.on_reply(t0, 1, Heard::RateLimited(None));
        assert_eq!(c.rate(), 5.625);
        let mut rates = vec![];
        let mut t = 0;
        while t < 60_000 {
            t += 100;
            if let Some(pace) = c.on_reply(at(t0, t), c.generation(), Heard::Admitted) {
                rates.push((t, pace.per_second));
            }
        }
        // Halfway to the refused 7.5/s, until within 10 % of it...
        assert!((rates[0].1 - 6.5625).abs() < 1e-9, "{rates:?}");
        assert!(
            rates.iter().all(|&(t, r)| t >= 30_000 || r < 10.0),
            "{rates:?}"
        );
        // ... and back at --rate once the refusal is forgotten, never above.
        assert_eq!(c.rate(), 10.0, "{rates:?}");
    }

    /// The exchange's side, as the simulator and the spec have it: GCRA at `limit` per second
    /// with `queue` requests held instead of refused.
    struct Exchange {
        interval: Duration,
        queue: u32,
        tat: Instant,
    }

    impl Exchange {
        fn new(limit: f64, queue: u32) -> Self {
            let interval = Duration::from_secs_f64(1.0 / limit);
            Exchange {
                interval,
                queue,
                tat: Instant::now(),
            }
        }

        /// When the request is served, or `None` for a 429.
        fn arrive(&mut self, now: Instant) -> Option<Instant> {
            let slot = self.tat.max(now);
            let waiting = (slot - now).as_secs_f64() / self.interval.as_secs_f64();
            if waiting > f64::from(self.queue) {
                return None;
            }
            self.tat = slot + self.interval;
            Some(slot)
        }
    }

    struct Sweep {
        took: Duration,
        refused: u32,
        /// When each request left.
        departures: Vec<Instant>,
        /// The pace in force when each request left.
        paces: Vec<f64>,
        rate: f64,
    }

    /// `total` requests, each retried until served, at most 8 in flight, paced the way the
    /// dispatcher paces them (the throttle, with its pauses), 20 ms from the exchange and back.
    async fn sweep(rate: f64, burst: u32, exchange: &mut Exchange, total: u32) -> Sweep {
        let start = Instant::now();
        let (mut controller, mut throttle) =
            (Controller::new(rate, start), Throttle::new(rate, burst));
        let (mut left, mut refused) = (total, 0);
        let mut replies: Vec<(Instant, u64, Heard)> = Vec::new();
        let (mut departures, mut paces) = (Vec::new(), Vec::new());
        let latency = Duration::from_millis(20);
        while left > 0 || !replies.is_empty() {
            let now = Instant::now();
            replies.sort_by_key(|r| std::cmp::Reverse(r.0));
            while replies.last().is_some_and(|r| r.0 <= now) {
                let (_, generation, heard) = replies.pop().unwrap();
                if heard != Heard::Admitted {
                    refused += 1;
                    left += 1;
                }
                if let Some(pace) = controller.on_reply(now, generation, heard) {
                    throttle.follow(pace);
                }
            }
            let mut wake = replies.last().map(|r| r.0);
            if left > 0 && replies.len() < 8 {
                match throttle.take() {
                    Ok(()) => {
                        left -= 1;
                        departures.push(now);
                        paces.push(controller.rate());
                        let heard = match exchange.arrive(now + latency) {
                            Some(served) => (served + latency, Heard::Admitted),
                            None => (now + latency * 2, Heard::RateLimited(None)),
                        };
                        replies.push((heard.0, controller.generation(), heard.1));
                        continue;
                    }
                    Err(at) => wake = Some(wake.map_or(at, |w| w.min(at))),
                }
            }
            // Nothing left to send or to hear: the sweep is over.
            let Some(wake) = wake else { break };
            tokio::time::sleep_until(wake).await;
        }
        Sweep {
            took: Instant::now() - start,
            refused,
            departures,
            paces,
            rate: controller.rate(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn twice_the_limit_with_a_burst_finishes_near_the_bound_and_settles_under_it() {
        // --rate 20 --burst 5 against an exchange admitting 10/s with 5 queued: 20 s at best.
        let sweep = sweep(20.0, 5, &mut Exchange::new(10.0, 5), 200).await;
        assert!(
            sweep.took <= Duration::from_secs(25),
            "{:?}, {} refused",
            sweep.took,
            sweep.refused
        );
        assert!(
            (9.0..=11.0).contains(&sweep.rate),
            "settled at {}/s",
            sweep.rate
        );
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_twice_the_limit_with_nothing_queued_finishes_near_the_bound() {
        // --rate 5 --burst 1 against 2/s with nothing queued: 15 s at best for 30.
        let sweep = sweep(5.0, 1, &mut Exchange::new(2.0, 0), 30).await;

        let bound = Duration::from_secs(15).mul_f64(1.25);
        assert!(
            sweep.took <= bound,
            "{:?}, {} refused",
            sweep.took,
            sweep.refused
        );
        assert!(
            (1.8..=2.2).contains(&sweep.rate),
            "settled at {}/s",
            sweep.rate
        );
    }

    #[tokio::test(start_paused = true)]
    async fn under_the_limit_the_pace_is_kept_and_nothing_is_refused() {
        let sweep = sweep(5.0, 1, &mut Exchange::new(10.0, 5), 100).await;
        assert_eq!((sweep.refused, sweep.rate), (0, 5.0));
        assert!(sweep.took <= Duration::from_secs(21), "{:?}", sweep.took);
    }

    #[tokio::test(start_paused = true)]
    async fn with_burst_one_no_two_requests_leave_closer_than_the_rate_allows() {
        for (limit, queue) in [(2.0, 0), (4.0, 5), (3.0, 1)] {
            let sweep = sweep(5.0, 1, &mut Exchange::new(limit, queue), 60).await;
            assert!(
                sweep.refused > 0,
                "limit {limit}/s: the scenario must push back"
            );
            for pair in sweep.departures.windows(2) {
                let gap = pair[1] - pair[0];
                assert!(
                    gap >= Duration::from_millis(200),
                    "limit {limit}/s: {gap:?} apart"
                );
            }
        }
    }

    /// An exchange that queues what exceeds its limit answers at its limit; with the requests in
    /// flight held to a few, no 429 comes to say the pace is too fast. The pace must not climb on
    /// that silence: the exchange never answered as fast as it was asked.
    #[tokio::test(start_paused = true)]
    async fn the_pace_does_not_climb_past_what_a_queueing_exchange_answers() {
        let sweep = sweep(20.0, 5, &mut Exchange::new(10.0, 5), 1000).await;
        // The search between the pace served and the pace refused is over in seconds; from
        // then on the pace stays within a tenth of the limit (its probes included).
        let start = sweep.departures[0];
        let highest = (sweep.departures.iter().zip(&sweep.paces))
            .filter(|(t, _)| **t - start >= Duration::from_secs(15))
            .map(|(_, p)| *p)
            .fold(0.0, f64::max);
        assert!(
            highest <= 11.0,
            "climbed to {highest}/s against 10/s ({} refused)",
            sweep.refused
        );
        assert!(sweep.took <= Duration::from_secs(125), "{:?}", sweep.took);
    }

    /// Issue 27: the log said "pace raised" while the pace fell (3.50 -> 2.75 -> 2.37).
    #[tokio::test(start_paused = true)]
    async fn the_log_says_lowered_when_the_pace_falls_and_raised_when_it_climbs() {
        let captured = crate::captured_log::Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let t0 = Instant::now();
        let mut c = Controller::new(4.0, t0);
        tracing::subscriber::with_default(subscriber, || {
            c.on_reply(t0, 0, Heard::RateLimited(None));
            c.on_reply(at(t0, 10), 1, Heard::RateLimited(None));
            // Answered as fast as asked, well past the refusals' memory: it climbs back.
            for i in 1..=100 {
                c.on_reply(at(t0, 400 * i), c.generation(), Heard::Admitted);
            }
        });
        let text = captured.text();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("pace ")).collect();
        assert!(
            lines[0].contains("pace lowered") && lines[0].contains("to=3"),
            "{text}"
        );
        assert!(lines[1].contains("pace lowered"), "{text}");
        assert!(
            lines[2..].iter().all(|l| l.contains("pace raised")),
            "{text}"
        );
        assert!(lines.len() > 2, "the pace climbs back: {text}");
    }
}
