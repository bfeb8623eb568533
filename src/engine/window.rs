//! How many requests of a key may be in flight at once.
//!
//! In increasing nonce mode the exchange refuses a request whose nonce is not above the last one
//! it accepted, so two requests in flight can reach it out of order and the later-arriving lower
//! nonce is refused (`InvalidNonce`, "has not increased"). Requests leave in nonce order
//! (`departures`), so what still overtakes happens on the way or inside the exchange; how often
//! depends on the path, and more in flight can mean more of it. Each race costs one request. The
//! window grows like TCP's: it starts small, doubles per round trip (slow start), then grows by
//! one request per window of successes; races are paid from a budget of [`RACE_SHARE`] of the
//! successes, and only a race the budget cannot pay halves the window (never below one request
//! in flight); while the races are in debt it grows back [`GROWTH_DAMPING`] times slower. So a
//! path that reorders now and then keeps the whole window, and one that reorders with every extra
//! request in flight is held near one, either way at about that share of wasted requests. The races of one burst (refusals of nonces issued before the halving) count once.
//! Time-mode nonces only need to be fresh, so a time-mode key's window stays at `--concurrency`.
//!
//! Until the exchange has accepted one cancel-all (the call that needs everything of the key: its
//! signature, its nonce mode, its Trader role), one account probes the key alone: only its
//! requests are admitted, one at a time, so a key the exchange refuses costs a request or two,
//! not a window's worth. If the probing account ends without proving the key (the exchange
//! refused that account), the next one probes.
//!
//! The window also tells whether a refused request was alone (nothing else of the key in flight
//! while it was): a refusal no race can explain, which is what lets a key that can never work be
//! told from one that merely raced.

use std::sync::Mutex;

use tokio::sync::Notify;

/// The share of successes the races may cost before the window shrinks: the wasted requests
/// stay near this share (the bound is 2 %).
const RACE_SHARE: f64 = 0.02;
/// Races the budget can hold at most: a burst after a quiet stretch is not forgiven wholesale.
/// Its debt is one race at most, so a stretch of races (the exchange stalling for a few
/// milliseconds) halves the window a few times but slows its regrowth only until 50 successes
/// have paid one race: measured, a deeper debt held a 50,000-account run near one request in
/// flight for half a minute.
const RACE_BUDGET_CAP: f64 = 16.0;
/// While races are in debt, successes per window needed to grow it by one request.
const GROWTH_DAMPING: f64 = 8.0;

pub struct Window {
    adaptive: bool,
    max: usize,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    /// The exchange has accepted a cancel-all with this key.
    proven: bool,
    /// While not proven: the account probing the key.
    probe: Option<String>,
    cwnd: f64,
    ssthresh: f64,
    in_flight: usize,
    /// Requests sent so far (a sequence number for "was anything sent after mine?").
    sent: u64,
    /// Nonces at or below this were issued before the last race counted: their races are of the
    /// same burst (one request overtaking several), which counts once.
    burst_mark_us: u64,
    /// Races that shrank the window.
    shrinks: u64,
    /// Races the window may still take without shrinking.
    race_budget: f64,
}

/// A place in the window, held from admission until the reply has been read. Dropping it (also
/// when the request is abandoned) frees the place.
pub struct Slot<'a> {
    window: &'a Window,
    /// Sequence number of this request's send, and how many others were in flight then.
    sent_seq: Option<u64>,
    others_at_send: usize,
}

