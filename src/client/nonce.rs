//! One nonce source per API key.
//!
//! The exchange checks nonces per key, so one master key has one sequence shared by every
//! subaccount. Each nonce is `max(now, last + 1)` in the key's unit: milliseconds for an
//! increasing-mode key, microseconds (sent as seconds with six decimals) for a time-mode key, so
//! that even 100,000 requests a second never run a time-mode nonce ahead of the clock.
//!
//! The source only hands nonces out; the key's dispatcher owns it and commits each nonce with the
//! request's write-ahead row and the key's high-water mark before the request leaves. A restarted
//! process, a second run or a clock stepped back therefore never issues a nonce at or below one
//! the exchange may have seen.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonceMode {
    /// Milliseconds since the epoch, strictly increasing forever (the exchange's default).
    Increasing,
    /// Seconds since the epoch with a fraction, within ±30 s of exchange time.
    Time,
}

impl NonceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NonceMode::Increasing => "increasing",
            NonceMode::Time => "time",
        }
    }
}

/// Wall-clock time in microseconds since the epoch. A trait so tests can step it backwards.
pub trait Clock: Send + Sync {
    fn now_us(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A nonce ready to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonce {
    /// The nonce as a time in microseconds since the epoch (whole milliseconds in increasing
    /// mode): what the high-water mark stores and what drift is measured against.
    pub value_us: u64,
    pub mode: NonceMode,
}

impl Nonce {
    /// The payload's `nonce` value: an integer of milliseconds in increasing mode, a decimal
    /// string of seconds in time mode (a string, so no float rounding can touch it).
    pub fn to_json(&self) -> serde_json::Value {
        match self.mode {
            NonceMode::Increasing => serde_json::Value::from(self.value_us / 1000),
            NonceMode::Time => serde_json::Value::from(self.to_string()),
        }
    }
}

impl std::fmt::Display for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.mode {
            NonceMode::Increasing => write!(f, "{}", self.value_us / 1000),
            NonceMode::Time => write!(
                f,
                "{}.{:06}",
                self.value_us / 1_000_000,
                self.value_us % 1_000_000
            ),
        }
    }
}

/// How far a time-mode nonce may be from the exchange's clock (either way) and still be
/// accepted (shared/gemini-api.md, section 2).
pub const TIME_WINDOW_US: u64 = 30_000_000;

pub struct NonceSource {
    mode: NonceMode,
    clock: Arc<dyn Clock>,
    /// The last nonce handed out, in microseconds (the stored mark at start).
    last_us: u64,
    /// A time-mode mark found further ahead of the clock than the exchange's window, and so
    /// not continued from (see [`NonceSource::new`]).
    ignored_mark_us: Option<u64>,
}

impl NonceSource {
    /// `high_water_us` is the key's mark read from storage (0 for a key never used).
    ///
    /// An increasing-mode key continues above its mark whatever the clock says: the exchange
    /// remembers the key's largest nonce forever. A time-mode key only has the exchange's window:
    /// a nonce more than [`TIME_WINDOW_US`] ahead of the clock was refused when it was sent
    /// (or the clock is wrong now, which the exchange's refusal says). Continuing above such a
    /// mark would make every nonce of the run unacceptable until real time caught up, so the
    /// source starts from the clock instead; [`NonceSource::ignored_mark_us`] says so.
    pub fn new(mode: NonceMode, clock: Arc<dyn Clock>, high_water_us: u64) -> Self {
        let now = clock.now_us();
        let ignored_mark_us = (mode == NonceMode::Time
            && high_water_us > now.saturating_add(TIME_WINDOW_US))
        .then_some(high_water_us);
        let start = if ignored_mark_us.is_some() {
            0
        } else {
            high_water_us
        };
        NonceSource {
            mode,
            clock,
            last_us: start,
            ignored_mark_us,
        }
    }

    /// The stored mark a time-mode source did not continue from, being beyond the exchange's
    /// window ahead of the clock.
    pub fn ignored_mark_us(&self) -> Option<u64> {
        self.ignored_mark_us
    }

    pub fn mode(&self) -> NonceMode {
        self.mode
    }

    /// The last nonce handed out (or the starting mark if none was), in microseconds.
    pub fn last_issued_us(&self) -> u64 {
        self.last_us
    }

