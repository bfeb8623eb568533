//! Requests of an increasing-mode key leave in nonce order.
//!
//! Nonces are issued in the writer's commit, and a commit releases every request it recorded at
//! once: left alone, they would race each other onto the wire and reach the exchange in any
//! order, and every one overtaken would be refused (`InvalidNonce`). So each committed nonce is
//! queued (in the writer thread, in commit order) and a request may leave only when its nonce is
//! the lowest still waiting; it keeps that place, holding the next back, until it has been handed
//! to the HTTP client ([`Departure`] dropped). On the run's single-threaded runtime the client's
//! connection tasks then write the requests in the order they were handed over (tokio's
//! current-thread scheduler runs woken tasks first in, first out), at least [`MIN_SPACING`]
//! apart. Measured before this order was kept (bench/RESULTS.md): with 32 in flight, three
//! requests in four reached the simulator behind a higher nonce. Time-mode nonces need no
//! order: their gate is open.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The least time between two requests handed over. Requests that reach the exchange a few
/// microseconds apart on different connections are served in either order (the simulator's worker
/// threads take the newest first); measured at 32 in flight with no rate limit (bench/RESULTS.md),
/// this spacing took the requests lost to races from about 3.5 % to under 1 %, at no cost in
/// throughput. At any real rate limit requests are milliseconds apart and it never binds.
const MIN_SPACING: std::time::Duration = std::time::Duration::from_micros(25);

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
    /// When the last request was handed over.
    last_handover: Option<std::time::Instant>,
}

/// A request's turn to leave. The next nonce waits until this is dropped, which the sender does
/// once the request is in the HTTP client's hands.
#[must_use = "the next request leaves when this is dropped"]
pub struct Departure<'a> {
    gate: Option<(&'a Departures, u64)>,
}

impl Drop for Departure<'_> {
    fn drop(&mut self) {
        if let Some((gate, nonce_us)) = self.gate.take() {
            {
                let mut s = gate.state();
                s.waiting.remove(&nonce_us);
                s.last_handover = Some(std::time::Instant::now());
            }
            gate.changed.notify_waiters();
        }
    }
}

impl Departures {
    pub fn new(ordered: bool) -> Self {
        Departures {
            ordered,
            state: Mutex::new(State {
                waiting: BTreeMap::new(),
                last_handover: None,
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
    pub async fn depart(&self, nonce_us: u64) -> Departure<'_> {
        if !self.ordered {
            return Departure { gate: None };
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a departure between the two is not missed.
            changed.as_mut().enable();
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
                    Some((&first, &queued)) if first < nonce_us => Some(queued + LOST_AFTER),
                    _ => None,
                }
            };
            match wait {
                None => {
                    // Below the timer's resolution: other tasks run meanwhile, and a burst spins
                    // at most this long per request.
                    while self
                        .state()
                        .last_handover
                        .is_some_and(|last| last.elapsed() < MIN_SPACING)
                    {
                        tokio::task::yield_now().await;
                    }
                    return Departure {
                        gate: Some((self, nonce_us)),
                    };
                }
                Some(lost_at) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(lost_at) => {}
                    }
                }
            }
        }
    }
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
                    let turn = d.depart(n).await;
                    order.lock().unwrap().push(n);
                    drop(turn);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [10, 20, 30, 40]);
    }

    /// The next nonce stays behind while the one before it is being handed to the HTTP client:
    /// leaving is not enough, the request must be in the client's hands.
    #[tokio::test(start_paused = true)]
    async fn the_next_request_waits_until_the_one_before_is_handed_over() {
        let d = Arc::new(Departures::new(true));
        d.queue(10);
        d.queue(20);
        let held = d.depart(10).await;
        let next = {
            let d = d.clone();
            tokio::spawn(async move { drop(d.depart(20).await) })
        };
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(
            !next.is_finished(),
            "20 left while 10 was still being handed over"
        );
        drop(held);
        next.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_request_holds_the_others_back_only_briefly() {
        let d = Departures::new(true);
        d.queue(1);
        d.queue(2);
        let start = Instant::now();
        drop(d.depart(2).await);
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
        drop(d.depart(3).await);
        assert_eq!(Instant::now(), start, "no time passed");

        // The same calls in increasing mode are held: the check above can fail.
        let ordered = Departures::new(true);
        ordered.queue(1);
        ordered.queue(2);
        assert!(ordered.depart(2).now_or_never().is_none());
    }
}
