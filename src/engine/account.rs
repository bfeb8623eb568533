//! One account's sweep: cancel all its orders (again while some are rejected), then prove it
//! flat with a listing taken after its last cancel-all (cancelling again, ahead of any listing,
//! what that listing still finds open), retrying what is transient. Every request goes through
//! the key's dispatcher; this module decides what the account's outcome is.
//!
//! The two halves run apart ([`AccountSweeper::cancel`], then [`AccountSweeper::prove`]), so a
//! run sends every account's cancel-all at the key's full pace before the listings that prove
//! them. With `--snapshot` an account also lists its orders before its cancel-all, for the order
//! details of the audit trail, and is swept start to end in one go ([`AccountSweeper::sweep`]).

use super::key::{KeyHandle, Priority, StopCause};
use super::progress::Progress;
use super::retry::{Caller, Retry, Step};
use crate::config::SweepConfig;
use crate::error::Error;
use crate::store::{AccountFailure, AccountFinish, AccountStatus, Action, Store};

pub struct AccountSweeper<'a> {
    pub config: &'a SweepConfig,
    pub key: &'a KeyHandle,
    pub store: &'a Store,
    pub run_id: i64,
    pub progress: &'a Progress,
    /// A resumed run continues attempt numbers and keeps the first snapshot.
    pub resuming: bool,
}

/// An account whose orders were cancelled, waiting for the listing that proves it flat.
pub struct Cancelled {
    acct: Caller,
    standing: AccountStatus,
    reject_retries_left: u32,
}

impl Cancelled {
    pub fn account(&self) -> std::sync::Arc<str> {
        self.acct.whom.recorded()
    }
}

/// How an account's cancel-alls ended: standing at a status with its proof to come, or over
/// (recorded).
enum CancelOutcome {
    Standing(Caller, AccountStatus),
    Over(AccountStatus),
}

/// Where an account stands after its cancel-all.
pub enum AfterCancel {
    /// Finished and recorded.
    Done(AccountStatus),
    /// Cancelled; its proof is still to come.
    ToProve(Cancelled),
}

