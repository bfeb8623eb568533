//! Live counts of a job, for the progress bar or the periodic progress line. Written by the
//! sweep as it goes (relaxed atomics: a display, not a record; the database is the record).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::store::AccountStatus;

#[derive(Debug, Default)]
pub struct Progress {
    accounts_total: AtomicU64,
    accounts_done: AtomicU64,
    accounts_failed: AtomicU64,
    orders_cancelled: AtomicU64,
    requests: AtomicU64,
}

/// The counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressCounts {
    /// Accounts to sweep, as far as known (discovery adds its list when it has it).
    pub accounts_total: u64,
    /// Accounts finished, whatever their outcome.
    pub accounts_done: u64,
    /// Of those, accounts that failed or kept rejected orders.
    pub accounts_failed: u64,
    pub orders_cancelled: u64,
    /// Requests sent to the exchange.
    pub requests: u64,
}

impl Progress {
    pub fn add_accounts(&self, n: usize) {
        self.accounts_total.fetch_add(n as u64, Relaxed);
    }

    pub fn account_done(&self, status: AccountStatus) {
        self.accounts_done.fetch_add(1, Relaxed);
        if matches!(status, AccountStatus::Failed | AccountStatus::RejectsLeft) {
            self.accounts_failed.fetch_add(1, Relaxed);
        }
    }

    pub fn orders_cancelled(&self, n: u64) {
        self.orders_cancelled.fetch_add(n, Relaxed);
    }

    pub fn request_sent(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    pub fn counts(&self) -> ProgressCounts {
        ProgressCounts {
            accounts_total: self.accounts_total.load(Relaxed),
            accounts_done: self.accounts_done.load(Relaxed),
            accounts_failed: self.accounts_failed.load(Relaxed),
            orders_cancelled: self.orders_cancelled.load(Relaxed),
            requests: self.requests.load(Relaxed),
        }
    }
}
