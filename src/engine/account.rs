//! One account's sweep: list its open orders, cancel them all (again while some are rejected),
//! list again to verify, retrying what is transient. Every request goes through the key's
//! session; this module decides what the account's outcome is.

use super::session::{Caller, KeySession, Retry, RunContext, Step, Stop};
use crate::config::SweepConfig;
use crate::error::Error;
use crate::store::{AccountFinish, AccountStatus, Failure, Phase};

pub struct AccountSweeper<'a> {
    pub config: &'a SweepConfig,
    pub session: &'a KeySession,
    pub run: &'a RunContext,
    /// A resumed run continues attempt numbers and keeps the first snapshot.
    pub resuming: bool,
}

impl AccountSweeper<'_> {
    fn run_id(&self) -> i64 {
        self.run
            .run_id
            .expect("accounts are only swept within a run")
    }

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
                .account_progress(self.run_id(), account)
                .await?
        } else {
            (0, false)
        };
        let mut acct = Caller {
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
            let step = self.call(&mut acct, Phase::Cancel).await?;
            if let Step::Done(collected) = &step {
                self.run
                    .progress
                    .orders_cancelled(collected.cancelled_count);
            }
            match step {
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
        mut acct: Caller,
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
        acct: Caller,
        status: AccountStatus,
        failure: Option<Failure>,
    ) -> Result<AccountStatus, Error> {
        self.run
            .store
            .finish_account(AccountFinish {
                run_id: self.run_id(),
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
}

impl AccountSweeper<'_> {
    async fn call(&self, acct: &mut Caller, phase: Phase) -> Result<Step, Error> {
        self.session
            .call(
                self.run,
                acct,
                phase,
                &[],
                Retry {
                    max_attempts: self.config.max_attempts,
                    base: self.config.retry_base,
                },
            )
            .await
    }
}
