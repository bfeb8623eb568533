//! One nonce source per API key.
//!
//! The exchange checks nonces per key, so one master key has one sequence shared by every
//! subaccount. Every nonce is `max(now, last + 1)`, and the key's high-water mark is written to
//! durable storage *before* a nonce above it is used. A restarted process, a second run or a clock
//! stepped back therefore never issues a nonce at or below one the exchange may have seen.
//!
//! Persisting every nonce would cost a synchronous database write per request, so the source
//! reserves a lease ahead (`LEASE_MS` of nonce space) and writes only when it outruns the lease.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

/// How far ahead of the issued nonce the persisted mark reaches. Small enough that a time-mode key
/// stays within the exchange's ±30 s window after a crash, large enough that a sweep at the
/// exchange's rate persists only every few seconds.
const LEASE_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonceMode {
    /// Milliseconds since the epoch, strictly increasing forever (the exchange's default).
    Increasing,
    /// Seconds since the epoch with a millisecond fraction, within ±30 s of exchange time.
    Time,
}

/// Wall-clock time in milliseconds since the epoch. A trait so tests can step it backwards.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Durable storage of a key's high-water mark: the highest nonce (in ms) that may have been used.
pub type PersistMark = Arc<dyn Fn(u64) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A nonce ready to be sent: its value in ms and the text that goes in the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nonce {
    pub value_ms: u64,
    pub mode: NonceMode,
}

impl Nonce {
    /// The payload's `nonce` value: an integer in increasing mode, a decimal string of seconds in
    /// time mode (a string so no float rounding can touch it).
    pub fn to_json(&self) -> serde_json::Value {
        match self.mode {
            NonceMode::Increasing => serde_json::Value::from(self.value_ms),
            NonceMode::Time => serde_json::Value::from(self.to_string()),
        }
    }
}

impl std::fmt::Display for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.mode {
            NonceMode::Increasing => write!(f, "{}", self.value_ms),
            NonceMode::Time => write!(f, "{}.{:03}", self.value_ms / 1000, self.value_ms % 1000),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot persist the nonce high-water mark: {0}")]
pub struct NonceError(String);

pub struct NonceSource {
    mode: NonceMode,
    clock: Arc<dyn Clock>,
    persist: PersistMark,
    state: tokio::sync::Mutex<State>,
}

struct State {
    last_issued: u64,
    persisted: u64,
}

impl NonceSource {
    /// `high_water` is the mark read from storage at start-up (0 for a key never used).
    pub fn new(
        mode: NonceMode,
        clock: Arc<dyn Clock>,
        high_water: u64,
        persist: PersistMark,
    ) -> Self {
        NonceSource {
            mode,
            clock,
            persist,
            state: tokio::sync::Mutex::new(State {
                last_issued: high_water,
                persisted: high_water,
            }),
        }
    }

    pub fn mode(&self) -> NonceMode {
        self.mode
    }

    /// The last nonce handed out (or the starting mark if none was): everything ever sent with
    /// this key from this source is at or below it.
    pub async fn last_issued(&self) -> u64 {
        self.state.lock().await.last_issued
    }

