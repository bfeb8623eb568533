//! What a cancel-all whose reply was lost cancelled: once its account is proven flat, the
//! account's order history is read (`/v1/orders/history`) and its cancelled orders recorded in
//! `history_cancelled`; the view `unreported_cancels` says which of them the lost request may
//! have cancelled. The history says what was cancelled, never by whom, so these never join the
//! ids a reply reported (`cancelled_orders`).

use std::collections::HashSet;

use serde_json::json;

use super::account::AccountSweeper;
use super::key::Priority;
use super::retry::{Caller, Step};
use crate::error::Error;
use crate::store::Action;

/// The history's largest page.
const PAGE: u64 = 500;
/// Pages read at most per account: 10,000 orders since the account's last answered cancel-all.
const MAX_PAGES: u32 = 20;

/// How reading an account's history ended.
#[derive(Debug, PartialEq, Eq)]
pub enum History {
    /// No cancel-all of the account lost its reply: nothing to read.
    NotNeeded,
    /// Read to its end; this many cancelled orders no reply reported.
    Read { unreported: i64 },
    /// Stopped early (a failure, the page limit, pages that add nothing): what was read is kept.
    Incomplete { unreported: i64, why: String },
}

impl AccountSweeper<'_> {
    /// Reads the history of `acct` if one of its cancel-alls in this run lost its reply.
    pub async fn recover(&self, acct: &mut Caller) -> Result<History, Error> {
        let account = acct.whom.recorded();
        let Some(from) = self.store.history_needed(self.run_id, &account).await? else {
            return Ok(History::NotNeeded);
        };
        let why = self.read_history(acct, from).await?;
        let unreported = self.store.unreported_cancels(self.run_id, &account).await?;
        let history = match why {
            None => History::Read { unreported },
            Some(why) => History::Incomplete { unreported, why },
        };
        match &history {
            History::Incomplete { why, .. } => tracing::warn!(
                account = &*account,
                unreported,
                "order history read only in part ({why}): a reply lost earlier may have \
                 cancelled more than unreported_cancels shows"
            ),
            _ => tracing::info!(
                account = &*account,
                unreported,
                "a cancel-all's reply was lost; the order history shows {unreported} cancelled \
                 orders no reply reported (view unreported_cancels)"
            ),
        }
        Ok(history)
    }

    /// Pages through the history from `from` (ms); `Some(why)` if it stopped before the end.
    /// Paging is defensive, as the exchange's description of it contradicts itself: each page
    /// asks from the newest time seen so far, ids are de-duplicated, and a full page that adds
    /// nothing new ends the reading as incomplete, never as the end.
    async fn read_history(
        &self,
        acct: &mut Caller,
        from: Option<i64>,
    ) -> Result<Option<String>, Error> {
        let retry = self.retry();
        let mut from = from.map(|ms| ms.max(0));
        let mut seen = HashSet::new();
        for _ in 0..MAX_PAGES {
            let mut params = vec![("limit_orders", json!(PAGE))];
            params.extend(from.map(|ms| ("timestamp", json!(ms))));
            let page = match self
                .key
                .call(acct, Action::Recover, Priority::Prove, &params, retry)
                .await?
            {
                Step::Done(page) => page,
                Step::Failed(_) | Step::Stopped(_) => {
                    let last = acct
                        .last_error
                        .take()
                        .unwrap_or_else(|| "the run stopped".into());
                    return Ok(Some(format!("a history request failed: {last}")));
                }
            };
            if page.streamed {
                // Larger than any page the exchange documents: its rows are kept, paging stops.
                return Ok(Some("a page larger than documented".into()));
            }
            let new = page
                .orders
                .iter()
                .filter(|o| seen.insert(o.order_id))
                .count();
            if page.orders_count < PAGE {
                return Ok(None);
            }
            let newest = page.orders.iter().filter_map(|o| o.timestampms).max();
            match newest {
                Some(ms) if new > 0 && from.is_none_or(|f| ms >= f) => from = Some(ms),
                _ => return Ok(Some("a full page added nothing new".into())),
            }
        }
        Ok(Some(format!("more than {MAX_PAGES} pages")))
    }
}
