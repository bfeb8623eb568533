//! Reproducible faults. Each decision is a hash of (seed, account, path, ordinal of the request
//! for that account and path), never a draw from a shared generator, so the faults an account
//! sees do not depend on how concurrent requests for other accounts interleave.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::FaultConfig;

/// Requests to each endpoint are numbered per account, for the fault decisions.
pub(crate) const ENDPOINTS: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// 500 `System`.
    Http500,
    /// 502 with a proxy's HTML page.
    Http502,
    /// 503 `Maintenance`.
    Http503,
    /// Held for `stall_for`, then a 504 HTML page.
    Stall,
    /// Connection closed without a response.
    Drop,
    /// 200 whose body is a truncated JSON document (`html == false`) or an HTML page.
    Garbage { html: bool },
}

impl Fault {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Fault::Http500 => "500",
            Fault::Http502 => "502",
            Fault::Http503 => "503",
            Fault::Stall => "stall",
            Fault::Drop => "drop",
            Fault::Garbage { .. } => "garbage",
        }
    }
}

/// How a cancel-all that went through loses its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LostReply {
    Drop,
    Http502,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) before: Option<Fault>,
    /// Only acted on by cancel-all: the cancellation happens, the reply does not arrive.
    pub(crate) lost_reply: Option<LostReply>,
    pub(crate) delay: Duration,
}

pub(crate) struct Faults {
    seed: u64,
    pub(crate) config: FaultConfig,
    /// No fault can happen and answers are not delayed: decisions need no drawing.
    quiet: bool,
    /// Per endpoint: authenticated requests that named no account (the account's own counters
    /// live with the account).
    unnamed: [AtomicU64; ENDPOINTS],
}

impl Faults {
    pub(crate) fn new(seed: u64, config: FaultConfig) -> Self {
        let quiet = [
            config.p_500,
            config.p_502,
            config.p_503,
            config.p_stall,
            config.p_drop,
            config.p_garbage,
            config.p_lost_reply,
        ]
        .iter()
        .all(|p| *p == 0.0)
            && config.latency.is_zero()
            && config.jitter.is_zero();
        Faults {
            seed,
            config,
            quiet,
            unnamed: Default::default(),
        }
    }

