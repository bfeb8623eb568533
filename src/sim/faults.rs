//! Reproducible faults. Each decision is a hash of (seed, account, path, ordinal of the request
//! for that account and path), never a draw from a shared generator, so the faults an account
//! sees do not depend on how concurrent requests for other accounts interleave.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::FaultConfig;

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
    ordinals: Mutex<HashMap<(String, String), u64>>,
}

impl Faults {
    pub(crate) fn new(seed: u64, config: FaultConfig) -> Self {
        Faults {
            seed,
            config,
            ordinals: Mutex::new(HashMap::new()),
        }
    }

    /// Decides the fate of the next authenticated request naming `account` (or none) on `path`.
    pub(crate) fn decide(&self, account: Option<&str>, path: &str) -> Decision {
        let account = account.unwrap_or("-");
        let ordinal = {
            let mut ordinals = self.ordinals.lock().unwrap_or_else(|e| e.into_inner());
            let n = ordinals
                .entry((account.to_owned(), path.to_owned()))
                .or_insert(0);
            *n += 1;
            *n
        };
        let ordinal = ordinal.to_string();
        let draw = |what: &str| stable_hash(self.seed, &[account, path, &ordinal, what]);
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

    pub(crate) fn delay_for(&self, salt: u64) -> Duration {
        self.delay(stable_hash(self.seed, &["latency", &salt.to_string()]))
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
        let seq_a: Vec<_> = (0..50).map(|_| a.decide(Some("x"), "/p")).collect();
        // Interleave other accounts on the second instance: x's decisions must not move.
        let seq_b: Vec<_> = (0..50)
            .map(|_| {
                b.decide(Some("y"), "/p");
                b.decide(None, "/q");
                b.decide(Some("x"), "/p")
            })
            .collect();
        assert_eq!(seq_a, seq_b);
        assert!(seq_a.iter().any(|d| d.before.is_some()));
        assert!(seq_a.iter().any(|d| d.before.is_none()));
    }

    #[test]
    fn unit_stays_below_one() {
        assert!(unit(u64::MAX) < 1.0);
        assert_eq!(unit(0), 0.0);
    }
}
