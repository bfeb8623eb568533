//! Requests of an increasing-mode key leave in nonce order.
//!
//! Nonces are issued in the writer's commit, and a commit releases every request it recorded at
//! once: left alone, they would race each other onto the wire and reach the exchange in any
//! order, and every one overtaken would be refused (`InvalidNonce`). So each committed nonce is
//! queued (in the writer thread, in commit order) and a request may leave only when its nonce is
//! the lowest still waiting. (Spacing departures further was tried: waits under tokio's 1 ms timer
//! resolution need spinning, which cost more than the races it saved; a 50-200 µs gap by blocking
//! sleep did not reduce races at all, see bench/RESULTS.md. Residual races, from paths
//! that reorder what they are given, are the in-flight window's job.) Time-mode nonces need no
//! order: their gate is open.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A queued nonce whose request has not come to leave after this long is presumed lost (its task
/// was abandoned) and no longer holds the others back.
const LOST_AFTER: Duration = Duration::from_millis(200);

pub struct Departures {
    ordered: bool,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    /// Committed nonces (µs) not yet departed, with when they were queued.
    waiting: BTreeMap<u64, Instant>,
}

impl Departures {
    pub fn new(ordered: bool) -> Self {
        Departures {
            ordered,
            state: Mutex::new(State {
                waiting: BTreeMap::new(),
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A nonce was committed (called in commit order).
    pub fn queue(&self, nonce_us: u64) {
        if self.ordered {
            self.state().waiting.insert(nonce_us, Instant::now());
        }
    }

    /// Waits until the request with this nonce may leave. Dropping the future before it returns
    /// leaves the nonce queued until it is presumed lost.
    pub async fn depart(&self, nonce_us: u64) {
        if !self.ordered {
            return;
        }
        loop {
            let changed = self.changed.notified();
            let wait = {
                let mut s = self.state();
                let now = Instant::now();
                // Lower nonces whose requests never came are dropped.
                while let Some((&first, &queued)) = s.waiting.first_key_value() {
                    if first < nonce_us && now.duration_since(queued) >= LOST_AFTER {
                        s.waiting.remove(&first);
                    } else {
                        break;
                    }
                }
                match s.waiting.first_key_value() {
                    Some((&first, &queued)) if first < nonce_us => Wait::Turn(queued + LOST_AFTER),
                    _ => {
                        s.waiting.remove(&nonce_us);
                        Wait::Go
                    }
                }
            };
            match wait {
                Wait::Go => {
                    // The previous departure handed its request to a connection task that may
                    // not have run yet (and tokio runs the newest woken task first): yielding
                    // lets it write first, so requests reach the wire in the order they left.
                    tokio::task::yield_now().await;
                    tokio::task::yield_now().await;
                    self.changed.notify_waiters();
                    return;
                }
                Wait::Turn(lost_at) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(lost_at) => {}
                    }
                }
            }
        }
    }
}

enum Wait {
    Go,
    /// Until a lower nonce leaves, or is presumed lost at this instant.
    Turn(Instant),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn requests_leave_in_nonce_order_whatever_order_they_come_in() {
        let d = Arc::new(Departures::new(true));
        for n in [10, 20, 30, 40] {
            d.queue(n);
        }
        let order = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = [40u64, 20, 30, 10]
            .into_iter()
            .map(|n| {
                let (d, order) = (d.clone(), order.clone());
                tokio::spawn(async move {
                    d.depart(n).await;
                    order.lock().unwrap().push(n);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [10, 20, 30, 40]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_request_holds_the_others_back_only_briefly() {
        let d = Departures::new(true);
        d.queue(1);
        d.queue(2);
        let start = Instant::now();
        d.depart(2).await;
        let waited = Instant::now() - start;
        assert!(
            waited >= LOST_AFTER && waited < LOST_AFTER * 2,
            "{waited:?}"
        );
    }

    /// A time-mode request leaves at once, even with a lower nonce queued and never departing:
    /// its first poll completes, and no time passes on the paused clock (a held departure would
    /// wait for the lower nonce to be presumed lost, 200 ms later).
    #[tokio::test(start_paused = true)]
    async fn time_mode_departures_are_not_held() {
        use futures::FutureExt;
        let d = Departures::new(false);
        d.queue(1);
        let start = Instant::now();
        assert!(
            d.depart(2).now_or_never().is_some(),
            "a time-mode departure waited"
        );
        d.depart(3).await;
        assert_eq!(Instant::now(), start, "no time passed");

        // The same calls in increasing mode are held: the check above can fail.
        let ordered = Departures::new(true);
        ordered.queue(1);
        ordered.queue(2);
        assert!(ordered.depart(2).now_or_never().is_none());
    }
}
