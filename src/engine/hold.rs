//! Holding the group flat after its sweep (`--hold`). A strategy that has not stopped quotes
//! again after its account's cancel-all; the hold lists the swept accounts in turn, lowest in the
//! key's queue, and an account where an order appears is cancelled again at once (ahead of any
//! listing) and listed again. Accounts with recent activity are listed twice a cycle; every
//! account is listed at least once a cycle, so an order stands at most about one cycle
//! (accounts / rate) before it is caught.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::account::AccountSweeper;
use super::key::Priority;
use super::retry::{Caller, Step};
use crate::client::Collected;
use crate::error::Error;
use crate::store::{AccountFailure, AccountFinish, AccountStatus, Action};

/// Cycles an account stays "active" (listed twice a cycle) after an order was seen on it.
const ACTIVE_CYCLES: u64 = 3;

/// The order in which held accounts are listed. Pure: the hold's loop asks it for the next
/// account and tells it where orders appeared.
pub struct Schedule {
    len: usize,
    /// The position in the current cycle.
    at: usize,
    cycles: u64,
    /// Per account, the cycle until which it is listed a second time each cycle.
    active_until: Vec<u64>,
    /// Active accounts' second listings in this cycle, ahead of the next in turn.
    again: VecDeque<usize>,
}

impl Schedule {
    pub fn new(len: usize) -> Self {
        Schedule {
            len,
            at: 0,
            cycles: 0,
            active_until: vec![0; len],
            again: VecDeque::new(),
        }
    }

    /// The next account to list (an index into the held accounts).
    pub fn next(&mut self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        if let Some(i) = self.again.pop_front() {
            return Some(i);
        }
        let i = self.at;
        self.at += 1;
        // Halfway through the cycle, the active accounts come round again.
        if self.at == self.len.div_ceil(2) {
            let cycle = self.cycles;
            self.again
                .extend((0..self.len).filter(|&a| self.active_until[a] > cycle));
        }
        if self.at == self.len {
            self.at = 0;
            self.cycles += 1;
        }
        Some(i)
    }

    /// An order appeared on account `i`.
    pub fn active(&mut self, i: usize) {
        self.active_until[i] = self.cycles + ACTIVE_CYCLES;
    }

    /// Full cycles begun and ended: every account listed once in each.
    pub fn cycles(&self) -> u64 {
        self.cycles
    }
}

/// What the hold did, for the run's record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Held {
    pub took: Duration,
    pub cycles: u64,
}

/// One held account's state between its listings.
struct Account {
    name: Arc<str>,
    /// Attempt numbers used so far (read from the run's record when first listed).
    attempt_no: Option<u32>,
    reject_retries_left: u32,
    /// Orders a cancel-all of the hold left rejected: listed again, they are no new order.
    rejected: HashSet<u64>,
    /// Re-cancelled during the hold: its status is recorded again at the end.
    standing: Option<AccountStatus>,
    /// The exchange refused it for good: no longer listed.
    dropped: bool,
    /// A re-cancel's reply was lost: the order history is read after the next listing.
    history_owed: bool,
}

/// Why an account's turn ended.
enum Turn {
    Flat,
    Active,
    Stop,
}

/// Holds `accounts` flat until `until`, a stop signal or a halted key.
pub async fn hold(
    sweeper: &AccountSweeper<'_>,
    accounts: Vec<String>,
    until: Instant,
) -> Result<Held, Error> {
    let started = Instant::now();
    let state = Mutex::new(HoldState {
        schedule: Schedule::new(accounts.len()),
        accounts: accounts
            .into_iter()
            .map(|name| Account {
                name: name.into(),
                attempt_no: None,
                reject_retries_left: sweeper.config.reject_retries,
                rejected: HashSet::new(),
                standing: None,
                dropped: false,
                history_owed: false,
            })
            .map(Some)
            .collect(),
    });
    tracing::info!(
        accounts = state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .accounts
            .len(),
        "holding the group flat for {}",
        humantime::format_duration(sweeper.config.hold)
    );
    let workers = (0..sweeper.config.concurrency.max(1)).map(|_| worker(sweeper, &state, until));
    let ended = futures::future::join_all(workers).await;
    let state = state.into_inner().unwrap_or_else(|e| e.into_inner());
    for account in state.accounts.into_iter().flatten() {
        record(sweeper, account)?;
    }
    ended.into_iter().collect::<Result<Vec<()>, Error>>()?;
    let held = Held {
        took: started.elapsed(),
        cycles: state.schedule.cycles(),
    };
    tracing::info!(
        cycles = held.cycles,
        held_ms = held.took.as_millis() as u64,
        "hold over"
    );
    Ok(held)
}

