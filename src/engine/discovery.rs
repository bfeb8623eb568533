//! The group's accounts, as the exchange lists them: `POST /v1/account/list`, at most 500 per
//! call, paged by creation time.
//!
//! The documentation does not say whether `timestamp` pages forwards or backwards, so the pages
//! are read defensively: each next page starts at the newest creation time seen, accounts are
//! de-duplicated by nickname, and paging stops when a page is short or adds nothing new. Every
//! request goes through the key's session like any other: recorded before it leaves (phase
//! `discover`), paced, and stopping the key if the exchange refuses it.

use std::collections::HashSet;
use std::sync::Arc;

use super::session::{Caller, KeySession, Retry, RunContext, Step, Stop};
use crate::client::ListedAccount;
use crate::error::Error;
use crate::store::Phase;

/// The most accounts one call returns (and the default the exchange uses).
pub const PAGE: u64 = 500;

/// What the listing came to.
pub enum Listing {
    /// Every account of the group, in the order the exchange listed them.
    Complete(Vec<ListedAccount>),
    /// The exchange did not list them (the reason is in the recorded attempts and here).
    Failed(String),
    Stopped(Stop),
}

/// Lists every account of the key's group.
pub async fn list_group(
    session: &KeySession,
    run: &RunContext,
    retry: Retry,
) -> Result<Listing, Error> {
    let mut caller = Caller {
        name: Arc::from(""),
        attempt_no: 0,
        sent_any: false,
        last_error: None,
    };
    let mut accounts: Vec<ListedAccount> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut since: Option<u64> = None;
    let outcome = loop {
        let mut params = vec![("limit_accounts", serde_json::Value::from(PAGE))];
        if let Some(since) = since {
            params.push(("timestamp", serde_json::Value::from(since)));
        }
        let page = match session
            .call(run, &mut caller, Phase::Discover, &params, retry)
            .await?
        {
            Step::Done(collected) => collected.accounts,
            Step::Failed(_) => {
                break Listing::Failed(
                    caller
                        .last_error
                        .take()
                        .unwrap_or_else(|| "the exchange did not list the accounts".into()),
                );
            }
            Step::Stopped(stop) => break Listing::Stopped(stop),
        };
        let full = page.len() as u64 >= PAGE;
        let before = accounts.len();
        for account in page {
            if seen.insert(account.account.clone()) {
                since = since.max(account.created);
                accounts.push(account);
            }
        }
        if !full || accounts.len() == before || since.is_none() {
            break Listing::Complete(std::mem::take(&mut accounts));
        }
    };
    // The listing probed the key; if it did not prove it, the first account to sweep probes.
    session.window.probe_done("");
    Ok(outcome)
}
