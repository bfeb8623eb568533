//! What the page reads from the database beyond the reconciliation rows: the run's processes
//! and the orders that may still be open.

use rusqlite::Connection;

use crate::report::text::OutsideText;
use crate::store::{InvocationKind, OrderOutcome, RunStatus};

/// At most this many orders are listed; a line says how many more there are.
pub(super) const MAX_ORDERS: usize = 10_000;

/// The outcomes under which an order may still be open, as SQL: `('still_open', ...)`.
pub(super) fn open_outcomes_sql() -> String {
    let words: Vec<String> = OrderOutcome::OPEN
        .iter()
        .map(|o| format!("'{o}'"))
        .collect();
    format!("({})", words.join(", "))
}

/// One process that worked on the run.
pub(super) struct Invocation {
    pub(super) id: i64,
    pub(super) kind: InvocationKind,
    pub(super) started_at: OutsideText,
    pub(super) ended_at: Option<OutsideText>,
    pub(super) pid: i64,
    pub(super) status: RunStatus,
    pub(super) exit_code: Option<i64>,
    pub(super) base_url: OutsideText,
    pub(super) tool_version: OutsideText,
    pub(super) accounts: i64,
    pub(super) stop_reason: Option<OutsideText>,
    /// `rate` from its options JSON (requests per second), when recorded.
    pub(super) rate: Option<f64>,
    /// Its start and end in seconds since the run started.
    pub(super) start_s: Option<f64>,
    pub(super) end_s: Option<f64>,
}

pub(super) fn invocations(conn: &Connection, run_id: i64) -> rusqlite::Result<Vec<Invocation>> {
    let mut stmt = conn.prepare(
        "SELECT i.invocation_id, i.kind, i.started_at, i.ended_at, i.pid, i.status, i.exit_code,
                i.base_url, i.tool_version, i.accounts, i.stop_reason, i.options,
                (julianday(i.started_at) - julianday(r.started_at)) * 86400.0,
                (julianday(i.ended_at) - julianday(r.started_at)) * 86400.0
         FROM invocations i JOIN runs r ON r.run_id = i.run_id
         WHERE i.run_id = ?1 ORDER BY i.invocation_id",
    )?;
    let rows = stmt.query_map([run_id], |r| {
        let options: String = r.get(11)?;
        // Options are ours, but a report must not fail on a field it cannot read: unknown rate.
        let rate = serde_json::from_str::<serde_json::Value>(&options)
            .ok()
            .and_then(|o| o.get("rate").and_then(serde_json::Value::as_f64))
            .filter(|r| r.is_finite() && *r > 0.0);
        Ok(Invocation {
            id: r.get(0)?,
            kind: r.get(1)?,
            started_at: r.get(2)?,
            ended_at: r.get(3)?,
            pid: r.get(4)?,
            status: r.get(5)?,
            exit_code: r.get(6)?,
            base_url: r.get(7)?,
            tool_version: r.get(8)?,
            accounts: r.get(9)?,
            stop_reason: r.get(10)?,
            rate,
            start_s: r.get(12)?,
            end_s: r.get(13)?,
        })
    })?;
    rows.collect()
}

/// An order that may still be open, with what a listing said of it.
pub(super) struct OpenOrder {
    pub(super) account: OutsideText,
    pub(super) order_id: i64,
    pub(super) outcome: OrderOutcome,
    pub(super) in_snapshot: bool,
    pub(super) symbol: Option<OutsideText>,
    pub(super) side: Option<OutsideText>,
    pub(super) price: Option<OutsideText>,
    pub(super) remaining: Option<OutsideText>,
}

/// The orders that may still be open: the first [`MAX_ORDERS`], how many there are, and how
/// many ids too large to store (kept as text elsewhere) are not among them.
pub(super) struct OpenOrders {
    pub(super) listed: Vec<OpenOrder>,
    pub(super) total: u64,
    pub(super) unstorable: i64,
}

pub(super) fn open_orders(conn: &Connection, run_id: i64) -> rusqlite::Result<OpenOrders> {
    // The latest listing (after) says more about an order than the first (before).
    let mut stmt = conn.prepare(&format!(
        "SELECT o.account, o.order_id, o.outcome, o.in_snapshot,
                coalesce(a.symbol, b.symbol), coalesce(a.side, b.side),
                coalesce(a.price, b.price), coalesce(a.remaining_amount, b.remaining_amount)
         FROM order_reconciliation o
         LEFT JOIN open_orders_after a
                ON a.run_id = o.run_id AND a.account = o.account AND a.order_id = o.order_id
         LEFT JOIN open_orders_before b
                ON b.run_id = o.run_id AND b.account = o.account AND b.order_id = o.order_id
         WHERE o.run_id = ?1 AND o.outcome IN {}
         ORDER BY o.account, o.order_id",
        open_outcomes_sql()
    ))?;
    let mut rows = stmt.query([run_id])?;
    let mut listed = Vec::new();
    let mut total = 0u64;
    while let Some(r) = rows.next()? {
        total += 1;
        if listed.len() < MAX_ORDERS {
            listed.push(OpenOrder {
                account: r.get(0)?,
                order_id: r.get(1)?,
                outcome: r.get(2)?,
                in_snapshot: r.get(3)?,
                symbol: r.get(4)?,
                side: r.get(5)?,
                price: r.get(6)?,
                remaining: r.get(7)?,
            });
        }
    }
    let unstorable = conn.query_row(
        "SELECT count(*) FROM unstorable_order_ids WHERE run_id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    Ok(OpenOrders {
        listed,
        total,
        unstorable,
    })
}