struct HoldState {
    schedule: Schedule,
    /// `None` while a worker has the account.
    accounts: Vec<Option<Account>>,
}

/// Lists accounts in the schedule's order until the hold is over.
async fn worker(
    sweeper: &AccountSweeper<'_>,
    state: &Mutex<HoldState>,
    until: Instant,
) -> Result<(), Error> {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    while Instant::now() < until && !sweeper.key.halt.is_halted() && !sweeper.key.stopping() {
        let Some((i, mut account)) = take_next(&mut lock()) else {
            return Ok(());
        };
        let turn = turn(sweeper, &mut account, until).await;
        let mut state = lock();
        state.accounts[i] = Some(account);
        match turn? {
            Turn::Flat => {}
            Turn::Active => state.schedule.active(i),
            Turn::Stop => return Ok(()),
        }
    }
    Ok(())
}

/// The next account in turn that no worker has and that is still held.
fn take_next(state: &mut HoldState) -> Option<(usize, Account)> {
    for _ in 0..=state.accounts.len() * 2 {
        let i = state.schedule.next()?;
        match state.accounts[i].take() {
            Some(account) if account.dropped => state.accounts[i] = Some(account),
            Some(account) => return Some((i, account)),
            None => {}
        }
    }
    None
}

/// How a call of the hold ended.
enum Heard {
    Reply(Collected),
    /// Transient failures used up, or the account refused: its next turn tries again (a
    /// refused account is dropped).
    Failed,
    Stopped,
}

/// One turn of an account: a listing; if it finds an order, a cancel-all (ahead of every
/// listing) and a listing again, until the account is flat or its rejected orders are all it
/// holds. Once the hold is over, no turn starts and nothing more is cancelled; a cancel-all
/// already sent still gets the listing that shows what it left.
async fn turn(
    sweeper: &AccountSweeper<'_>,
    account: &mut Account,
    until: Instant,
) -> Result<Turn, Error> {
    let attempt_no = match account.attempt_no {
        Some(n) => n,
        None => first_turn(sweeper, account).await?,
    };
    let mut caller = Caller::account(&account.name, attempt_no);
    // The turn's listing waits for its place in the key's queue only until the hold is over.
    let mut listing = tokio::select! {
        step = sweeper.call(&mut caller, Action::HoldList, Priority::Hold) => step?,
        () = tokio::time::sleep_until(until) => return Ok(Turn::Stop),
    };
    let mut active = false;
    let turn = loop {
        let listed = match heard(listing, account) {
            Heard::Reply(listed) => listed,
            Heard::Failed => break Turn::Flat,
            Heard::Stopped => break Turn::Stop,
        };
        if account.history_owed {
            // What the lost reply would have reported is in the order history.
            sweeper.recover(&mut caller).await?;
            account.history_owed = false;
        }
        if !worth_cancelling(&listed, account) || Instant::now() >= until {
            break Turn::Flat;
        }
        active = true;
        tracing::info!(
            account = &*account.name,
            open = listed.orders_count,
            "an order appeared while holding; cancelling again"
        );
        caller.last_error = None;
        let cancelled = heard(
            sweeper
                .call(&mut caller, Action::HoldCancel, Priority::Recancel)
                .await?,
            account,
        );
        // Any failed attempt may be a cancel-all that acted and lost its reply.
        account.history_owed |= caller.last_error.is_some();
        let cancelled = match cancelled {
            Heard::Reply(cancelled) => cancelled,
            Heard::Failed => break Turn::Flat,
            Heard::Stopped => break Turn::Stop,
        };
        sweeper.progress.orders_cancelled(cancelled.cancelled_count);
        account.rejected.extend(&cancelled.rejected);
        account.standing = Some(if cancelled.rejected_count > 0 {
            AccountStatus::RejectsLeft
        } else {
            AccountStatus::Swept
        });
        // The listing that shows what the cancel-all left goes ahead of the other listings.
        listing = sweeper
            .call(&mut caller, Action::HoldList, Priority::Prove)
            .await?;
    };
    account.attempt_no = Some(caller.attempt_no);
    Ok(match turn {
        Turn::Flat if active => Turn::Active,
        turn => turn,
    })
}

