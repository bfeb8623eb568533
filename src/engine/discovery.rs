//! The group's accounts, as the exchange lists them: `POST /v1/account/list`, at most 500 per
//! call, paged by creation time.
//!
//! What `timestamp` does is not settled: Gemini's earlier reference says "accounts created on or
//! before", newest first (paging walks back in time); the other reading is "on or after", oldest
//! first. The pager does not trust either, nor the order of a page. After a full first page it
//! asks at the oldest creation time seen: under the documented reading that lists older accounts
//! (or ends on a short page); under the other it repeats the first page, adding nothing, and the
//! pager asks at the newest creation time seen instead. The reading that added accounts is kept
//! to the end, a short page. Accounts are de-duplicated by nickname; timestamps are inclusive, so
//! accounts sharing a creation time with a page's edge are never skipped.
//!
//! A full first page that neither reading adds to (an exchange that ignores `timestamp`), a full
//! page that adds nothing new once the reading is known (more than a page of accounts created in
//! the same millisecond), or a page whose accounts fall outside what it was asked for, leaves the
//! listing *possibly incomplete*: said in [`Listing::Listed::doubt`], never passed off as the
//! whole group.
//!
//! Every request goes through the key's dispatcher like any other: recorded before it leaves
//! (action `discover`, account `""`, which no nickname can be), paced, and stopping the key if
//! the exchange refuses it.

use std::collections::HashSet;

use super::key::{KeyHandle, Priority, StopCause};
use super::retry::{Caller, Retry, Step};
use crate::client::ListedAccount;
use crate::error::Error;
use crate::store::{AccountFailure, Action};

/// The most accounts one call returns (and the default the exchange uses).
pub const PAGE: u64 = 500;
/// More accounts than any group has (the accounts CSV's own limit): an exchange that keeps
/// listing new ones past it is not paging.
const MAX_LISTED: usize = crate::accounts::MAX_ACCOUNTS;

/// What the listing came to.
pub enum Listing {
    /// The accounts the exchange listed, in its order, nicknames screened
    /// ([`crate::accounts::screen_listing`]).
    Listed {
        accounts: Vec<ListedAccount>,
        /// Why the listing may be missing accounts; `None` when the pages prove it whole.
        doubt: Option<String>,
    },
    /// The exchange did not list them (the reason is in the recorded attempts and here).
    Failed(String),
    Stopped(StopCause),
}

/// Which way the pages walk through creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// `timestamp` = on or before: the next page is asked at the oldest creation time seen.
    OnOrBefore,
    /// `timestamp` = on or after: the next page is asked at the newest creation time seen.
    OnOrAfter,
}

impl Reading {
    fn other(self) -> Reading {
        match self {
            Reading::OnOrBefore => Reading::OnOrAfter,
            Reading::OnOrAfter => Reading::OnOrBefore,
        }
    }

    fn fits(self, created: u64, timestamp: u64) -> bool {
        match self {
            Reading::OnOrBefore => created <= timestamp,
            Reading::OnOrAfter => created >= timestamp,
        }
    }
}

/// The pages so far: every account once, and the span of creation times seen.
#[derive(Default)]
struct Pages {
    accounts: Vec<ListedAccount>,
    seen: HashSet<String>,
    oldest: Option<u64>,
    newest: Option<u64>,
}

impl Pages {
    /// Adds a page; returns how many of its accounts were new.
    fn add(&mut self, page: Vec<ListedAccount>) -> usize {
        let before = self.accounts.len();
        for account in page {
            if self.seen.insert(account.account.clone()) {
                if let Some(c) = account.created {
                    self.oldest = Some(self.oldest.map_or(c, |o| o.min(c)));
                    self.newest = Some(self.newest.map_or(c, |n| n.max(c)));
                }
                self.accounts.push(account);
            }
        }
        self.accounts.len() - before
    }

    fn timestamp(&self, reading: Reading) -> Option<u64> {
        match reading {
            Reading::OnOrBefore => self.oldest,
            Reading::OnOrAfter => self.newest,
        }
    }
}

