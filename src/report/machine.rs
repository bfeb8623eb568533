//! CSV and JSON of the report and the runs list. Their column names and order are a documented
//! interface (docs/audit-trail.md, "Reports"): the rows' fields in order, unknown as an empty
//! cell or `null`, flags as `1`/`0` in CSV and booleans in JSON.

use std::fmt::Display;

use serde_json::Value as Json;

use super::rows::{AccountRow, RunRow};
use super::text::OutsideText;
use crate::safe_text::{csv_cell, json_safe};
use crate::store::RunStatus;

/// A header row, one row per account, then the run's total under the same columns.
pub(super) fn report_csv(run: &RunRow, accounts: &[AccountRow]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(AccountRow::COLUMNS);
    for a in accounts {
        let _ = writer.write_record(account_cells(a));
    }
    let _ = writer.write_record(total_cells(run));
    finish(writer)
}

/// `{"accounts": [...], "run": {...}}`, its keys sorted (serde_json's map).
pub(super) fn report_json(run: &RunRow, accounts: &[AccountRow]) -> String {
    let doc = serde_json::json!({ "run": run, "accounts": accounts });
    format!("{}\n", json_safe(&doc.to_string()))
}

/// The runs list's columns: part of the run's row.
const RUNS_COLUMNS: [&str; 8] = [
    "run_id",
    "group_name",
    "started_at",
    "duration_ms",
    "status",
    "accounts",
    "accounts_clean",
    "clean",
];

/// A run's line in the runs list.
#[derive(serde::Serialize)]
struct RunLine<'a> {
    run_id: i64,
    group_name: &'a OutsideText,
    started_at: &'a OutsideText,
    duration_ms: Option<i64>,
    status: RunStatus,
    accounts: i64,
    accounts_clean: i64,
    clean: Option<bool>,
}

impl<'a> From<&'a RunRow> for RunLine<'a> {
    fn from(r: &'a RunRow) -> Self {
        RunLine {
            run_id: r.run_id,
            group_name: &r.group_name,
            started_at: &r.started_at,
            duration_ms: r.duration_ms,
            status: r.status,
            accounts: r.accounts,
            accounts_clean: r.accounts_clean,
            clean: r.clean,
        }
    }
}

pub(super) fn runs_csv(rows: &[RunRow]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(RUNS_COLUMNS);
    for r in rows {
        let _ = writer.write_record([
            num(r.run_id),
            r.group_name.csv(),
            r.started_at.csv(),
            opt(r.duration_ms),
            word(r.status),
            num(r.accounts),
            num(r.accounts_clean),
            opt_flag(r.clean),
        ]);
    }
    finish(writer)
}

pub(super) fn runs_json(rows: &[RunRow]) -> String {
    let lines: Vec<RunLine> = rows.iter().map(RunLine::from).collect();
    let doc = serde_json::to_value(&lines).unwrap_or(Json::Null);
    format!("{}\n", json_safe(&doc.to_string()))
}

fn account_cells(a: &AccountRow) -> [String; 14] {
    [
        a.account.csv(),
        word(a.status),
        a.failure.map(word).unwrap_or_default(),
        num(a.attempts),
        opt(a.open_before),
        num(a.cancelled),
        num(a.rejected),
        opt(a.open_after),
        num(a.unexplained),
        num(a.unverified),
        num(a.late),
        flag(a.verified),
        opt_flag(a.clean),
        a.last_error
            .as_ref()
            .map(OutsideText::csv)
            .unwrap_or_default(),
    ]
}

/// The run's totals under the accounts' columns: its own id in the first, its stop reason
/// under the last error, empty where a run has no such value.
fn total_cells(run: &RunRow) -> [String; 14] {
    [
        format!("TOTAL run {}", run.run_id),
        word(run.status),
        String::new(),
        String::new(),
        num(run.open_before),
        num(run.cancelled),
        num(run.rejected),
        num(run.open_after),
        num(run.unexplained),
        num(run.unverified),
        num(run.late),
        String::new(),
        opt_flag(run.clean),
        run.stop_reason
            .as_ref()
            .map(OutsideText::csv)
            .unwrap_or_default(),
    ]
}

/// Numbers and words go through the same cell rule as text: a negative duration (a clock
/// stepped back) must not read as a formula either.
fn num(n: i64) -> String {
    csv_cell(&n.to_string())
}

fn opt(n: Option<i64>) -> String {
    n.map(num).unwrap_or_default()
}

fn word(w: impl Display) -> String {
    csv_cell(&w.to_string())
}

fn flag(f: bool) -> String {
    u8::from(f).to_string()
}

fn opt_flag(f: Option<bool>) -> String {
    f.map(flag).unwrap_or_default()
}

fn finish(writer: csv::Writer<Vec<u8>>) -> String {
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}
