//! Reading runs back out of the database, and the files written from them.
//!
//! - this file: a run's reconciliation, the runs list and the accounts listing as a table, CSV
//!   or JSON.
//! - [`html`]: `report --format html`, one self-contained page for an auditor.
//! - [`metrics`]: `--metrics-file`, the job's outcome for Prometheus.
//! - `rows`: the run's and its accounts' rows from the reconciliation views, shared by all.
//!
//! The files are written through [`crate::atomic_file`]: whole or not at all.
//!
//! Every number comes from the views in `migrations/` (nothing is recomputed here), so the tool
//! and an auditor's `sqlite3` always agree. What the database does not know is shown as unknown
//! (`-` in a table, empty in CSV, `null` in JSON), never as zero.

pub mod metrics;

use rusqlite::Connection;
use rusqlite::types::Value;
use serde_json::{Map, Value as Json};

use crate::safe_text::{csv_cell, escape, json_safe};

pub mod html;
mod rows;

pub use rows::Only;
use rows::{ACCOUNT_COLUMNS, Row, account_rows, field, mark_dead, query_rows, run_row, text};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    /// One self-contained HTML page (no script, nothing fetched); needs `--out FILE`.
    Html,
}

/// Flag columns, shown as booleans in JSON.
const FLAGS: &[&str] = &["verified", "clean"];

/// A run's report in `format`.
pub fn render(
    conn: &Connection,
    run_id: i64,
    format: Format,
    only: Only,
) -> rusqlite::Result<String> {
    if format == Format::Html {
        return html::render(conn, run_id, only);
    }
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
            format!("{}\n", json_safe(&doc.to_string()))
        }
        Format::Html => unreachable!("rendered above"),
    })
}

/// `gemini-sweep runs`: one line per run, newest first.
pub fn runs(
    conn: &Connection,
    format: Format,
    limit: u32,
    group: Option<&str>,
) -> rusqlite::Result<String> {
    const COLUMNS: &[&str] = &[
        "run_id",
        "group_name",
        "started_at",
        "duration_ms",
        "status",
        "accounts",
        "accounts_clean",
        "clean",
    ];
    // One indexed lookup per run listed: the cost does not grow with the runs not listed.
    let mut ids = conn.prepare(
        "SELECT run_id FROM runs WHERE ?2 IS NULL OR group_name = ?2
         ORDER BY run_id DESC LIMIT ?1",
    )?;
    let ids = ids
        .query_map(rusqlite::params![limit, group], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let mut row = query_rows(conn, COLUMNS, "run_reconciliation WHERE run_id = ?1", [id])?
            .pop()
            .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
        mark_dead(conn, &mut row)?;
        rows.push(row);
    }
    Ok(match format {
        Format::Json => {
            let doc = Json::Array(rows.iter().map(to_json).collect()).to_string();
            format!("{}\n", json_safe(&doc))
        }
        Format::Csv => csv_text(&rows, COLUMNS, None),
        // `runs` offers no html (the command line refuses it): a table, should it get here.
        Format::Table | Format::Html => {
            let line = |cells: [&str; 8]| {
                format!(
                    "{:>5}  {:<10}  {:<24}  {:>8}  {:<11}  {:>8}  {:>5}  {}\n",
                    cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]
                )
            };
            let mut out = line([
                "RUN",
                "GROUP",
                "STARTED (UTC)",
                "DURATION",
                "STATUS",
                "ACCOUNTS",
                "CLEAN",
                "FLAT",
            ]);
            for r in &rows {
                let duration = match field(r, "duration_ms") {
                    Value::Integer(ms) => format!("{:.1}s", *ms as f64 / 1000.0),
                    _ => "-".into(),
                };
                out.push_str(&line([
                    &text(field(r, "run_id")),
                    &clip(&shown(field(r, "group_name")), 10),
                    &shown(field(r, "started_at")),
                    &duration,
                    &shown(field(r, "status")),
                    &text(field(r, "accounts")),
                    &text(field(r, "accounts_clean")),
                    yes_no(field(r, "clean")),
                ]));
            }
            out
        }
    })
}

/// `gemini-sweep accounts`: the group's accounts and whether a sweep takes each.
pub fn accounts(
    listed: &[crate::client::ListedAccount],
    excluded: &std::collections::BTreeSet<String>,
    format: Format,
) -> String {
    let skip = |a: &crate::client::ListedAccount| crate::accounts::skip_reason(a, excluded);
    match format {
        Format::Json => {
            let rows: Vec<Json> = listed
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "account": a.account,
                        "name": a.name,
                        "type": a.kind,
                        "status": a.status,
                        "created": a.created,
                        "sweep": skip(a).is_none(),
                        "note": skip(a),
                    })
                })
                .collect();
            format!("{}\n", json_safe(&Json::Array(rows).to_string()))
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(Vec::new());
            let _ = writer.write_record(["account", "name", "type", "status", "sweep", "note"]);
            for a in listed {
                let note = skip(a);
                let _ = writer.write_record([
                    csv_cell(&a.account),
                    csv_cell(&a.name),
                    csv_cell(&a.kind),
                    csv_cell(&a.status),
                    note.is_none().to_string(),
                    csv_cell(&note.unwrap_or_default()),
                ]);
            }
            String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
        }
        // The command line offers no html here: a table, should it get here.
        Format::Table | Format::Html => {
            let line = |cells: [&str; 5]| {
                format!(
                    "{:<20} {:<20} {:<9} {:<7} {}\n",
                    cells[0], cells[1], cells[2], cells[3], cells[4]
                )
            };
            let mut out = line(["ACCOUNT", "NAME", "TYPE", "STATUS", "SWEEP"]);
            for a in listed {
                let note = skip(a).map_or_else(|| "yes".to_owned(), |why| format!("no: {why}"));
                out.push_str(&line([
                    &clip(&escape(&a.account), 20),
                    &clip(&escape(&a.name), 20),
                    &escape(&a.kind),
                    &escape(&a.status),
                    &escape(&note),
                ]));
            }
            let sweep = listed.iter().filter(|a| skip(a).is_none()).count();
            out.push_str(&format!("{} accounts, {sweep} to sweep\n", listed.len()));
            out
        }
    }
}

