//! What the dispatcher learns about its key from each reply: what the pace hears, how many
//! requests may be in flight, and whether the key must stop (refused, never reached, nonces it
//! can never get accepted, a pause longer than a run waits). Pure: no clock, no I/O.

use super::key::{KeyHalt, MAX_RETRY_AFTER};
use super::pace::Heard;
use crate::client::{Exchanged, NonceMode, NonceRefusal, Pause, Verdict};

/// Connection failures, with no reply at all, after which the key stops as unreachable.
const UNREACHED_AFTER: u32 = 5;
/// Refusals of a request that was alone in flight before the key is declared unusable: one
/// could be another process's request slipping in; two in a row is a pattern.
const LONE_REFUSALS_TO_HALT: u32 = 2;

/// What one reply changes.
#[derive(Debug, Default)]
pub struct Learned {
    pub heard: Option<Heard>,
    pub halt: Option<(KeyHalt, String)>,
}

pub struct Lessons {
    mode: NonceMode,
    limit: InFlightLimit,
    guard: NonceGuard,
    /// The exchange has answered at least once.
    replied: bool,
    unreached: u32,
}

impl Lessons {
    pub fn new(mode: NonceMode, max_in_flight: usize) -> Self {
        Lessons {
            mode,
            limit: InFlightLimit::new(mode == NonceMode::Increasing, max_in_flight),
            guard: NonceGuard::default(),
            replied: false,
            unreached: 0,
        }
    }

    /// Requests allowed in flight now: one until the exchange has accepted a request of the key
    /// (so a key it refuses costs one request, not a window's worth).
    pub fn limit(&self) -> usize {
        let size = (self.limit.window as usize).clamp(1, self.limit.max);
        if self.guard.successes > 0 { size } else { 1 }
    }

    /// Nonce races that halved the limit.
    pub fn races(&self) -> u64 {
        self.limit.races
    }

    /// `nonce_us` is the request's nonce and `last` the key's latest; `alone`: nothing else of
    /// the key was in flight while this request was.
    pub fn learn(&mut self, reply: &Exchanged, nonce_us: u64, last: u64, alone: bool) -> Learned {
        if reply.http_status.is_some() {
            self.replied = true;
        } else if let Some(cause) = reply.unreached.filter(|_| !self.replied) {
            self.unreached += 1;
            let n = self.unreached;
            let why = || format!("{cause} ({n} attempts in a row, no reply)");
            let halt = (n >= UNREACHED_AFTER).then(|| (KeyHalt::Unreachable, why()));
            return Learned { heard: None, halt };
        }
        let heard = reply.http_status.is_some().then_some(Heard::Admitted);
        let halt = match &reply.verdict {
            Verdict::Ok(_) => {
                self.limit.on_success();
                self.guard.on_success();
                None
            }
            Verdict::Transient { pause: Some(p), .. } => return pushed_back(*p),
            Verdict::Transient { .. } | Verdict::AccountRefused { .. } => None,
            Verdict::NonceRefused { refusal, message } => {
                if *refusal == NonceRefusal::NotIncreased && !alone {
                    self.limit.on_race(nonce_us, last);
                }
                let why = self.guard.on_refusal(*refusal, alone, self.mode, message);
                why.map(|why| (KeyHalt::Refused, why))
            }
            Verdict::KeyRefused { reason, message } => {
                Some((KeyHalt::Refused, format!("{reason}: {message}")))
            }
        };
        Learned { heard, halt }
    }
}

fn pushed_back(pause: Pause) -> Learned {
    if let Some(asked) = pause.retry_after().filter(|&asked| asked > MAX_RETRY_AFTER) {
        let (asked, max) = (asked.as_secs(), MAX_RETRY_AFTER.as_secs());
        let why = format!(
            "the exchange asked the key to wait {asked} s (Retry-After), longer than a run waits ({max} s); resume the run later"
        );
        let halt = Some((KeyHalt::TooLongAPause, why));
        return Learned { heard: None, halt };
    }
    let heard = Some(match pause {
        Pause::RateLimited(after) => Heard::RateLimited(after),
        Pause::Maintenance(after) => Heard::Maintenance(after),
    });
    Learned { heard, halt: None }
}