    /// Issues the next nonce. Call it at the moment of sending, after the rate limiter.
    pub async fn next(&self) -> Result<Nonce, NonceError> {
        // The lock is held across the persist so that no nonce above the durable mark can be
        // handed out while the mark is being raised.
        let mut state = self.state.lock().await;
        let value = self.clock.now_ms().max(state.last_issued + 1);
        if value > state.persisted {
            let mark = value + LEASE_MS;
            (self.persist)(mark).await.map_err(NonceError)?;
            state.persisted = mark;
        }
        state.last_issued = value;
        Ok(Nonce {
            value_ms: value,
            mode: self.mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    pub struct SteppedClock(pub AtomicU64);
    impl Clock for SteppedClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn recording_store() -> (PersistMark, Arc<Mutex<Vec<u64>>>) {
        let marks = Arc::new(Mutex::new(Vec::new()));
        let sink = marks.clone();
        let persist: PersistMark = Arc::new(move |mark| {
            sink.lock().unwrap().push(mark);
            Box::pin(async { Ok(()) })
        });
        (persist, marks)
    }

    #[tokio::test]
    async fn follows_the_clock_and_never_repeats_within_a_millisecond() {
        let clock = Arc::new(SteppedClock(AtomicU64::new(1_700_000_000_000)));
        let (persist, _) = recording_store();
        let source = NonceSource::new(NonceMode::Increasing, clock.clone(), 0, persist);
        let a = source.next().await.unwrap().value_ms;
        let b = source.next().await.unwrap().value_ms;
        assert_eq!(a, 1_700_000_000_000);
        assert_eq!(b, a + 1, "same millisecond: last + 1");
        clock.0.store(1_700_000_010_000, Ordering::SeqCst);
        assert_eq!(source.next().await.unwrap().value_ms, 1_700_000_010_000);
    }

    #[tokio::test]
    async fn a_clock_stepped_back_does_not_move_the_nonce_back() {
        let clock = Arc::new(SteppedClock(AtomicU64::new(1_700_000_000_000)));
        let (persist, _) = recording_store();
        let source = NonceSource::new(NonceMode::Increasing, clock.clone(), 0, persist);
        let before = source.next().await.unwrap().value_ms;
        clock
            .0
            .store(1_700_000_000_000 - 3_600_000, Ordering::SeqCst);
        let after = source.next().await.unwrap().value_ms;
        assert_eq!(after, before + 1);
    }

    #[tokio::test]
    async fn a_restart_continues_above_the_persisted_mark_even_with_the_clock_behind() {
        let clock = Arc::new(SteppedClock(AtomicU64::new(1_700_000_000_000)));
        let (persist, marks) = recording_store();
        let first = NonceSource::new(NonceMode::Increasing, clock.clone(), 0, persist.clone());
        let mut issued = Vec::new();
        for _ in 0..100 {
            issued.push(first.next().await.unwrap().value_ms);
        }
        let mark = *marks.lock().unwrap().last().unwrap();
        assert!(
            mark >= *issued.last().unwrap(),
            "the mark is written before use"
        );

        // The process dies; the clock is stepped back an hour; a new process reads the mark.
        clock
            .0
            .store(1_700_000_000_000 - 3_600_000, Ordering::SeqCst);
        let second = NonceSource::new(NonceMode::Increasing, clock, mark, persist);
        let next = second.next().await.unwrap().value_ms;
        assert!(next > *issued.last().unwrap());
        assert_eq!(next, mark + 1);
    }

    #[tokio::test]
    async fn concurrent_issuers_get_unique_strictly_ordered_nonces() {
        let clock = Arc::new(SystemClock);
        let (persist, marks) = recording_store();
        let source = Arc::new(NonceSource::new(NonceMode::Increasing, clock, 0, persist));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let source = source.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    for _ in 0..50 {
                        mine.push(source.next().await.unwrap().value_ms);
                    }
                    mine
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            let mine = t.await.unwrap();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "each issuer sees increasing nonces"
            );
            all.extend(mine);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "no nonce issued twice");
        assert!(*marks.lock().unwrap().iter().max().unwrap() >= *all.last().unwrap());
    }

    #[tokio::test]
    async fn a_failed_persist_issues_nothing() {
        let clock = Arc::new(SteppedClock(AtomicU64::new(1_000_000)));
        let persist: PersistMark = Arc::new(|_| Box::pin(async { Err("disk full".to_string()) }));
        let source = NonceSource::new(NonceMode::Increasing, clock, 0, persist);
        assert!(source.next().await.is_err());
    }

    #[test]
    fn renders_each_mode_as_the_exchange_expects() {
        let inc = Nonce {
            value_ms: 1_700_000_000_123,
            mode: NonceMode::Increasing,
        };
        assert_eq!(inc.to_json(), serde_json::json!(1_700_000_000_123u64));
        let time = Nonce {
            value_ms: 1_700_000_000_007,
            mode: NonceMode::Time,
        };
        assert_eq!(time.to_json(), serde_json::json!("1700000000.007"));
    }
}
