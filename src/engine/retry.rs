//! How a call survives what is transient: one call of an account (or of the group) is attempts
//! through the key until one goes through, the exchange refuses it for good, its attempts run
//! out, or the run stops. Back-off grows with each failure and never undercuts `Retry-After`.

use std::time::Duration;

use super::key::{AttemptResult, Call, KeyHandle, Priority, StopCause, Whom};
use crate::client::{Collected, Verdict};
use crate::error::Error;
use crate::store::{AccountFailure, Action};

/// The longest back-off between two attempts of one call.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whom calls are for, and what its calls so far left.
pub struct Caller {
    pub whom: Whom,
    pub attempt_no: u32,
    /// A request for it was sent by this invocation.
    pub sent_any: bool,
    pub last_error: Option<String>,
}

impl Caller {
    /// Calls for `account`, after the `attempt_no` attempts an earlier invocation made.
    pub fn account(account: &str, attempt_no: u32) -> Caller {
        Caller::new(Whom::Account(account.into()), attempt_no)
    }

    /// Calls for the group itself (the account listing).
    pub fn group() -> Caller {
        Caller::new(Whom::Group, 0)
    }

    fn new(whom: Whom, attempt_no: u32) -> Caller {
        Caller {
            whom,
            attempt_no,
            sent_any: false,
            last_error: None,
        }
    }
}

/// How one call (with its retries) ended.
pub enum Step {
    Done(Collected),
    Failed(AccountFailure),
    Stopped(StopCause),
}

/// How patient a call is with transient failures.
#[derive(Clone, Copy)]
pub struct Retry {
    pub max_attempts: u32,
    /// First back-off pause; doubles with each further failure.
    pub base: Duration,
}

impl KeyHandle {
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
                whom: acct.whom.clone(),
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
        let (phase_name, account) = (action.as_str(), &acct.whom);
        match verdict {
            Verdict::Ok(collected) => Ok(Step::Done(collected)),
            Verdict::KeyRefused { reason, message } => {
                acct.last_error = Some(format!("{reason}: {message}"));
                Ok(Step::Failed(AccountFailure::KeyRefused))
            }
            Verdict::AccountRefused { reason, message } => {
                tracing::warn!(
                    %account,
                    action = phase_name,
                    reason = reason.as_str(),
                    message,
                    "the exchange refused this account; not retrying"
                );
                acct.last_error = Some(format!("{reason}: {message}"));
                Ok(Step::Failed(AccountFailure::AccountRefused))
            }
            // A lost race says nothing of the exchange's health; the dispatcher stops the key if
            // the refusals are not races.
            Verdict::NonceRefused { message, .. } => {
                tracing::debug!(
                    %account,
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
                        %account,
                        action = phase_name,
                        reason = reason.as_str(),
                        "giving up after {failures} failed attempts"
                    );
                    return Ok(Step::Failed(AccountFailure::OutOfAttempts));
                }
                let wait = backoff(retry.base, *failures, pause.and_then(|p| p.retry_after()));
                tracing::info!(
                    %account,
                    action = phase_name,
                    reason = reason.as_str(),
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