    /// The clock, in microseconds: what drift is measured against.
    pub fn now_us(&self) -> u64 {
        self.clock.now_us()
    }

    /// Issues the next nonce. The caller makes it durable before sending it.
    pub fn issue(&mut self) -> Nonce {
        let now = self.clock.now_us();
        let last = self.last_us;
        let value_us = match self.mode {
            NonceMode::Increasing => {
                let ms = (now / 1000).max(last / 1000 + 1);
                ms.saturating_mul(1000)
            }
            NonceMode::Time => now.max(last.saturating_add(1)),
        };
        self.last_us = value_us;
        Nonce {
            value_us,
            mode: self.mode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    pub struct SteppedClock(pub AtomicU64);
    impl Clock for SteppedClock {
        fn now_us(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    const T0: u64 = 1_700_000_000_000_000;

    fn stepped(mode: NonceMode, mark: u64) -> (NonceSource, Arc<SteppedClock>) {
        let clock = Arc::new(SteppedClock(AtomicU64::new(T0)));
        (NonceSource::new(mode, clock.clone(), mark), clock)
    }

    #[test]
    fn increasing_mode_follows_the_clock_in_whole_milliseconds() {
        let (mut source, clock) = stepped(NonceMode::Increasing, 0);
        let a = source.issue();
        let b = source.issue();
        assert_eq!(a.to_string(), "1700000000000");
        assert_eq!(b.to_string(), "1700000000001", "same millisecond: last + 1");
        clock.0.store(T0 + 10_000_000, Ordering::SeqCst);
        assert_eq!(source.issue().to_string(), "1700000010000");
        assert_eq!(a.to_json(), serde_json::json!(1_700_000_000_000u64));
    }

    #[test]
    fn time_mode_counts_microseconds_so_it_stays_on_the_clock() {
        let (mut source, clock) = stepped(NonceMode::Time, 0);
        let first = source.issue();
        assert_eq!(first.to_string(), "1700000000.000000");
        assert_eq!(first.to_json(), serde_json::json!("1700000000.000000"));
        // 100,000 nonces within one clock reading run 0.1 s ahead, not 100 s.
        let mut last = first;
        for _ in 0..100_000 {
            last = source.issue();
        }
        assert_eq!(last.value_us - T0, 100_000);
        clock.0.store(T0 + 2_000_000, Ordering::SeqCst);
        assert_eq!(source.issue().to_string(), "1700000002.000000");
    }

    #[test]
    fn a_clock_stepped_back_or_a_mark_ahead_never_moves_the_nonce_back() {
        let (mut source, clock) = stepped(NonceMode::Increasing, 0);
        let before = source.issue();
        clock.0.store(T0 - 3_600_000_000, Ordering::SeqCst);
        assert_eq!(source.issue().value_us, before.value_us + 1000);

        // A new process reads a mark an hour ahead of its clock.
        let (mut restarted, _) = stepped(NonceMode::Increasing, T0 + 3_600_000_000);
        assert_eq!(restarted.issue().value_us, T0 + 3_600_001_000);
        let (mut restarted, _) = stepped(NonceMode::Time, T0 + 5);
        assert_eq!(restarted.issue().value_us, T0 + 6);
        assert_eq!(restarted.ignored_mark_us(), None);
    }

    #[test]
    fn a_time_mode_mark_beyond_the_window_does_not_hold_the_nonce_outside_it() {
        // Within the window: continued from, as the exchange may have accepted it.
        let (mut near, _) = stepped(NonceMode::Time, T0 + TIME_WINDOW_US);
        assert_eq!(near.issue().value_us, T0 + TIME_WINDOW_US + 1);
        assert_eq!(near.ignored_mark_us(), None);
        // Ten minutes ahead: no nonce that far ahead was ever accepted; start from the clock.
        let ahead = T0 + 600_000_000;
        let (mut far, _) = stepped(NonceMode::Time, ahead);
        assert_eq!(far.ignored_mark_us(), Some(ahead));
        assert_eq!(far.issue().value_us, T0);
        assert_eq!(far.issue().value_us, T0 + 1);
        // Increasing mode keeps the mark: the exchange remembers the largest nonce forever.
        let (mut increasing, _) = stepped(NonceMode::Increasing, ahead);
        assert_eq!(increasing.ignored_mark_us(), None);
        assert_eq!(increasing.issue().value_us, ahead + 1000);
    }
}
