//! What the page reads from the database beyond the reconciliation rows: the run's processes
//! and the orders that may still be open.

use rusqlite::Connection;

/// At most this many orders are listed; a line says how many more there are.
pub(crate) const MAX_ORDERS: usize = 10_000;

/// The outcomes of `order_reconciliation` that mean an order may still be open.
pub(crate) const OPEN_OUTCOMES: &str = "('still_open', 'unverified', 'rejected')";

/// One process that worked on the run.
pub(crate) struct Invocation {
    pub(crate) id: i64,
    pub(crate) kind: String,
    pub(crate) started_at: String,
    pub(crate) ended_at: Option<String>,
    pub(crate) pid: i64,
    pub(crate) status: String,
    pub(crate) exit_code: Option<i64>,
    pub(crate) base_url: String,
    pub(crate) tool_version: String,
    pub(crate) accounts: i64,
    pub(crate) stop_reason: Option<String>,
    /// `rate` from its options JSON (requests per second), when recorded.
    pub(crate) rate: Option<f64>,
    /// Its start and end in seconds since the run started.
    pub(crate) start_s: Option<f64>,
    pub(crate) end_s: Option<f64>,
}

pub(crate) fn invocations(conn: &Connection, run_id: i64) -> rusqlite::Result<Vec<Invocation>> {
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
pub(crate) struct OpenOrder {
    pub(crate) account: String,
    pub(crate) order_id: i64,
    pub(crate) outcome: String,
    pub(crate) in_snapshot: bool,
    pub(crate) symbol: Option<String>,
    pub(crate) side: Option<String>,
    pub(crate) price: Option<String>,
    pub(crate) remaining: Option<String>,
}

/// The first [`MAX_ORDERS`] orders still open, unverified or rejected, and how many there are.
pub(crate) fn open_orders(
    conn: &Connection,
    run_id: i64,
) -> rusqlite::Result<(Vec<OpenOrder>, u64)> {
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
         WHERE o.run_id = ?1 AND o.outcome IN {OPEN_OUTCOMES}
         ORDER BY o.account, o.order_id"
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
                in_snapshot: r.get::<_, i64>(3)? != 0,
                symbol: r.get(4)?,
                side: r.get(5)?,
                price: r.get(6)?,
                remaining: r.get(7)?,
            });
        }
    }
    Ok((listed, total))
}
