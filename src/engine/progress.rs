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
    requests_planned: AtomicU64,
    /// The sum of the keys' paces, in thousandths of a request per second.
    pace_milli: AtomicU64,
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
    /// Requests the accounts known so far take when nothing fails.
    pub requests_planned: u64,
    /// The keys' paces together, in thousandths of a request per second.
    pub pace_milli: u64,
}

impl ProgressCounts {
    /// Seconds left: the planned requests not yet sent, at the keys' pace.
    pub fn eta_secs(&self) -> Option<u64> {
        if self.pace_milli == 0 || self.requests_planned == 0 {
            return None;
        }
        let left = self.requests_planned.saturating_sub(self.requests);
        Some((left * 1000).div_ceil(self.pace_milli))
    }
}

impl Progress {
    /// `n` more accounts, each taking `calls_each` requests when nothing fails.
    pub fn add_accounts(&self, n: usize, calls_each: usize) {
        self.accounts_total.fetch_add(n as u64, Relaxed);
        self.requests_planned
            .fetch_add((n * calls_each) as u64, Relaxed);
    }

    /// A key's pace moved (from 0 when it starts, to 0 when it ends).
    pub fn pace_changed(&self, from: f64, to: f64) {
        let milli = |rate: f64| (rate * 1000.0).round() as u64;
        self.pace_milli.fetch_add(milli(to), Relaxed);
        self.pace_milli.fetch_sub(milli(from), Relaxed);
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
            requests_planned: self.requests_planned.load(Relaxed),
            pace_milli: self.pace_milli.load(Relaxed),
        }
    }
}