/// Lists every account of the key's group.
pub async fn list_group(key: &KeyHandle, retry: Retry) -> Result<Listing, Error> {
    let mut caller = Caller::group();
    let mut fetch =
        async |timestamp: Option<u64>| -> Result<Result<Vec<ListedAccount>, Listing>, Error> {
            let mut params = vec![("limit_accounts", serde_json::Value::from(PAGE))];
            if let Some(t) = timestamp {
                params.push(("timestamp", serde_json::Value::from(t)));
            }
            Ok(
                match key
                    .call(
                        &mut caller,
                        Action::Discover,
                        Priority::Cancel,
                        &params,
                        retry,
                    )
                    .await?
                {
                    Step::Done(collected) => Ok(collected.accounts),
                    // The key is stopped: a refusal, not an exchange that failed to list.
                    Step::Failed(AccountFailure::KeyRefused) => {
                        Err(Listing::Stopped(StopCause::Key))
                    }
                    Step::Failed(_) => {
                        Err(Listing::Failed(caller.last_error.take().unwrap_or_else(
                            || "the exchange did not list the accounts".into(),
                        )))
                    }
                    Step::Stopped(stop) => Err(Listing::Stopped(stop)),
                },
            )
        };
    async {
        let mut pages = Pages::default();
        let first = match fetch(None).await? {
            Ok(page) => page,
            Err(listing) => return Ok(listing),
        };
        // A short page is the last one, under any reading.
        let mut more = first.len() as u64 >= PAGE;
        // Only a hint of which reading to try first: nothing public confirms a page's order.
        let created: Vec<u64> = first.iter().filter_map(|a| a.created).collect();
        let mut reading = if created.windows(2).all(|w| w[0] <= w[1])
            && created.first() < created.last()
        {
            Reading::OnOrAfter
        } else {
            Reading::OnOrBefore
        };
        pages.add(first);
        // `known`: a page under `reading` added accounts; `switched`: the first guess did not.
        let (mut known, mut switched) = (false, false);
        let mut doubt = None;
        let mut asked = 1;
        while more {
            let Some(timestamp) = pages.timestamp(reading) else {
                doubt = Some(format!(
                    "the exchange listed a full page of {PAGE} accounts without creation times to page by"
                ));
                break;
            };
            let page = match fetch(Some(timestamp)).await? {
                Ok(page) => page,
                Err(listing) => return Ok(listing),
            };
            asked += 1;
            let page_full = page.len() as u64 >= PAGE;
            let strays = page
                .iter()
                .filter(|a| a.created.is_some_and(|c| !reading.fits(c, timestamp)))
                .count();
            let new = pages.add(page);
            if new == 0 && switched && !known {
                // Asked at both ends of a full first page, the exchange listed nothing new. Even a
                // short page here does not prove the end: a group of exactly one page and an
                // exchange that never pages past its first answer alike.
                doubt = Some(format!(
                    "asked at the oldest and at the newest creation time of a full first page of {PAGE}, the exchange listed no account not already listed: it may not page by `timestamp`"
                ));
                break;
            }
            if new == 0 && page_full {
                if !known && !switched {
                    switched = true;
                    reading = reading.other();
                    continue;
                }
                doubt = Some(format!(
                    "a full page of {PAGE} accounts (request {asked}, timestamp {timestamp}) added none not already listed: the exchange may ignore `timestamp`, or more than {PAGE} accounts share a creation time"
                ));
                break;
            }
            if new > 0 {
                known = true;
                if strays > 0 && doubt.is_none() {
                    doubt = Some(format!(
                        "request {asked} (timestamp {timestamp}) listed {strays} accounts created {} it: the pages fit neither reading of `timestamp`",
                        match reading {
                            Reading::OnOrBefore => "after",
                            Reading::OnOrAfter => "before",
                        }
                    ));
                }
            }
            more = page_full;
            if more && pages.accounts.len() > MAX_LISTED {
                doubt = Some(format!(
                    "the exchange listed more than {MAX_LISTED} accounts and kept going"
                ));
                break;
            }
        }
        let mut accounts = pages.accounts;
        crate::accounts::screen_listing(&mut accounts);
        Ok::<_, Error>(Listing::Listed { accounts, doubt })
    }
    .await
}