    /// The next ordinal of a request to endpoint number `endpoint` that named no account.
    pub(crate) fn next_unnamed(&self, endpoint: usize) -> u64 {
        self.unnamed[endpoint].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Decides the fate of the authenticated request naming `account` (`-` for none) on `path`
    /// that is the `ordinal`-th (from 1) for that account and path.
    pub(crate) fn decide(&self, account: &str, path: &str, ordinal: u64) -> Decision {
        if self.quiet {
            return Decision {
                before: None,
                lost_reply: None,
                delay: Duration::ZERO,
            };
        }
        let mut digits = Digits::default();
        let ordinal = digits.of(ordinal);
        let draw = |what: &str| stable_hash(self.seed, &[account, path, ordinal, what]);
        let c = &self.config;
        let variant = draw("variant") & 1 == 1;
        let r = unit(draw("fault"));
        let kinds = [
            (c.p_500, Fault::Http500),
            (c.p_502, Fault::Http502),
            (c.p_503, Fault::Http503),
            (c.p_stall, Fault::Stall),
            (c.p_drop, Fault::Drop),
            (c.p_garbage, Fault::Garbage { html: variant }),
        ];
        let mut edge = 0.0;
        let mut before = None;
        for (p, kind) in kinds {
            edge += p;
            if r < edge {
                before = Some(kind);
                break;
            }
        }
        let lost_reply = (unit(draw("lost")) < c.p_lost_reply).then_some(if variant {
            LostReply::Http502
        } else {
            LostReply::Drop
        });
        Decision {
            before,
            lost_reply,
            delay: self.delay(draw("jitter")),
        }
    }

    /// Latency plus a hash-drawn share of the jitter.
    pub(crate) fn delay(&self, h: u64) -> Duration {
        self.config.latency + self.config.jitter.mul_f64(unit(h))
    }

    pub(crate) fn delay_for(&self, serial: u64) -> Duration {
        if self.config.latency.is_zero() && self.config.jitter.is_zero() {
            return Duration::ZERO;
        }
        let mut digits = Digits::default();
        self.delay(stable_hash(self.seed, &["latency", digits.of(serial)]))
    }

    pub(crate) fn inbound_delay(&self, serial: u64) -> Duration {
        inbound_delay(self.seed, &self.config, serial)
    }
}

/// `inbound_latency + U[0,1) * inbound_jitter`, drawn from (seed, serial).
pub(crate) fn inbound_delay(seed: u64, config: &FaultConfig, serial: u64) -> Duration {
    if config.inbound_jitter.is_zero() {
        return config.inbound_latency;
    }
    let mut digits = Digits::default();
    let h = stable_hash(seed, &["inbound", digits.of(serial)]);
    config.inbound_latency + config.inbound_jitter.mul_f64(unit(h))
}

/// A number's decimal text without allocating (the hashes take text).
#[derive(Default)]
struct Digits([u8; 20]);

impl Digits {
    fn of(&mut self, mut n: u64) -> &str {
        let mut i = self.0.len();
        loop {
            i -= 1;
            self.0[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        std::str::from_utf8(&self.0[i..]).expect("ASCII digits")
    }
}

/// A 64-bit hash that is stable across runs, platforms and Rust versions (std's is not).
pub(crate) fn stable_hash(seed: u64, parts: &[&str]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ splitmix(seed);
    for part in parts {
        // The separator keeps ("ab","c") and ("a","bc") apart.
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    splitmix(h)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in [0, 1).
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_depend_only_on_account_path_and_ordinal() {
        let config = FaultConfig {
            p_500: 0.3,
            p_drop: 0.3,
            p_lost_reply: 0.5,
            ..FaultConfig::default()
        };
        let a = Faults::new(1, config.clone());
        let b = Faults::new(1, config);
        let seq_a: Vec<_> = (1..=50).map(|n| a.decide("x", "/p", n)).collect();
        let seq_b: Vec<_> = (1..=50).map(|n| b.decide("x", "/p", n)).collect();
        assert_eq!(seq_a, seq_b);
        // Other accounts and paths draw other decisions.
        let seq_y: Vec<_> = (1..=50).map(|n| a.decide("y", "/p", n)).collect();
        assert_ne!(seq_a, seq_y);
        assert!(seq_a.iter().any(|d| d.before.is_some()));
        assert!(seq_a.iter().any(|d| d.before.is_none()));
    }

    #[test]
    fn digits_are_the_decimal_text() {
        let mut d = Digits::default();
        for n in [0, 9, 10, 1234567890123, u64::MAX] {
            assert_eq!(d.of(n), n.to_string());
        }
    }

    #[test]
    fn inbound_delay_is_latency_plus_a_share_of_the_jitter() {
        let config = FaultConfig {
            inbound_latency: Duration::from_millis(5),
            inbound_jitter: Duration::from_millis(100),
            ..FaultConfig::default()
        };
        let delays: Vec<Duration> = (1..=100).map(|s| inbound_delay(3, &config, s)).collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(5)));
        assert!(delays.iter().all(|d| *d < Duration::from_millis(105)));
        assert_eq!(
            delays,
            (1..=100)
                .map(|s| inbound_delay(3, &config, s))
                .collect::<Vec<_>>()
        );
        assert_ne!(
            delays,
            (1..=100)
                .map(|s| inbound_delay(4, &config, s))
                .collect::<Vec<_>>()
        );
        assert_eq!(inbound_delay(3, &FaultConfig::default(), 1), Duration::ZERO);
    }

    #[test]
    fn unit_stays_below_one() {
        assert!(unit(u64::MAX) < 1.0);
        assert_eq!(unit(0), 0.0);
    }
}
