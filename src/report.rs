//! Reading runs back out of the database: the reconciliation views as a table, CSV or JSON.
//!
//! Every number comes from the views in `migrations/` (nothing is recomputed here), so the tool
//! and an auditor's `sqlite3` always agree.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value as Json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// Every account.
    All,
    /// Accounts that failed, were interrupted or never finished.
    Failed,
    /// Accounts not swept, or swept but not verified flat.
    Dirty,
}

/// The columns of `account_reconciliation` a report shows, in order. Part of the documented shape.
const ACCOUNT_COLUMNS: &[&str] = &[
    "account",
    "status",
    "attempts",
    "open_before",
    "cancelled",
    "rejected",
    "open_after",
    "unexplained",
    "late",
    "verified",
    "clean",
    "last_error",
];

/// The columns of `run_reconciliation` a report shows.
const RUN_COLUMNS: &[&str] = &[
    "run_id",
    "started_at",
    "ended_at",
    "duration_ms",
    "status",
    "base_url",
    "key_fingerprint",
    "accounts",
    "accounts_skipped",
    "accounts_clean",
    "open_before",
    "cancelled",
    "rejected",
    "open_after",
    "unexplained",
    "late",
    "clean",
];

/// Resolves `latest` or a run id to an existing run id.
pub fn resolve_run(conn: &Connection, run: &str) -> rusqlite::Result<Option<i64>> {
    if run == "latest" {
        return conn
            .query_row("SELECT max(run_id) FROM runs", [], |r| r.get(0))
            .optional()
            .map(Option::flatten);
    }
    let Ok(id) = run.parse::<i64>() else {
        return Ok(None);
    };
    conn.query_row("SELECT run_id FROM runs WHERE run_id = ?1", [id], |r| {
        r.get(0)
    })
    .optional()
}

type Row = Vec<(&'static str, Value)>;

fn query_rows(
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

fn run_row(conn: &Connection, run_id: i64) -> rusqlite::Result<Row> {
    let mut rows = query_rows(
        conn,
        RUN_COLUMNS,
        "run_reconciliation WHERE run_id = ?1",
        [run_id],
    )?;
    rows.pop().ok_or(rusqlite::Error::QueryReturnedNoRows)
}

fn account_rows(conn: &Connection, run_id: i64, only: Only) -> rusqlite::Result<Vec<Row>> {
    let filter = match only {
        Only::All => "",
        Only::Failed => " AND status IN ('failed', 'interrupted', 'pending')",
        Only::Dirty => " AND dirty",
    };
    query_rows(
        conn,
        ACCOUNT_COLUMNS,
        &format!("account_reconciliation WHERE run_id = ?1{filter} ORDER BY csv_line, account"),
        [run_id],
    )
}

/// A run's report in `format`.
pub fn render(
    conn: &Connection,
    run_id: i64,
    format: Format,
    only: Only,
) -> rusqlite::Result<String> {
    let run = run_row(conn, run_id)?;
    let accounts = account_rows(conn, run_id, only)?;
    Ok(match format {
        Format::Table => table(&run, &accounts),
        Format::Csv => csv_text(&accounts, ACCOUNT_COLUMNS, Some(&run)),
        Format::Json => {
            let doc = serde_json::json!({
                "run": to_json(&run),
                "accounts": accounts.iter().map(to_json).collect::<Vec<_>>(),
            });
            format!("{doc}\n")
        }
    })
}

/// `gemini-sweep runs`: one line per run, newest first.
pub fn runs(conn: &Connection, format: Format, limit: u32) -> rusqlite::Result<String> {
    const COLUMNS: &[&str] = &[
        "run_id",
        "started_at",
        "duration_ms",
        "status",
        "accounts",
        "accounts_clean",
        "clean",
    ];
    let rows = query_rows(
        conn,
        COLUMNS,
        "run_reconciliation ORDER BY run_id DESC LIMIT ?1",
        [limit],
    )?;
    Ok(match format {
        Format::Json => format!("{}\n", Json::Array(rows.iter().map(to_json).collect())),
        Format::Csv => csv_text(&rows, COLUMNS, None),
        Format::Table => {
            let mut out = format!(
                "{:>6}  {:<24}  {:>9}  {:<11}  {:>8}  {:>5}  {}\n",
                "RUN", "STARTED (UTC)", "DURATION", "STATUS", "ACCOUNTS", "CLEAN", "FLAT"
            );
            for r in &rows {
                let duration = match &r[2].1 {
                    Value::Integer(ms) => format!("{:.1}s", *ms as f64 / 1000.0),
                    _ => "-".into(),
                };
                out.push_str(&format!(
                    "{:>6}  {:<24}  {:>9}  {:<11}  {:>8}  {:>5}  {}\n",
                    text(&r[0].1),
                    text(&r[1].1),
                    duration,
                    text(&r[3].1),
                    text(&r[4].1),
                    text(&r[5].1),
                    yes_no(&r[6].1)
                ));
            }
            out
        }
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(t) => t.clone(),
        Value::Blob(b) => hex::encode(b),
    }
}

fn yes_no(v: &Value) -> &'static str {
    match v {
        Value::Integer(0) => "no",
        Value::Integer(_) => "yes",
        _ => "-",
    }
}

fn field<'a>(row: &'a Row, name: &str) -> &'a Value {
    &row.iter()
        .find(|(c, _)| *c == name)
        .expect("known column")
        .1
}

