//! The accounts table (dirty rows highlighted) and the orders that may still be open.

use maud::{Markup, html};

use super::format::{count_cell, grouped, plural, text_cell, yes_no_cell};
use super::reads::{MAX_ORDERS, OpenOrder, OpenOrders, open_outcomes_sql};
use crate::report::rows::{AccountRow, Only, RunRow};
use crate::store::{AccountFailure, AccountStatus};

const ACCOUNT_HEADERS: [&str; 15] = [
    "account",
    "verdict",
    "status",
    "failure",
    "attempts",
    "before",
    "cancelled",
    "rejected",
    "open after",
    "unexplained",
    "unverified",
    "late",
    "verified",
    "clean",
    "last error",
];

/// Why a cell is unknown, on hover.
const NEVER_LISTED_BEFORE: &str = "unknown: the account was never listed before the cancel-all";
const NEVER_LISTED_AFTER: &str = "unknown: no listing was taken after the last cancel-all";
const CLEAN_UNKNOWN: &str = "unknown: skipped, never verified, or swept with --no-verify";

pub(super) fn accounts_section(accounts: &[AccountRow], only: Only) -> Markup {
    let only_note = match only {
        Only::All => "every account of the run",
        Only::Failed => {
            "only accounts that failed, were interrupted, not attempted or never finished \
             (--only failed)"
        }
        Only::Dirty => "only accounts not verified flat (--only dirty)",
    };
    let listed = plural(accounts.len() as i64, "account", "accounts");
    html! {
        h2 { "Accounts" }
        p.note {
            (listed) ": " (only_note) ", in the accounts file's order; rows not verified flat \
            are highlighted. "
            b { "before" } ": open in the listing before the cancel-all; "
            b { "open after" } ": open in a listing taken after the last cancel-all; "
            b { "unverified" } ": listed before, neither cancelled nor rejected, and no listing \
            since the last cancel-all (possibly still open)."
        }
        table #accounts {
            thead { tr { @for h in ACCOUNT_HEADERS { th { (h) } } } }
            tbody { @for a in accounts { (account_row(a)) } }
        }
    }
}

fn account_row(a: &AccountRow) -> Markup {
    let verdict = if a.dirty {
        "dirty"
    } else if a.status == AccountStatus::Skipped {
        "skipped"
    } else if a.clean == Some(true) {
        "flat"
    } else {
        "not verified"
    };
    html! {
        tr class=[a.dirty.then_some("dirty")] data-account=(a.account) {
            td.mono { (a.account) }
            td.verdict-cell { (verdict) }
            td { (a.status.as_str()) }
            (text_cell(a.failure.map(AccountFailure::as_str), ""))
            (count_cell(Some(a.attempts), ""))
            (count_cell(a.open_before, NEVER_LISTED_BEFORE))
            (count_cell(Some(a.cancelled), ""))
            (count_cell(Some(a.rejected), ""))
            (count_cell(a.open_after, NEVER_LISTED_AFTER))
            (count_cell(Some(a.unexplained), ""))
            (count_cell(Some(a.unverified), ""))
            (count_cell(Some(a.late), ""))
            (yes_no_cell(Some(a.verified), ""))
            (yes_no_cell(a.clean, CLEAN_UNKNOWN))
            td.err { @if let Some(e) = &a.last_error { (e) } }
        }
    }
}

pub(super) fn orders_section(run: &RunRow, orders: &OpenOrders) -> Markup {
    let total = orders.total as i64;
    let more = orders.total.saturating_sub(orders.listed.len() as u64);
    let never_listed = run.accounts_without_snapshot;
    html! {
        h2 { "Orders that may still be open" }
        p.note #orders-count data-value=(orders.total) {
            (plural(total, "order", "orders")) " of this run "
            (if total == 1 { "is" } else { "are" })
            " " b { "still_open" } " (open in the listing after the last cancel-all), "
            b { "unverified" } " (no listing since the last cancel-all says what became of it) or "
            b { "rejected" } " (refused cancellation, never cancelled)."
        }
        @if never_listed > 0 {
            p.note #orders-never-listed {
                b { (plural(never_listed, "account was", "accounts were")) " never listed" }
                ": any order open there is not in this list, because the run never saw it."
            }
        }
        @if orders.unstorable > 0 {
            p.note {
                (plural(orders.unstorable, "order id", "order ids")) " above 2^63-1 "
                (if orders.unstorable == 1 { "is" } else { "are" }) " kept as text in the table "
                code { "unstorable_order_ids" } " and not listed here."
            }
        }
        @if !orders.listed.is_empty() {
            table #orders {
                thead { tr {
                    @for h in ["account", "order id", "outcome", "in snapshot", "symbol", "side",
                               "price", "remaining"] {
                        th { (h) }
                    }
                } }
                tbody { @for o in &orders.listed { (order_row(o)) } }
            }
        }
        @if more > 0 {
            p.note #orders-more data-value=(more) {
                b { "… and " (grouped(more as i64)) " more" } " not listed here (the page lists \
                the first " (grouped(MAX_ORDERS as i64)) "). All of them: "
                code {
                    "SELECT account, order_id, outcome FROM order_reconciliation WHERE run_id = "
                    (run.run_id) " AND outcome IN " (open_outcomes_sql())
                }
            }
        }
    }
}

fn order_row(o: &OpenOrder) -> Markup {
    html! {
        tr class=(o.outcome.as_str()) {
            td.mono { (o.account) }
            td.n.mono { (o.order_id) }
            td { (o.outcome.as_str()) }
            td { (if o.in_snapshot { "yes" } else { "no" }) }
            (text_cell(o.symbol.as_ref(), ""))
            (text_cell(o.side.as_ref(), ""))
            (text_cell(o.price.as_ref(), "n"))
            (text_cell(o.remaining.as_ref(), "n"))
        }
    }
}
