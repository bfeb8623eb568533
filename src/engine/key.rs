//! A key as its callers see it: they ask its dispatcher for requests ([`KeyHandle::attempt`]),
//! retry what is transient ([`KeyHandle::call`]), and read why the key stopped ([`KeyStop`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::client::{Collected, Exchanged, Verdict};
use crate::error::Error;
pub use crate::exit::KeyHalt;
use crate::store::{Action, Failure};

/// The longest `Retry-After` a run waits out. An exchange asking for longer stops the run
/// (status incomplete, the reason recorded) rather than being silently cut short.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The longest back-off between two attempts of one call.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct KeyStopReason {
    pub kind: KeyHalt,
    pub message: String,
}

/// The switch that stops every request of the key. The first reason wins.
#[derive(Default)]
pub struct KeyStop {
    token: CancellationToken,
    reason: Mutex<Option<KeyStopReason>>,
}

impl KeyStop {
    pub fn trigger(&self, kind: KeyHalt, message: String) {
        let mut reason = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if reason.is_none() {
            tracing::error!("{message}; no further request will be sent with this key");
            *reason = Some(KeyStopReason { kind, message });
        }
        self.token.cancel();
    }

    pub fn is_halted(&self) -> bool {
        self.token.is_cancelled()
    }

    pub async fn halted(&self) {
        self.token.cancelled().await;
    }

    pub fn reason(&self) -> Option<KeyStopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Why a request was not sent, or its reply not waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// SIGINT/SIGTERM (or the grace period after one ran out).
    Signal,
    /// The key's [`KeyStop`] was thrown.
    Key,
}

/// Which requests go first when several wait for the key: most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Cancel-alls (and what a run cannot start without: the group's listing, snapshots).
    Cancel,
    /// Cancel-alls again, for orders a reply or a listing still found open.
    Recancel,
    /// The listings that prove accounts flat.
    Prove,
    /// The listings that hold the group flat after its sweep.
    Hold,
}

/// One request a caller asks of the key.
pub struct Call {
    /// The account, or [`GROUP_CALLER`] for the group's own listing.
    pub caller: Arc<str>,
    pub attempt_no: u32,
    pub action: Action,
    pub priority: Priority,
    pub params: Vec<(&'static str, serde_json::Value)>,
}

/// How one attempt ended.
pub enum AttemptResult {
    /// The exchange answered (or the transport failed), and the record is queued.
    Replied(Exchanged),
    /// Nothing was sent: the run is stopping (a signal) or the key is halted.
    NotSent(StopCause),
    /// Sent, but the run stopped waiting for the reply (grace period over, second signal). The
    /// attempt stays `in_flight` until the run is settled, then reads `abandoned`.
    Abandoned,
}

/// A request handed to the dispatcher, with where its answer goes.
pub struct Request {
    pub call: Call,
    pub answer: oneshot::Sender<Result<AttemptResult, Error>>,
}

/// How the audit trail names the group's own requests (its account listing), which act on no
/// account: the empty name, which no account can have (the nickname rule needs a character).
pub const GROUP_CALLER: &str = "";

/// Whom calls are for, and what its calls so far left.
pub struct Caller {
    pub name: Arc<str>,
    pub attempt_no: u32,
    /// A request for it was sent by this invocation.
    pub sent_any: bool,
    pub last_error: Option<String>,
}

impl Caller {
    /// Calls for `account`, after the `attempt_no` attempts an earlier invocation made.
    pub fn account(account: &str, attempt_no: u32) -> Caller {
        Caller {
            name: account.into(),
            attempt_no,
            sent_any: false,
            last_error: None,
        }
    }

    /// Calls for the group itself (the account listing).
    pub fn group() -> Caller {
        Caller::account(GROUP_CALLER, 0)
    }
}

/// How one call (with its retries) ended.
pub enum Step {
    Done(Collected),
    Failed(Failure),
    Stopped(StopCause),
}

/// How patient a call is with transient failures.
#[derive(Clone, Copy)]
pub struct Retry {
    pub max_attempts: u32,
    /// First back-off pause; doubles with each further failure.
    pub base: Duration,
}

/// What callers hold of a key: a line to its dispatcher.
#[derive(Clone)]
pub struct KeyHandle {
    pub(super) requests: mpsc::UnboundedSender<Request>,
    pub halt: Arc<KeyStop>,
    pub(super) shutdown: CancellationToken,
}

impl KeyHandle {
    /// A stop signal came: no new request will be sent.
    pub fn stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// One request, sent when the dispatcher's queue, pace and in-flight limit let it.
    pub async fn attempt(&self, call: Call) -> Result<AttemptResult, Error> {
        let (answer, heard) = oneshot::channel();
        let gone = || Error::Internal("the key's dispatcher stopped without answering".into());
        self.requests
            .send(Request { call, answer })
            .map_err(|_| gone())?;
        heard.await.map_err(|_| gone())?
    }

