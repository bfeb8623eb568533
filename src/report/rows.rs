//! The reconciliation rows as the reports read them: a run's row and its accounts' rows from
//! the views, as (column, value) pairs, with the one rule that a run whose process died reads
//! so.

use rusqlite::Connection;
use rusqlite::types::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// Every account.
    All,
    /// Accounts that failed, were interrupted, not attempted or never finished.
    Failed,
    /// Accounts not swept, or swept but not verified flat.
    Dirty,
}

/// The columns of `account_reconciliation` a report shows, in order. Part of the documented shape.
pub(crate) const ACCOUNT_COLUMNS: &[&str] = &[
    "account",
    "status",
    "failure",
    "attempts",
    "open_before",
    "cancelled",
    "rejected",
    "open_after",
    "unexplained",
    "unverified",
    "late",
    "verified",
    "clean",
    "last_error",
];

/// The columns of `run_reconciliation` a report shows.
pub(crate) const RUN_COLUMNS: &[&str] = &[
    "run_id",
    "group_name",
    "started_at",
    "ended_at",
    "duration_ms",
    "status",
    "stop_reason",
    "base_url",
    "key_fingerprint",
    "accounts",
    "accounts_skipped",
    "accounts_clean",
    "accounts_dirty",
    "accounts_without_snapshot",
    "accounts_unverified",
    "open_before",
    "cancelled",
    "rejected",
    "open_after",
    "unexplained",
    "unverified",
    "late",
    "clean",
];

pub(crate) type Row = Vec<(&'static str, Value)>;

pub(crate) fn query_rows(
    conn: &Connection,
    columns: &'static [&'static str],
    from_where: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<Row>> {
    let sql = format!("SELECT {} FROM {from_where}", columns.join(", "));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params, |r| {
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| Ok((*c, r.get::<_, Value>(i)?)))
            .collect::<rusqlite::Result<Row>>()
    })?;
    rows.collect()
}

pub(crate) fn run_row(conn: &Connection, run_id: i64) -> rusqlite::Result<Row> {
    let mut rows = query_rows(
        conn,
        RUN_COLUMNS,
        "run_reconciliation WHERE run_id = ?1",
        [run_id],
    )?;
    let mut row = rows.pop().ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    mark_dead(conn, &mut row)?;
    Ok(row)
}

/// A run still marked `running` whose process is gone reads `died` (the next run on the
/// database records it so; until then only the process table knows).
pub(crate) fn mark_dead(conn: &Connection, row: &mut Row) -> rusqlite::Result<()> {
    let is_running = matches!(field(row, "status"), Value::Text(s) if s == "running");
    if !is_running {
        return Ok(());
    }
    let Value::Integer(run_id) = *field(row, "run_id") else {
        return Ok(());
    };
    let pid: Option<i64> = conn.query_row(
        "SELECT max(pid) FROM invocations WHERE run_id = ?1 AND status = 'running'",
        [run_id],
        |r| r.get(0),
    )?;
    if pid.is_some_and(|pid| !process_alive(pid)) {
        for (name, value) in row.iter_mut() {
            if *name == "status" {
                *value = Value::Text("died".into());
            }
        }
    }
    Ok(())
}

/// Whether a process with this id exists on this machine (Linux's /proc; elsewhere, assumed).
pub(crate) fn process_alive(pid: i64) -> bool {
    let proc = std::path::Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    pid > 0 && proc.join(pid.to_string()).exists()
}

pub(crate) fn account_rows(
    conn: &Connection,
    run_id: i64,
    only: Only,
) -> rusqlite::Result<Vec<Row>> {
    account_rows_with(conn, ACCOUNT_COLUMNS, run_id, only)
}

pub(crate) fn account_rows_with(
    conn: &Connection,
    columns: &'static [&'static str],
    run_id: i64,
    only: Only,
) -> rusqlite::Result<Vec<Row>> {
    let filter = match only {
        Only::All => "",
        Only::Failed => " AND status IN ('failed', 'interrupted', 'pending', 'not_attempted')",
        Only::Dirty => " AND dirty",
    };
    query_rows(
        conn,
        columns,
        &format!("account_reconciliation WHERE run_id = ?1{filter} ORDER BY csv_line, account"),
        [run_id],
    )
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(t) => t.clone(),
        Value::Blob(b) => hex::encode(b),
    }
}

pub(crate) fn field<'a>(row: &'a Row, name: &str) -> &'a Value {
    &row.iter()
        .find(|(c, _)| *c == name)
        .expect("known column")
        .1
}
