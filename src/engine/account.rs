//! One account's sweep: list its open orders, cancel them all (again while some are rejected),
//! list again to verify, retrying what is transient. Every request goes through the key's
//! session; this module decides what the account's outcome is.

use std::sync::Arc;
use std::time::Duration;

use super::session::{AttemptResult, KeySession, RunContext, Stop};
use crate::client::{Collected, Verdict};
use crate::config::SweepConfig;
use crate::error::Error;
use crate::store::{AccountFinish, AccountStatus, Failure, Phase};

/// The longest back-off between two attempts of one call.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How one call (with its retries) ended.
enum Step {
    Done(Collected),
    Failed(Failure),
    Stopped(Stop),
}

/// What is known of the account while it is being swept.
struct Progress {
    name: Arc<str>,
    attempt_no: u32,
    /// A request for this account was sent by this invocation.
    sent_any: bool,
    last_error: Option<String>,
}

pub struct AccountSweeper<'a> {
    pub config: &'a SweepConfig,
    pub session: &'a KeySession,
    pub run: &'a RunContext,
    /// A resumed run continues attempt numbers and keeps the first snapshot.
    pub resuming: bool,
}

impl AccountSweeper<'_> {
    /// Sweeps one account and records its outcome.
    pub async fn sweep(&self, account: &str) -> Result<AccountStatus, Error> {
        let outcome = self.sweep_inner(account).await;
        // If this account was probing the key and ends without proving it, the next one probes.
        self.session.window.probe_done(account);
        outcome
    }

    async fn sweep_inner(&self, account: &str) -> Result<AccountStatus, Error> {
        let (attempt_no, snapshot_taken) = if self.resuming {
            self.run
                .store
                .account_progress(self.run.run_id, account)
                .await?
        } else {
            (0, false)
        };
        let mut acct = Progress {
            name: account.into(),
            attempt_no,
            sent_any: false,
            last_error: None,
        };

        if self.config.verify && !snapshot_taken {
            // A failed snapshot only costs the reconciliation its "before" side; cancelling
            // matters more, so the sweep goes on, unless the key itself was refused.
            match self.call(&mut acct, Phase::Snapshot).await? {
                Step::Done(_) | Step::Failed(Failure::AccountRefused | Failure::OutOfAttempts) => {}
                Step::Failed(failure) => {
                    return self
                        .finish(acct, AccountStatus::Failed, Some(failure))
                        .await;
                }
                Step::Stopped(stop) => return self.stopped(acct, stop, None).await,
            }
        }

        let mut reject_retries_left = self.config.reject_retries;
        // The status the account keeps if nothing more succeeds.
        let mut standing = None;
        let mut failure = None;
        loop {
            match self.call(&mut acct, Phase::Cancel).await? {
                Step::Done(collected) if collected.rejected_count > 0 => {
                    standing = Some(AccountStatus::RejectsLeft);
                    acct.last_error = Some(format!(
                        "{} orders refused cancellation",
                        collected.rejected_count
                    ));
                    if reject_retries_left == 0 {
                        break;
                    }
                    reject_retries_left -= 1;
                }
                Step::Done(collected) => {
                    tracing::debug!(
                        account,
                        cancelled = collected.cancelled_count,
                        "cancel-all done"
                    );
                    standing = Some(AccountStatus::Swept);
                    acct.last_error = None;
                    break;
                }
                Step::Failed(f) => {
                    failure = Some(f);
                    break;
                }
                Step::Stopped(stop) => return self.stopped(acct, stop, standing).await,
            }
        }
        let Some(standing) = standing else {
            return self.finish(acct, AccountStatus::Failed, failure).await;
        };
        if !self.config.verify {
            return self.finish(acct, standing, None).await;
        }

        let error_before_verify = acct.last_error.take();
        match self.call(&mut acct, Phase::Verify).await? {
            Step::Done(listing) => {
                acct.last_error = error_before_verify;
                if listing.orders_count > 0 {
                    tracing::warn!(
                        account,
                        still_open = listing.orders_count,
                        "orders still open after the sweep"
                    );
                    if standing == AccountStatus::Swept {
                        acct.last_error = Some(format!(
                            "{} orders still open after the sweep",
                            listing.orders_count
                        ));
                    }
                }
            }
            Step::Failed(_) => {
                let verify_error = acct.last_error.take().unwrap_or_default();
                acct.last_error = Some(
                    error_before_verify.unwrap_or_else(|| format!("not verified: {verify_error}")),
                );
            }
            Step::Stopped(stop) => {
                acct.last_error = error_before_verify;
                return self.stopped(acct, stop, Some(standing)).await;
            }
        }
        self.finish(acct, standing, None).await
    }

    /// The run stopped while this account was under way (or before it started).
    async fn stopped(
        &self,
        mut acct: Progress,
        stop: Stop,
        standing: Option<AccountStatus>,
    ) -> Result<AccountStatus, Error> {
        match stop {
            Stop::Signal => self.finish(acct, AccountStatus::Interrupted, None).await,
            Stop::Halt => {
                let why = self
                    .session
                    .halt
                    .reason()
                    .map_or_else(|| "the run stopped".to_owned(), |r| r.message);
                if !acct.sent_any {
                    acct.last_error = Some(format!("not attempted: {why}"));
                    return self.finish(acct, AccountStatus::NotAttempted, None).await;
                }
                match standing {
                    // The cancel-all went through; only the evidence after it is missing.
                    Some(status) => {
                        let earlier = acct.last_error.take();
                        acct.last_error =
                            Some(earlier.unwrap_or_else(|| format!("not verified: {why}")));
                        self.finish(acct, status, None).await
                    }
                    None => {
                        acct.last_error = Some(why);
                        self.finish(acct, AccountStatus::Failed, Some(Failure::RunHalted))
                            .await
                    }
                }
            }
        }
    }

    async fn finish(
        &self,
        acct: Progress,
        status: AccountStatus,
        failure: Option<Failure>,
    ) -> Result<AccountStatus, Error> {
        self.run
            .store
            .finish_account(AccountFinish {
                run_id: self.run.run_id,
                account: acct.name.to_string(),
                status,
                failure: (status == AccountStatus::Failed)
                    .then_some(failure)
                    .flatten(),
                last_error: acct.last_error,
            })
            .await?;
        Ok(status)
    }

    /// One call of `phase`, retried while the failure is transient.
    async fn call(&self, acct: &mut Progress, phase: Phase) -> Result<Step, Error> {
        let mut failures = 0u32;
        loop {
            let exchanged = match self
                .session
                .attempt(self.run, &acct.name, phase, &mut acct.attempt_no)
                .await?
            {
                AttemptResult::NotSent(stop) => return Ok(Step::Stopped(stop)),
                AttemptResult::Abandoned => {
                    acct.sent_any = true;
                    return Ok(Step::Stopped(Stop::Signal));
                }
                AttemptResult::Replied(exchanged) => {
                    acct.sent_any = true;
                    exchanged
                }
            };
            let phase_name = phase.as_str();
            let account = &*acct.name;
            match exchanged.verdict {
                Verdict::Ok(collected) => return Ok(Step::Done(collected)),
                Verdict::KeyRefused { reason, message } => {
                    acct.last_error = Some(format!("{reason}: {message}"));
                    return Ok(Step::Failed(Failure::KeyRefused));
                }
                Verdict::AccountRefused { reason, message } => {
                    tracing::warn!(
                        account,
                        phase = phase_name,
                        reason,
                        message,
                        "the exchange refused this account; not retrying"
                    );
                    acct.last_error = Some(format!("{reason}: {message}"));
                    return Ok(Step::Failed(Failure::AccountRefused));
                }
                // A lost nonce race says nothing about the exchange's health: retried at once
                // (the window and the pacer space it); the session stops the key if the
                // refusals are not races.
                Verdict::NonceRefused { message, .. } => {
                    tracing::debug!(
                        account,
                        phase = phase_name,
                        "InvalidNonce; retrying with a fresh nonce"
                    );
                    acct.last_error = Some(format!("InvalidNonce: {message}"));
                }
                Verdict::Transient {
                    reason,
                    message,
                    pause,
                } => {
                    failures += 1;
                    acct.last_error = Some(format!("{reason}: {message}"));
                    if failures >= self.config.max_attempts {
                        tracing::warn!(
                            account,
                            phase = phase_name,
                            reason,
                            "giving up after {failures} failed attempts"
                        );
                        return Ok(Step::Failed(Failure::OutOfAttempts));
                    }
                    let wait = backoff(
                        self.config.retry_base,
                        failures,
                        pause.and_then(|p| p.retry_after()),
                    );
                    tracing::info!(
                        account,
                        phase = phase_name,
                        reason,
                        pause_ms = wait.as_millis() as u64,
                        "transient failure; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.run.shutdown.cancelled() => return Ok(Step::Stopped(Stop::Signal)),
                        _ = self.session.halt.halted() => return Ok(Step::Stopped(Stop::Halt)),
                    }
                }
            }
        }
    }
}

/// Exponential back-off with jitter: `base · 2^(n-1)`, scaled by a random 50–100 %, capped, and
/// never shorter than the exchange's `Retry-After` (the key's pacer holds every request for that
/// long anyway).
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