/// The share of successes that races may cost before the limit shrinks, the most races that
/// budget holds, and how much slower the limit grows back while races are in debt.
const RACE_SHARE: f64 = 0.02;
const RACE_BUDGET_CAP: f64 = 16.0;
const GROWTH_DAMPING: f64 = 8.0;

/// How many requests may be in flight once the key is proven: `max` for a time-mode key. An
/// increasing-mode key's requests can overtake each other on the way, and each overtaken one
/// is refused: its limit grows like TCP's window; races are paid from a budget of
/// [`RACE_SHARE`] of the successes, and only a race the budget cannot pay halves it.
struct InFlightLimit {
    adaptive: bool,
    max: usize,
    window: f64,
    threshold: f64,
    /// Races the limit may still take without shrinking (earned, not given; at least -1).
    budget: f64,
    /// Nonces at or below this were issued before the last race: their races are of one burst.
    burst_mark_us: u64,
    races: u64,
}

impl InFlightLimit {
    fn new(adaptive: bool, max: usize) -> Self {
        let max = max.max(1);
        InFlightLimit {
            adaptive,
            max,
            window: (if adaptive { max.min(4) } else { max }) as f64,
            threshold: max as f64,
            budget: 0.0,
            burst_mark_us: 0,
            races: 0,
        }
    }

    /// Grows the window (a time-mode key's is at `max` already).
    fn on_success(&mut self) {
        self.budget = (self.budget + RACE_SHARE).min(RACE_BUDGET_CAP);
        let step = match (self.window < self.threshold, self.budget < 0.0) {
            (true, _) => 1.0,
            // In debt, the path has shown it reorders what the limit lets out: grow back slowly.
            (false, true) => 1.0 / (self.window * GROWTH_DAMPING),
            (false, false) => 1.0 / self.window,
        };
        self.window = (self.window + step).min(self.max as f64);
    }

    fn on_race(&mut self, nonce_us: u64, last_issued_us: u64) {
        if !self.adaptive || nonce_us <= self.burst_mark_us {
            return;
        }
        self.burst_mark_us = last_issued_us;
        self.budget = (self.budget - 1.0).max(-1.0);
        if self.budget < 0.0 {
            self.threshold = (self.window / 2.0).max(1.0);
            self.window = self.threshold;
            self.races += 1;
        }
    }
}

/// Tells nonce races (harmless, the limit absorbs them) from nonces the key can never accept.
#[derive(Default)]
struct NonceGuard {
    successes: u64,
    refusals: u64,
    /// Consecutive refusals no race can explain, without a success in between.
    lone_refusals: u32,
}

impl NonceGuard {
    fn on_success(&mut self) {
        self.successes += 1;
        self.lone_refusals = 0;
    }