/// What an account's first turn reads of the run: the attempt numbers used, and the orders the
/// sweep left rejected. Those are no new orders, and the sweep spent the account's reject
/// retries on them, so the hold does not cancel them again.
async fn first_turn(sweeper: &AccountSweeper<'_>, account: &mut Account) -> Result<u32, Error> {
    let store = sweeper.store;
    let (attempt_no, _) = store
        .account_progress(sweeper.run_id, &account.name)
        .await?;
    let stuck = store.still_rejected(sweeper.run_id, &account.name).await?;
    if !stuck.is_empty() {
        account.reject_retries_left = 0;
        account.rejected.extend(stuck);
    }
    Ok(attempt_no)
}

/// Orders on the listing the hold should cancel: any it has not seen rejected, or rejected ones
/// while the account has reject retries left.
fn worth_cancelling(listing: &Collected, account: &mut Account) -> bool {
    if listing.orders_count == 0 {
        return false;
    }
    // A listing too large to hold was streamed to the database: its orders are not all known.
    let new = listing.streamed
        || listing
            .orders
            .iter()
            .any(|o| !account.rejected.contains(&o.order_id));
    if new {
        return true;
    }
    if account.reject_retries_left > 0 {
        account.reject_retries_left -= 1;
        return true;
    }
    false
}

fn heard(step: Step, account: &mut Account) -> Heard {
    match step {
        Step::Done(collected) => Heard::Reply(collected),
        Step::Failed(failure) => {
            account.dropped = failure == AccountFailure::AccountRefused;
            Heard::Failed
        }
        Step::Stopped(_) => Heard::Stopped,
    }
}

/// An account re-cancelled while holding is recorded again with where it now stands.
fn record(sweeper: &AccountSweeper<'_>, account: Account) -> Result<(), Error> {
    let Some(status) = account.standing else {
        return Ok(());
    };
    let last_error = (status == AccountStatus::RejectsLeft).then(|| {
        format!(
            "{} orders refused cancellation while holding",
            account.rejected.len()
        )
    });
    Ok(sweeper.store.finish_account(AccountFinish {
        run_id: sweeper.run_id,
        account: account.name.to_string(),
        status,
        failure: None,
        last_error,
    })?)
}

/// Seconds one cycle of the hold takes at `rate`: the longest an order can stand unseen.
pub fn cycle_secs(accounts: usize, rate: f64) -> f64 {
    accounts as f64 / rate
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The accounts the schedule lists in `picks` picks.
    fn listed(schedule: &mut Schedule, picks: usize) -> Vec<usize> {
        (0..picks).map(|_| schedule.next().unwrap()).collect()
    }

    #[test]
    fn every_account_is_listed_once_a_cycle_in_turn() {
        let mut s = Schedule::new(4);
        assert_eq!(listed(&mut s, 8), [0, 1, 2, 3, 0, 1, 2, 3]);
        assert_eq!(s.cycles(), 2);
        assert_eq!(Schedule::new(0).next(), None);
    }

    #[test]
    fn an_active_account_is_listed_twice_a_cycle_for_a_few_cycles_then_once() {
        let mut s = Schedule::new(6);
        s.next();
        s.active(4);
        // Halfway through each cycle the active account comes round again.
        assert_eq!(listed(&mut s, 6), [1, 2, 4, 3, 4, 5]);
        assert_eq!(listed(&mut s, 7), [0, 1, 2, 4, 3, 4, 5]);
        assert_eq!(listed(&mut s, 7), [0, 1, 2, 4, 3, 4, 5]);
        assert_eq!(listed(&mut s, 6), [0, 1, 2, 3, 4, 5], "quiet again");
    }

    /// Wherever an order appears, its account is listed again within one cycle of listings,
    /// active accounts (listed twice) included.
    #[test]
    fn an_order_is_seen_within_one_cycle_wherever_it_appears() {
        for len in [1, 2, 5, 12] {
            let mut s = Schedule::new(len);
            for i in (0..len).step_by(3) {
                s.active(i);
            }
            let picks = listed(&mut s, 20 * len);
            let most = picks.len();
            for account in 0..len {
                let at: Vec<usize> = (0..most).filter(|&p| picks[p] == account).collect();
                let widest = at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
                let cycle = len + len.div_ceil(3);
                assert!(
                    widest <= cycle,
                    "{len} accounts: {account} waited {widest} picks"
                );
            }
        }
    }
}