impl Window {
    pub fn new(adaptive: bool, max: usize) -> Self {
        let max = max.max(1);
        Window {
            adaptive,
            max,
            state: Mutex::new(State {
                proven: false,
                probe: None,
                cwnd: if adaptive {
                    max.min(4) as f64
                } else {
                    max as f64
                },
                ssthresh: max as f64,
                in_flight: 0,
                sent: 0,
                burst_mark_us: 0,
                shrinks: 0,
                // Earned, not given: a path that reorders from the first request shrinks the
                // window from the first race.
                race_budget: 0.0,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests allowed in flight now.
    pub fn size(&self) -> usize {
        self.state().limit(self.max)
    }

    /// The exchange accepted a cancel-all: the key works, the window may open.
    pub fn prove(&self) {
        let opened = {
            let mut s = self.state();
            s.probe = None;
            !std::mem::replace(&mut s.proven, true)
        };
        if opened {
            self.changed.notify_waiters();
        }
    }

    /// How many races shrank the window so far.
    pub fn shrinks(&self) -> u64 {
        self.state().shrinks
    }

    /// The account that probed the key is done: if it did not prove it, another may probe.
    pub fn probe_done(&self, account: &str) {
        let freed = {
            let mut s = self.state();
            if s.probe.as_deref() == Some(account) {
                s.probe = None;
                true
            } else {
                false
            }
        };
        if freed {
            self.changed.notify_waiters();
        }
    }

    /// Waits for a place in the window for a request of `account`. Waiters are woken one per
    /// free place, oldest first.
    pub async fn acquire(&self, account: &str) -> Slot<'_> {
        loop {
            // Registered before the check, so a release between the two is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.try_take(account) {
                return Slot {
                    window: self,
                    sent_seq: None,
                    others_at_send: 0,
                };
            }
            changed.await;
        }
    }

    fn try_take(&self, account: &str) -> bool {
        let mut s = self.state();
        if !s.proven {
            match &s.probe {
                None => s.probe = Some(account.to_owned()),
                Some(probe) if probe != account => return false,
                Some(_) => {}
            }
        }
        if s.in_flight < s.limit(self.max) {
            s.in_flight += 1;
            true
        } else {
            false
        }
    }

    /// The request is leaving now.
    pub fn sending(&self, slot: &mut Slot<'_>) {
        let mut s = self.state();
        slot.sent_seq = Some(s.sent);
        slot.others_at_send = s.in_flight.saturating_sub(1);
        s.sent += 1;
    }

    /// True when nothing else of the key was in flight while this request was: neither when it
    /// left nor since.
    pub fn was_alone(&self, slot: &Slot<'_>) -> bool {
        let s = self.state();
        slot.others_at_send == 0 && slot.sent_seq.is_some_and(|seq| s.sent == seq + 1)
    }

    pub fn on_success(&self) {
        if !self.adaptive {
            return;
        }
        let grew = {
            let mut s = self.state();
            s.race_budget = (s.race_budget + RACE_SHARE).min(RACE_BUDGET_CAP);
            let before = s.cwnd as usize;
            // In debt, the path has shown it reorders what the window sends: grow slowly back.
            let damp = if s.race_budget >= 0.0 {
                1.0
            } else {
                GROWTH_DAMPING
            };
            s.cwnd = if s.cwnd < s.ssthresh {
                s.cwnd + 1.0
            } else {
                s.cwnd + 1.0 / (s.cwnd * damp)
            }
            .min(self.max as f64);
            s.cwnd as usize > before
        };
        if grew {
            self.wake_one();
        }
    }

    /// Wakes one waiter for one free place. Until the key is proven, only the probing account may
    /// take it, so everyone is woken to let that one find it (a handful of requests at most).
    fn wake_one(&self) {
        if self.state().proven {
            self.changed.notify_one();
        } else {
            self.changed.notify_waiters();
        }
    }

    /// A request with nonce `nonce_us` lost a race; `last_issued_us` is the newest nonce issued.
    pub fn on_race(&self, nonce_us: u64, last_issued_us: u64) {
        if !self.adaptive {
            return;
        }
        let mut s = self.state();
        if nonce_us <= s.burst_mark_us {
            return;
        }
        s.burst_mark_us = last_issued_us;
        s.race_budget = (s.race_budget - 1.0).max(-1.0);
        if s.race_budget >= 0.0 {
            return;
        }
        s.ssthresh = (s.cwnd / 2.0).max(1.0);
        s.cwnd = s.ssthresh;
        s.shrinks += 1;
        tracing::debug!(
            window = s.cwnd,
            "nonce races beyond the budget: the window is halved"
        );
    }
}

impl State {
    fn limit(&self, max: usize) -> usize {
        if self.proven {
            (self.cwnd as usize).clamp(1, max)
        } else {
            1
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.window.state().in_flight -= 1;
        self.window.wake_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn starts_small_grows_to_the_cap_and_halves_on_races_beyond_the_budget() {
        let w = Window::new(true, 32);
        assert_eq!(w.size(), 1, "one request until a cancel-all is accepted");
        w.prove();
        assert_eq!(w.size(), 4);
        for _ in 0..200 {
            w.on_success();
        }
        assert_eq!(w.size(), 32);
        // 200 successes earned 4 races: the window keeps its size through them. A race of a
        // nonce issued before the last one counted is of the same burst and costs nothing.
        for burst in 0..4u64 {
            w.on_race(1000 * burst + 100, 1000 * burst + 150);
            w.on_race(1000 * burst + 120, 1000 * burst + 160);
        }
        assert_eq!((w.size(), w.shrinks()), (32, 0));
        // The next one is in debt and halves it; the rest of its burst does not shrink it again.
        w.on_race(5000, 5050);
        assert_eq!((w.size(), w.shrinks()), (16, 1));
        w.on_race(5020, 5060);
        assert_eq!(w.shrinks(), 1);
        // In debt it grows back slowly; once the successes have paid the race (50 at 2 %), by one
        // per window again.
        let mut successes = 0;
        while w.size() == 16 {
            w.on_success();
            successes += 1;
        }
        assert_eq!(w.size(), 17);
        assert!((55..=65).contains(&successes), "{successes}");
        // The budget has less than a whole race again, so the next one halves the window.
        w.on_race(6000, 6010);
        assert_eq!((w.size(), w.shrinks()), (8, 2));
        for i in 7..=12 {
            w.on_race(1000 * i, 1000 * i);
        }
        assert_eq!(w.size(), 1, "never below one");
    }

    /// Races at the budget's share cost nothing; the wasted share stays near it whatever the
    /// path does: one race per 100 successes keeps the full window, one per 20 holds it small.
    #[tokio::test]
    async fn the_window_settles_where_the_races_fit_the_budget() {
        let settle = |every: u64| {
            let w = Window::new(true, 32);
            w.prove();
            let (mut races, mut nonce) = (0u64, 0u64);
            for i in 1..=20_000u64 {
                nonce += 1;
                if i % every == 0 {
                    races += 1;
                    w.on_race(nonce, nonce);
                } else {
                    w.on_success();
                }
            }
            (w.size(), races)
        };
        let (size, _) = settle(101);
        assert_eq!(size, 32, "a race per 100 successes is within the budget");
        let (size, _) = settle(20);
        assert!(
            size < 32,
            "a race per 20 successes shrinks the window: {size}"
        );
    }

    #[tokio::test]
    async fn a_time_mode_window_stays_at_concurrency() {
        let w = Window::new(false, 8);
        w.prove();
        assert_eq!(w.size(), 8);
        w.on_race(1, 2);
        assert_eq!(w.size(), 8);
    }

    #[tokio::test]
    async fn holds_requests_beyond_the_window_until_a_place_frees() {
        let w = Arc::new(Window::new(true, 1));
        w.prove();
        let first = w.acquire("a").await;
        let waiter = {
            let w = w.clone();
            tokio::spawn(async move {
                let _slot = w.acquire("b").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the window holds one");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released")
            .unwrap();
    }

    #[tokio::test]
    async fn until_a_cancel_all_is_accepted_one_account_probes_the_key_alone() {
        let w = Arc::new(Window::new(true, 8));
        let probe = w.acquire("a").await;
        drop(probe);
        let other = {
            let w = w.clone();
            tokio::spawn(async move {
                let _slot = w.acquire("b").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!other.is_finished(), "only the probing account may send");
        // The probe's own next request goes first.
        let again = w.acquire("a").await;
        drop(again);
        w.probe_done("a");
        tokio::time::timeout(Duration::from_secs(5), other)
            .await
            .expect("the next account probes once the first is done")
            .unwrap();
        // (The engine says so whenever an account's sweep ends.)
        w.probe_done("b");
        let mut c = w.acquire("c").await;
        let d = {
            let w = w.clone();
            tokio::spawn(async move {
                let _slot = w.acquire("c").await;
            })
        };
        w.prove();
        w.sending(&mut c);
        drop(c);
        tokio::time::timeout(Duration::from_secs(5), d)
            .await
            .expect("proven: the window opens")
            .unwrap();
        assert_eq!(w.size(), 4);
    }

    #[tokio::test]
    async fn tells_a_lone_request_from_one_that_raced() {
        let w = Window::new(false, 4);
        w.prove();
        let mut a = w.acquire("a").await;
        w.sending(&mut a);
        assert!(w.was_alone(&a));
        let mut b = w.acquire("b").await;
        w.sending(&mut b);
        assert!(!w.was_alone(&a), "b left while a was in flight");
        assert!(!w.was_alone(&b), "a was in flight when b left");
        drop(a);
        drop(b);
        let mut c = w.acquire("c").await;
        w.sending(&mut c);
        assert!(w.was_alone(&c));
    }
}