/// Text from the database for a table: control characters shown (see [`escape`]).
fn shown(v: &Value) -> String {
    escape(&text(v)).into_owned()
}

/// A count in a table: `-` when unknown.
fn count(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        other => text(other),
    }
}

fn yes_no(v: &Value) -> &'static str {
    match v {
        Value::Integer(0) => "no",
        Value::Integer(_) => "yes",
        _ => "-",
    }
}

/// At most 80 columns: the long fields (last error, URLs) are in the CSV and JSON formats.
fn table(run: &Row, accounts: &[Row]) -> String {
    let line = |cells: [&str; 10]| {
        format!(
            "{:<15} {:<13} {:>6} {:>6} {:>5} {:>5} {:>5} {:>5} {:>5} {:>4}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8],
            cells[9]
        )
    };
    let mut out = line([
        "ACCOUNT", "STATUS", "BEFORE", "CANCEL", "REJ", "OPEN", "UNVER", "UNEXP", "LATE", "FLAT",
    ]);
    for a in accounts {
        out.push_str(&line([
            &clip(&shown(field(a, "account")), 15),
            &shown(field(a, "status")),
            &count(field(a, "open_before")),
            &count(field(a, "cancelled")),
            &count(field(a, "rejected")),
            &count(field(a, "open_after")),
            &count(field(a, "unverified")),
            &count(field(a, "unexplained")),
            &count(field(a, "late")),
            yes_no(field(a, "clean")),
        ]));
    }
    // A total over accounts some of which were never listed is a lower bound: marked `+?`.
    let partial = |total: &str, missing: &str| {
        let t = text(field(run, total));
        match field(run, missing) {
            Value::Integer(n) if *n > 0 => format!("{t}+?"),
            _ => t,
        }
    };
    out.push_str(&line([
        &format!("run {} total", text(field(run, "run_id"))),
        &shown(field(run, "status")),
        &partial("open_before", "accounts_without_snapshot"),
        &count(field(run, "cancelled")),
        &count(field(run, "rejected")),
        &partial("open_after", "accounts_unverified"),
        &count(field(run, "unverified")),
        &count(field(run, "unexplained")),
        &count(field(run, "late")),
        yes_no(field(run, "clean")),
    ]));
    if let Value::Text(reason) = field(run, "stop_reason") {
        out.push_str(&format!("stopped: {}\n", escape(reason)));
    }
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

/// CSV of `rows`; with `total`, a last row carrying the run's totals under the same columns.
fn csv_text(rows: &[Row], columns: &[&str], total: Option<&Row>) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(columns);
    for r in rows {
        let _ = writer.write_record(r.iter().map(|(_, v)| csv_cell(&text(v))));
    }
    if let Some(run) = total {
        let cells = columns.iter().map(|c| match *c {
            "account" => format!("TOTAL run {}", text(field(run, "run_id"))),
            "last_error" => run
                .iter()
                .find(|(name, _)| *name == "stop_reason")
                .map_or(String::new(), |(_, v)| csv_cell(&text(v))),
            other => run
                .iter()
                .find(|(name, _)| *name == other)
                .map_or(String::new(), |(_, v)| csv_cell(&text(v))),
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
            Value::Integer(i) if FLAGS.contains(name) => Json::Bool(*i != 0),
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
    use super::rows::RUN_COLUMNS;
    use super::*;

    #[test]
    fn the_table_fits_80_columns_and_shows_unknown_as_unknown() {
        let account: Row = ACCOUNT_COLUMNS
            .iter()
            .map(|c| {
                let v = match *c {
                    "account" => Value::Text("a-very-long-account-nickname".into()),
                    "status" => Value::Text("not_attempted".into()),
                    "open_before" | "open_after" | "clean" => Value::Null,
                    _ => Value::Integer(99_999),
                };
                (*c, v)
            })
            .collect();
        let run: Row = RUN_COLUMNS
            .iter()
            .map(|c| {
                let v = match *c {
                    "status" => Value::Text("incomplete".into()),
                    "stop_reason" => Value::Null,
                    "accounts_without_snapshot" => Value::Integer(1),
                    "accounts_unverified" => Value::Integer(0),
                    _ => Value::Integer(99_999),
                };
                (*c, v)
            })
            .collect();
        let out = table(&run, &[account]);
        for line in out.lines() {
            assert!(line.chars().count() <= 80, "{line:?}");
        }
        let row = out.lines().nth(1).unwrap();
        assert!(row.contains("not_attempted"), "{row}");
        assert_eq!(row.split_whitespace().nth(2), Some("-"), "{row}");
        let total = out.lines().nth(2).unwrap();
        assert!(total.contains("99999+?"), "{total}");
    }
}