    /// Why the key must stop, if this refusal settles it.
    fn on_refusal(
        &mut self,
        refusal: NonceRefusal,
        alone: bool,
        mode: NonceMode,
        message: &str,
    ) -> Option<String> {
        self.refusals += 1;
        let hint = match (refusal, mode) {
            (NonceRefusal::OutsideWindow, NonceMode::Increasing) => {
                "the key expects time-based nonces (seconds): run with --nonce-mode time"
            }
            (NonceRefusal::OutsideWindow, NonceMode::Time) => {
                "this machine's clock is more than 30 s away from the exchange's: fix the clock (NTP)"
            }
            (NonceRefusal::Unparseable, NonceMode::Time) => {
                "the key expects increasing integer nonces: run with --nonce-mode increasing"
            }
            (NonceRefusal::Unparseable, NonceMode::Increasing) => {
                return Some(format!("InvalidNonce: {message}"));
            }
            (NonceRefusal::NotIncreased, _) => {
                // Time-mode nonces need no order, so no refusal of one is a race.
                if alone || mode == NonceMode::Time {
                    self.lone_refusals += 1;
                }
                if self.lone_refusals < LONE_REFUSALS_TO_HALT {
                    // Races waste requests but leave successes in between; more refusals than
                    // successes is a pattern no race makes.
                    return (self.refusals >= 200 && self.refusals > self.successes).then(|| {
                        format!(
                            "InvalidNonce on {} requests ({} accepted): far more nonce refusals than races explain; another process is probably using this key",
                            self.refusals, self.successes
                        )
                    });
                }
                let cause = match (mode, self.successes == 0) {
                    (NonceMode::Increasing, true) => {
                        "the exchange has seen larger nonces for this key than this run sends: another process is using the key, or it was used with larger nonces (microseconds?), or it was created with time-based nonces (then run with --nonce-mode time)"
                    }
                    (NonceMode::Increasing, false) => {
                        "another process started using this key during the run: its nonces are ahead of ours"
                    }
                    (NonceMode::Time, _) => {
                        "the key seems to expect increasing nonces (run with --nonce-mode increasing), or another process is using it"
                    }
                };
                let lone = "InvalidNonce even with no other request in flight";
                return Some(format!("{lone}: {message} — {cause}"));
            }
        };
        Some(format!("InvalidNonce: {message} — {hint}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Collected, Unreached};
    use std::time::Duration;

    fn reply(status: Option<u16>, verdict: Verdict) -> Exchanged {
        Exchanged {
            latency: Duration::ZERO,
            http_status: status,
            body: None,
            body_truncated: false,
            verdict,
            unreached: None,
        }
    }

    fn ok() -> Exchanged {
        reply(Some(200), Verdict::Ok(Collected::default()))
    }

    fn refused_connection() -> Exchanged {
        let verdict = Verdict::Transient {
            reason: crate::client::Reason::ConnectionError,
            message: "tcp connect error".into(),
            pause: None,
        };
        Exchanged {
            unreached: Some(Unreached::Refused),
            ..reply(None, verdict)
        }
    }

    fn nonce_reply(refusal: NonceRefusal) -> Exchanged {
        reply(
            Some(400),
            Verdict::NonceRefused {
                refusal,
                message: "m".into(),
            },
        )
    }

    #[test]
    fn an_exchange_never_reached_stops_the_key_after_a_few_tries_and_says_why() {
        let mut l = Lessons::new(NonceMode::Increasing, 8);
        for _ in 1..UNREACHED_AFTER {
            let learned = l.learn(&refused_connection(), 1, 1, true);
            assert!(learned.halt.is_none() && learned.heard.is_none());
        }
        let (kind, why) = l.learn(&refused_connection(), 1, 1, true).halt.unwrap();
        assert_eq!(kind, KeyHalt::Unreachable);
        assert!(
            why.contains("connection refused") && why.contains("5 attempts"),
            "{why}"
        );
    }

    #[test]
    fn after_one_reply_connection_failures_are_transient() {
        let mut l = Lessons::new(NonceMode::Increasing, 8);
        l.learn(&ok(), 1, 1, true);
        for _ in 0..20 {
            let learned = l.learn(&refused_connection(), 1, 1, true);
            assert!(learned.halt.is_none());
        }
    }

    #[test]
    fn one_request_in_flight_until_the_key_is_proven_then_the_window_opens() {
        let mut l = Lessons::new(NonceMode::Increasing, 32);
        assert_eq!(l.limit(), 1);
        l.learn(&ok(), 1, 1, true);
        assert_eq!(
            l.limit(),
            5,
            "four to start, one more per success below the threshold"
        );
        for _ in 0..200 {
            l.learn(&ok(), 1, 1, false);
        }
        assert_eq!(l.limit(), 32);
        // 201 successes earned four races: the window keeps its size through them.
        let race = |l: &mut Lessons, nonce, last| {
            let refused = nonce_reply(NonceRefusal::NotIncreased);
            l.learn(&refused, nonce, last, false);
        };
        for burst in 0..4 {
            race(&mut l, 1000 * burst + 100, 1000 * burst + 150);
        }
        assert_eq!((l.limit(), l.races()), (32, 0));
        // The next is in debt and halves it; the rest of its burst (nonces issued before it)
        // does not halve it again, and the next burst does.
        race(&mut l, 5000, 5050);
        assert_eq!((l.limit(), l.races()), (16, 1));
        race(&mut l, 5020, 5060);
        assert_eq!((l.limit(), l.races()), (16, 1));
        race(&mut l, 6000, 6010);
        assert_eq!((l.limit(), l.races()), (8, 2));
        // A time-mode key's requests cannot race: its window is --concurrency.
        let mut t = Lessons::new(NonceMode::Time, 8);
        t.learn(&ok(), 1, 1, true);
        assert_eq!(t.limit(), 8);
    }

    #[test]
    fn a_key_in_the_wrong_mode_is_named_at_the_first_telling_refusal() {
        let mut g = NonceGuard::default();
        let why = g
            .on_refusal(
                NonceRefusal::OutsideWindow,
                false,
                NonceMode::Increasing,
                "m",
            )
            .unwrap();
        assert!(why.contains("--nonce-mode time"), "{why}");
        let why = g
            .on_refusal(NonceRefusal::Unparseable, false, NonceMode::Time, "m")
            .unwrap();
        assert!(why.contains("--nonce-mode increasing"), "{why}");
    }

    #[test]
    fn races_are_tolerated_but_two_lone_refusals_stop_the_key() {
        let mut g = NonceGuard::default();
        let race = NonceRefusal::NotIncreased;
        for _ in 0..50 {
            let verdict = g.on_refusal(race, false, NonceMode::Increasing, "m");
            assert!(verdict.is_none(), "a race is not a verdict");
        }
        assert!(
            g.on_refusal(race, true, NonceMode::Increasing, "m")
                .is_none()
        );
        g.on_success();
        let reset = g.on_refusal(race, true, NonceMode::Increasing, "m");
        assert!(reset.is_none(), "a success in between resets the streak");
        let why = g
            .on_refusal(race, true, NonceMode::Increasing, "m")
            .unwrap();
        assert!(why.contains("another process"), "{why}");
        // In time mode no refusal is a race.
        let mut g = NonceGuard::default();
        g.on_refusal(race, false, NonceMode::Time, "m");
        let why = g.on_refusal(race, false, NonceMode::Time, "m").unwrap();
        assert!(why.contains("--nonce-mode increasing"), "{why}");
    }

    #[test]
    fn the_total_of_nonce_refusals_is_bounded_across_the_run() {
        let race = NonceRefusal::NotIncreased;
        let mut g = NonceGuard::default();
        let halted_at = (1..=1000).find(|_| {
            g.on_refusal(race, false, NonceMode::Increasing, "m")
                .is_some()
        });
        assert_eq!(halted_at, Some(200));
        // Races among many successes are not a verdict.
        let mut g = NonceGuard::default();
        for _ in 0..10_000 {
            g.on_success();
        }
        for _ in 0..5_000 {
            assert!(
                g.on_refusal(race, false, NonceMode::Increasing, "m")
                    .is_none()
            );
        }
    }

    #[test]
    fn a_pause_longer_than_a_run_waits_stops_the_key_and_a_429_is_heard() {
        let long = Pause::RateLimited(Some(MAX_RETRY_AFTER + Duration::from_secs(1)));
        let (kind, why) = pushed_back(long).halt.unwrap();
        assert_eq!(kind, KeyHalt::TooLongAPause);
        assert!(why.contains("Retry-After"), "{why}");
        let short = pushed_back(Pause::RateLimited(Some(Duration::from_secs(2))));
        assert_eq!(
            short.heard,
            Some(Heard::RateLimited(Some(Duration::from_secs(2))))
        );
    }
}