impl AccountSweeper<'_> {
    /// Sweeps one account start to end and records its outcome.
    pub async fn sweep(&self, account: &str) -> Result<AccountStatus, Error> {
        match self.cancel(account).await? {
            AfterCancel::Done(status) => Ok(status),
            AfterCancel::ToProve(cancelled) => self.prove(cancelled).await,
        }
    }

    /// The account's cancel-alls (and, with `--snapshot`, the listing before them).
    pub async fn cancel(&self, account: &str) -> Result<AfterCancel, Error> {
        let (attempt_no, snapshot_taken) = if self.resuming {
            self.store.account_progress(self.run_id, account).await?
        } else {
            (0, false)
        };
        let mut acct = Caller::account(account, attempt_no);
        let done = |status| Ok(AfterCancel::Done(status));

        if self.config.snapshot && !snapshot_taken {
            // A failed snapshot only costs the reconciliation its "before" side; cancelling
            // matters more, so the sweep goes on, unless the key itself was refused.
            match self
                .call(&mut acct, Action::Snapshot, Priority::Cancel)
                .await?
            {
                Step::Done(_)
                | Step::Failed(AccountFailure::AccountRefused | AccountFailure::OutOfAttempts) => {}
                Step::Failed(failure) => {
                    return done(
                        self.finish(acct, AccountStatus::Failed, Some(failure))
                            .await?,
                    );
                }
                Step::Stopped(stop) => return done(self.stopped(acct, stop, None).await?),
            }
        }

        let mut reject_retries_left = self.config.reject_retries;
        let (acct, standing) = match self
            .cancel_all(acct, &mut reject_retries_left, None)
            .await?
        {
            CancelOutcome::Standing(acct, standing) => (acct, standing),
            CancelOutcome::Over(status) => return done(status),
        };
        if !self.config.verify {
            let mut acct = acct;
            self.recover(&mut acct).await?;
            return done(self.finish(acct, standing, None).await?);
        }
        Ok(AfterCancel::ToProve(Cancelled {
            acct,
            standing,
            reject_retries_left,
        }))
    }

    /// Cancel-alls until one leaves nothing rejected or the reject retries run out.
    async fn cancel_all(
        &self,
        mut acct: Caller,
        reject_retries_left: &mut u32,
        mut standing: Option<AccountStatus>,
    ) -> Result<CancelOutcome, Error> {
        // A first cancel-all goes with the others; one after rejects or a listing is a re-cancel.
        let mut priority = match standing {
            None => Priority::Cancel,
            Some(_) => Priority::Recancel,
        };
        loop {
            let step = self.call(&mut acct, Action::Cancel, priority).await?;
            priority = Priority::Recancel;
            if let Step::Done(collected) = &step {
                self.progress.orders_cancelled(collected.cancelled_count);
            }
            match step {
                Step::Done(collected) if collected.rejected_count > 0 => {
                    standing = Some(AccountStatus::RejectsLeft);
                    acct.last_error = Some(format!(
                        "{} orders refused cancellation",
                        collected.rejected_count
                    ));
                    if *reject_retries_left == 0 {
                        return Ok(CancelOutcome::Standing(acct, AccountStatus::RejectsLeft));
                    }
                    *reject_retries_left -= 1;
                }
                Step::Done(collected) => {
                    tracing::debug!(
                        account = %acct.whom,
                        cancelled = collected.cancelled_count,
                        "cancel-all done"
                    );
                    acct.last_error = None;
                    return Ok(CancelOutcome::Standing(acct, AccountStatus::Swept));
                }
                Step::Failed(failure) => {
                    return Ok(match standing {
                        // An earlier cancel-all of this account went through: what it left is
                        // for the listing to show.
                        Some(status) => CancelOutcome::Standing(acct, status),
                        None => CancelOutcome::Over(
                            self.finish(acct, AccountStatus::Failed, Some(failure))
                                .await?,
                        ),
                    });
                }
                Step::Stopped(stop) => {
                    return Ok(CancelOutcome::Over(
                        self.stopped(acct, stop, standing).await?,
                    ));
                }
            }
        }
    }

    /// The listing after the account's last cancel-all; orders it still finds open (rejected, or
    /// placed during the sweep) get the reject retries, and a listing after those.
    pub async fn prove(&self, cancelled: Cancelled) -> Result<AccountStatus, Error> {
        let Cancelled {
            mut acct,
            mut standing,
            mut reject_retries_left,
        } = cancelled;
        let account = acct.whom.recorded();
        loop {
            let error_before_verify = acct.last_error.take();
            match self
                .call(&mut acct, Action::Verify, Priority::Prove)
                .await?
            {
                Step::Done(listing) => {
                    acct.last_error = error_before_verify;
                    if listing.orders_count == 0 {
                        break;
                    }
                    if reject_retries_left > 0 {
                        reject_retries_left -= 1;
                        tracing::info!(
                            account = &*account,
                            still_open = listing.orders_count,
                            "orders still open after the cancel-all; cancelling again"
                        );
                        match self
                            .cancel_all(acct, &mut reject_retries_left, Some(standing))
                            .await?
                        {
                            CancelOutcome::Standing(again, now) => {
                                (acct, standing) = (again, now);
                                continue;
                            }
                            CancelOutcome::Over(status) => return Ok(status),
                        }
                    }
                    tracing::warn!(
                        account = &*account,
                        still_open = listing.orders_count,
                        "orders still open after the sweep"
                    );
                    if standing == AccountStatus::Swept {
                        acct.last_error = Some(format!(
                            "{} orders still open after the sweep",
                            listing.orders_count
                        ));
                    }
                    break;
                }
                Step::Failed(_) => {
                    let verify_error = acct.last_error.take().unwrap_or_default();
                    acct.last_error = Some(
                        error_before_verify
                            .unwrap_or_else(|| format!("not verified: {verify_error}")),
                    );
                    return self.finish(acct, standing, None).await;
                }
                Step::Stopped(stop) => {
                    acct.last_error = error_before_verify;
                    return self.stopped(acct, stop, Some(standing)).await;
                }
            }
        }
        // The history comes after the proof: it changes nothing open, only what the audit knows.
        let error = acct.last_error.take();
        self.recover(&mut acct).await?;
        acct.last_error = error;
        self.finish(acct, standing, None).await
    }

    /// The run stopped while this account was under way (or before it started).
    async fn stopped(
        &self,
        mut acct: Caller,
        stop: StopCause,
        standing: Option<AccountStatus>,
    ) -> Result<AccountStatus, Error> {
        match stop {
            StopCause::Signal => self.finish(acct, AccountStatus::Interrupted, None).await,
            StopCause::Key => {
                let why = self
                    .key
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
                        self.finish(acct, AccountStatus::Failed, Some(AccountFailure::RunHalted))
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
        failure: Option<AccountFailure>,
    ) -> Result<AccountStatus, Error> {
        self.store.finish_account(AccountFinish {
            run_id: self.run_id,
            account: acct.whom.recorded().to_string(),
            status,
            failure: (status == AccountStatus::Failed)
                .then_some(failure)
                .flatten(),
            last_error: acct.last_error,
        })?;
        Ok(status)
    }
}

impl AccountSweeper<'_> {
    /// One call of the account, retried as the configuration allows.
    pub(super) async fn call(
        &self,
        acct: &mut Caller,
        action: Action,
        priority: Priority,
    ) -> Result<Step, Error> {
        self.key
            .call(acct, action, priority, &[], self.retry())
            .await
    }

    pub(super) fn retry(&self) -> Retry {
        Retry {
            max_attempts: self.config.max_attempts,
            base: self.config.retry_base,
        }
    }
}