/// At most 80 columns: the long fields (last error, URLs) are in the CSV and JSON formats.
fn table(run: &Row, accounts: &[Row]) -> String {
    let line = |label: String, row: &Row| {
        format!(
            "{:<20} {:<12} {:>6} {:>6} {:>5} {:>5} {:>6} {:>4} {:>5}\n",
            clip(&label, 20),
            text(field(row, "status")),
            text(field(row, "open_before")),
            text(field(row, "cancelled")),
            text(field(row, "rejected")),
            text(field(row, "open_after")),
            text(field(row, "unexplained")),
            text(field(row, "late")),
            yes_no(field(row, "clean")),
        )
    };
    let mut out = format!(
        "{:<20} {:<12} {:>6} {:>6} {:>5} {:>5} {:>6} {:>4} {:>5}\n",
        "ACCOUNT", "STATUS", "BEFORE", "CANCEL", "REJ", "AFTER", "UNEXPL", "LATE", "CLEAN"
    );
    for a in accounts {
        out.push_str(&line(text(field(a, "account")), a));
    }
    out.push_str(&line(
        format!("run {} total", text(field(run, "run_id"))),
        run,
    ));
    out
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(width - 1).collect();
        cut.push('~');
        cut
    }
}

/// A cell a spreadsheet would run as a formula gets a leading apostrophe.
fn spreadsheet_safe(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// CSV of `rows`; with `total`, a last row carrying the run's totals under the same columns.
fn csv_text(rows: &[Row], columns: &[&str], total: Option<&Row>) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(columns);
    for r in rows {
        let _ = writer.write_record(r.iter().map(|(_, v)| spreadsheet_safe(text(v))));
    }
    if let Some(run) = total {
        let cells = columns.iter().map(|c| match *c {
            "account" => format!("TOTAL run {}", text(field(run, "run_id"))),
            "last_error" | "attempts" | "verified" => String::new(),
            other => run
                .iter()
                .find(|(name, _)| *name == other)
                .map_or(String::new(), |(_, v)| spreadsheet_safe(text(v))),
        });
        let _ = writer.write_record(cells);
    }
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}

fn to_json(row: &Row) -> Json {
    let mut map = Map::new();
    for (name, value) in row {
        let v = match value {
            Value::Null => Json::Null,
            // SQLite has no booleans; the flag columns are 0/1 and read better as JSON booleans.
            Value::Integer(i) if matches!(*name, "verified" | "clean") => Json::Bool(*i != 0),
            Value::Integer(i) => Json::from(*i),
            Value::Real(f) => Json::from(*f),
            Value::Text(t) => Json::from(t.as_str()),
            Value::Blob(b) => Json::from(hex::encode(b)),
        };
        map.insert((*name).to_string(), v);
    }
    Json::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_like_cells_are_neutralised() {
        assert_eq!(
            spreadsheet_safe("=HYPERLINK(\"x\")".into()),
            "'=HYPERLINK(\"x\")"
        );
        assert_eq!(spreadsheet_safe("+1".into()), "'+1");
        assert_eq!(spreadsheet_safe("-1".into()), "'-1");
        assert_eq!(spreadsheet_safe("@SUM(A1)".into()), "'@SUM(A1)");
        assert_eq!(spreadsheet_safe("acct-0001".into()), "acct-0001");
    }
}
