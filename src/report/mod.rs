//! Reading runs back out of the database, and the files written from them.
//!
//! - this file: which format gets which rows, for `report` and `runs`.
//! - `rows`: the run's and its accounts' rows, read from the reconciliation views once and
//!   typed; every format below renders the same rows.
//! - `table`: the fixed-width tables for a terminal.
//! - `machine`: CSV and JSON, whose columns are a documented interface.
//! - `listing`: `gemini-sweep accounts`, the group's accounts as the exchange lists them.
//! - `text`: text from outside, which shows itself only through a format's escaping.
//! - [`html`]: `report --format html`, one self-contained page for an auditor.
//! - [`metrics`]: `--metrics-file`, the job's outcome for Prometheus.
//!
//! The files are written through [`crate::atomic_file`]: whole or not at all.
//!
//! Every number comes from the views in `migrations/` (nothing is recomputed here), so the tool
//! and an auditor's `sqlite3` always agree. What the database does not know is shown as unknown
//! (`-` in a table, empty in CSV, `null` in JSON), never as zero.

pub mod html;
mod listing;
mod machine;
pub mod metrics;
mod rows;
mod table;
mod text;

use std::collections::BTreeSet;

use rusqlite::Connection;

use crate::client::ListedAccount;

pub use rows::Only;
use rows::{AccountRow, RunRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    /// One self-contained HTML page (no script, nothing fetched); needs `--out FILE`.
    Html,
}

/// A run's report in `format`.
pub fn render(
    conn: &Connection,
    run_id: i64,
    format: Format,
    only: Only,
) -> rusqlite::Result<String> {
    let from_rows = |render: fn(&RunRow, &[AccountRow]) -> String| {
        let run = RunRow::read(conn, run_id)?;
        Ok(render(&run, &AccountRow::read_all(conn, run_id, only)?))
    };
    match format {
        Format::Table => {
            let mut table = from_rows(table::run_table)?;
            let totals = crate::store::run_totals(conn, run_id)?;
            if let Some(hold) = totals.hold {
                table.push_str(&table::hold_line(&hold));
            }
            if totals.unreported_cancels > 0 {
                table.push_str(&table::unreported_line(totals.unreported_cancels));
            }
            Ok(table)
        }
        Format::Csv => from_rows(machine::report_csv),
        Format::Json => from_rows(machine::report_json),
        // The page reads the same rows, and more.
        Format::Html => html::render(conn, run_id, only),
    }
}

/// The table of each run in `run_ids`, one after another: a job of several groups in one
/// terminal, each table naming its run and group.
pub fn tables(conn: &Connection, run_ids: &[i64], only: Only) -> rusqlite::Result<String> {
    let mut out = String::new();
    for (i, &run_id) in run_ids.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&render(conn, run_id, Format::Table, only)?);
    }
    Ok(out)
}

/// `gemini-sweep runs`: the `limit` newest runs (of `group`, if given), and every run of the
/// latest job among them even where the limit would cut the job short, newest first.
pub fn runs(
    conn: &Connection,
    format: Format,
    limit: u32,
    group: Option<&str>,
) -> rusqlite::Result<String> {
    let mut stmt = conn.prepare(
        "SELECT run_id FROM runs WHERE ?2 IS NULL OR group_name = ?2
         ORDER BY run_id DESC LIMIT ?1",
    )?;
    let mut ids = stmt
        .query_map(rusqlite::params![limit, group], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let job = crate::store::latest_job(conn)?;
    ids.extend(
        job.iter()
            .filter(|r| group.is_none_or(|g| r.group == g))
            .map(|r| r.run_id),
    );
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    // One indexed lookup per run listed: the cost does not grow with the runs not listed.
    let rows = ids
        .into_iter()
        .map(|id| RunRow::read(conn, id))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(match format {
        Format::Json => machine::runs_json(&rows),
        Format::Csv => machine::runs_csv(&rows),
        // `runs` offers no html (the command line refuses it): a table, should it get here.
        Format::Table | Format::Html => table::runs_table(&rows),
    })
}

/// `gemini-sweep accounts`: the group's accounts and whether a sweep takes each.
pub fn accounts(listed: &[ListedAccount], excluded: &BTreeSet<String>, format: Format) -> String {
    let skip = |a: &ListedAccount| crate::accounts::skip_reason(a, excluded);
    match format {
        Format::Json => listing::json(listed, &skip),
        Format::Csv => listing::csv(listed, &skip),
        // The command line offers no html here: a table, should it get here.
        Format::Table | Format::Html => listing::table(listed, &skip),
    }
}