    /// One call of `action` for `acct`, retried while the failure is transient (with back-off)
    /// or a lost nonce race (at once: the dispatcher spaces it).
    pub async fn call(
        &self,
        acct: &mut Caller,
        action: Action,
        priority: Priority,
        params: &[(&'static str, serde_json::Value)],
        retry: Retry,
    ) -> Result<Step, Error> {
        let mut failures = 0u32;
        loop {
            acct.attempt_no += 1;
            let call = Call {
                caller: acct.name.clone(),
                attempt_no: acct.attempt_no,
                action,
                priority,
                params: params.to_vec(),
            };
            let exchanged = match self.attempt(call).await? {
                AttemptResult::NotSent(stop) => {
                    acct.attempt_no -= 1;
                    return Ok(Step::Stopped(stop));
                }
                AttemptResult::Abandoned => {
                    acct.sent_any = true;
                    return Ok(Step::Stopped(StopCause::Signal));
                }
                AttemptResult::Replied(exchanged) => {
                    acct.sent_any = true;
                    exchanged
                }
            };
            let pause = match self.verdict(acct, action, exchanged.verdict, &mut failures, retry) {
                Ok(step) => return Ok(step),
                Err(pause) => pause,
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.shutdown.cancelled() => return Ok(Step::Stopped(StopCause::Signal)),
                _ = self.halt.halted() => return Ok(Step::Stopped(StopCause::Key)),
            }
        }
    }

    /// Where a reply leaves the call: done, or worth another attempt after a pause.
    fn verdict(
        &self,
        acct: &mut Caller,
        action: Action,
        verdict: Verdict,
        failures: &mut u32,
        retry: Retry,
    ) -> Result<Step, Duration> {
        let (phase_name, account) = (action.as_str(), &*acct.name);
        match verdict {
            Verdict::Ok(collected) => Ok(Step::Done(collected)),
            Verdict::KeyRefused { reason, message } => {
                acct.last_error = Some(format!("{reason}: {message}"));
                Ok(Step::Failed(Failure::KeyRefused))
            }
            Verdict::AccountRefused { reason, message } => {
                tracing::warn!(
                    account,
                    action = phase_name,
                    reason,
                    message,
                    "the exchange refused this account; not retrying"
                );
                acct.last_error = Some(format!("{reason}: {message}"));
                Ok(Step::Failed(Failure::AccountRefused))
            }
            // A lost race says nothing of the exchange's health; the dispatcher stops the key if
            // the refusals are not races.
            Verdict::NonceRefused { message, .. } => {
                tracing::debug!(
                    account,
                    action = phase_name,
                    "InvalidNonce; retrying with a fresh nonce"
                );
                acct.last_error = Some(format!("InvalidNonce: {message}"));
                Err(Duration::ZERO)
            }
            Verdict::Transient {
                reason,
                message,
                pause,
            } => {
                *failures += 1;
                acct.last_error = Some(format!("{reason}: {message}"));
                if *failures >= retry.max_attempts {
                    tracing::warn!(
                        account,
                        action = phase_name,
                        reason,
                        "giving up after {failures} failed attempts"
                    );
                    return Ok(Step::Failed(Failure::OutOfAttempts));
                }
                let wait = backoff(retry.base, *failures, pause.and_then(|p| p.retry_after()));
                tracing::info!(
                    account,
                    action = phase_name,
                    reason,
                    pause_ms = wait.as_millis() as u64,
                    "transient failure; retrying"
                );
                Err(wait)
            }
        }
    }
}

/// Exponential back-off with jitter: `base · 2^(n-1)`, scaled by a random 50–100 %, capped, and
/// never shorter than the exchange's `Retry-After` (the dispatcher holds the key that long too).
fn backoff(base: Duration, failures: u32, retry_after: Option<Duration>) -> Duration {
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let jittered = exp
        .mul_f64(0.5 + rand::random::<f64>() * 0.5)
        .min(MAX_BACKOFF);
    retry_after.map_or(jittered, |r| jittered.max(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        for n in 1..=20 {
            let d = backoff(base, n, None);
            let nominal = base.saturating_mul(1 << (n - 1).min(16));
            assert!(d >= nominal.mul_f64(0.5).min(MAX_BACKOFF), "{n}: {d:?}");
            assert!(d <= nominal.min(MAX_BACKOFF), "{n}: {d:?}");
        }
        assert_eq!(
            backoff(base, 1, Some(Duration::from_secs(90))),
            Duration::from_secs(90),
            "a Retry-After is followed exactly, not cut short"
        );
    }
}
