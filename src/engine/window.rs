//! How many requests of a key may be in flight at once.
//!
//! In increasing nonce mode the exchange refuses a request whose nonce is not above the last one
//! it accepted, so two requests in flight can reach it out of order and the later-arriving lower
//! nonce is refused (`InvalidNonce`, "has not increased"). Such a race is congestion: the window
//! reacts like TCP's. It starts small and doubles per round trip (slow start), then grows by one
//! request per window of successes, and once races have been seen by one per `GROWTH_DAMPING`
//! windows; a race halves it (never below one request in flight). The races of one burst
//! (refusals of nonces issued before the halving) count once. Time-mode nonces only need to be
//! fresh, so a time-mode key's window stays at `--concurrency`.
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

/// After a race, successes per window needed to grow it by one request.
const GROWTH_DAMPING: f64 = 32.0;

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
    /// Nonces at or below this belong to the burst that last shrank the window.
    decrease_mark_us: u64,
    /// Races that shrank the window.
    shrinks: u64,
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
                decrease_mark_us: 0,
                shrinks: 0,
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
            let before = s.cwnd as usize;
            s.cwnd = if s.shrinks == 0 && s.cwnd < s.ssthresh {
                s.cwnd + 1.0
            } else if s.shrinks == 0 {
                s.cwnd + 1.0 / s.cwnd
            } else {
                s.cwnd + 1.0 / (s.cwnd * GROWTH_DAMPING)
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
        if nonce_us <= s.decrease_mark_us {
            return;
        }
        s.ssthresh = (s.cwnd / 2.0).max(1.0);
        s.cwnd = s.ssthresh;
        s.decrease_mark_us = last_issued_us;
        s.shrinks += 1;
        tracing::debug!(window = s.cwnd, "nonce race: the window is halved");
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
    async fn starts_small_grows_to_the_cap_and_halves_on_a_race() {
        let w = Window::new(true, 32);
        assert_eq!(w.size(), 1, "one request until a cancel-all is accepted");
        w.prove();
        assert_eq!(w.size(), 4);
        for _ in 0..200 {
            w.on_success();
        }
        assert_eq!(w.size(), 32);
        w.on_race(100, 150);
        assert_eq!(w.size(), 16);
        // The rest of the same burst does not shrink it again.
        w.on_race(120, 160);
        assert_eq!(w.shrinks(), 1);
        // Then one more per 32 windows of successes.
        let mut successes = 0;
        while w.size() == 16 {
            w.on_success();
            successes += 1;
        }
        assert_eq!(w.size(), 17);
        assert!((16 * 32..=17 * 32).contains(&successes), "{successes}");
        w.on_race(200, 210);
        assert_eq!((w.size(), w.shrinks()), (8, 2));
        for i in 3..=8 {
            w.on_race(1000 * i, 1000 * i);
        }
        assert_eq!(w.size(), 1, "never below one");
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
        let w = Arc::new(Window::new(true, 2));
        w.prove();
        w.on_race(1, 1);
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
