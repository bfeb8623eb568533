//! The reconciliation rows every report reads: a run's row and its accounts' rows, read from
//! the views in one place into typed structs, with the one rule that a run whose process died
//! reads so. Each struct's fields are its view's columns, in the order of the documented CSV and
//! JSON columns.

use rusqlite::Connection;
use rusqlite::types::FromSql;

use super::text::OutsideText;
use crate::store::{AccountFailure, AccountStatus, RunStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// Every account.
    All,
    /// Accounts that failed, were interrupted, not attempted or never finished.
    Failed,
    /// Accounts not swept, or swept but not verified flat.
    Dirty,
}

/// A struct of a view's columns with `FIELDS` (their names, in order) and `from_row`, from one
/// list: a field, its column and its place in the SELECT are one name, so none can drift.
macro_rules! view_row {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Serialize)]
        pub(crate) struct $name {
            $($(#[$fmeta])* pub(crate) $field: $ty,)+
        }

        impl $name {
            pub(crate) const FIELDS: &[&str] = &[$(stringify!($field)),+];

            /// The row from a SELECT of [`Self::FIELDS`], in order.
            fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                let mut c = Columns::new(row);
                Ok($name {
                    $($field: c.next()?,)+
                })
            }
        }
    };
}

view_row!(
    /// A run's row of `run_reconciliation`.
    RunRow {
        run_id: i64,
        group_name: OutsideText,
        started_at: OutsideText,
        ended_at: Option<OutsideText>,
        duration_ms: Option<i64>,
        status: RunStatus,
        stop_reason: Option<OutsideText>,
        base_url: OutsideText,
        key_fingerprint: OutsideText,
        accounts: i64,
        accounts_skipped: i64,
        accounts_clean: i64,
        accounts_dirty: i64,
        accounts_without_snapshot: i64,
        accounts_unverified: i64,
        open_before: i64,
        cancelled: i64,
        rejected: i64,
        open_after: i64,
        unexplained: i64,
        unverified: i64,
        late: i64,
        /// Unknown (`None`) while the run is going, or when it swept without verification.
        clean: Option<bool>,
    }
);

view_row!(
    /// An account's row of `account_reconciliation`. Unknown counts (no listing was taken) are
    /// `None`, never 0.
    AccountRow {
        account: OutsideText,
        status: AccountStatus,
        failure: Option<AccountFailure>,
        attempts: i64,
        open_before: Option<i64>,
        cancelled: i64,
        rejected: i64,
        open_after: Option<i64>,
        unexplained: i64,
        unverified: i64,
        late: i64,
        verified: bool,
        clean: Option<bool>,
        last_error: Option<OutsideText>,
        /// Not swept, or swept but not verified flat. The page highlights it; the CSV and JSON
        /// leave it out (their columns are a documented interface, and `clean` says the same).
        #[serde(skip)]
        dirty: bool,
    }
);

impl RunRow {
    /// The run's row, `died` if its process is gone while it reads `running`.
    pub(crate) fn read(conn: &Connection, run_id: i64) -> rusqlite::Result<RunRow> {
        let sql = format!(
            "SELECT {} FROM run_reconciliation WHERE run_id = ?1",
            Self::FIELDS.join(", ")
        );
        let mut row = conn.query_row(&sql, [run_id], Self::from_row)?;
        if row.status == RunStatus::Running && process_died(conn, run_id)? {
            row.status = RunStatus::Died;
        }
        Ok(row)
    }

    /// Accounts the run sweeps (not skipped).
    pub(crate) fn enabled(&self) -> i64 {
        self.accounts - self.accounts_skipped
    }
}

impl AccountRow {
    /// The CSV's columns: every field but the last, `dirty`.
    pub(crate) const COLUMNS: &[&str] = Self::FIELDS.split_at(Self::FIELDS.len() - 1).0;

    /// The run's accounts in the accounts file's order, `only` those asked for.
    pub(crate) fn read_all(
        conn: &Connection,
        run_id: i64,
        only: Only,
    ) -> rusqlite::Result<Vec<AccountRow>> {
        let filter = match only {
            Only::All => "",
            Only::Failed => " AND status IN ('failed', 'interrupted', 'pending', 'not_attempted')",
            Only::Dirty => " AND dirty",
        };
        let sql = format!(
            "SELECT {} FROM account_reconciliation WHERE run_id = ?1{filter}
             ORDER BY csv_line, account",
            Self::FIELDS.join(", ")
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([run_id], Self::from_row)?;
        rows.collect()
    }
}

/// A row's columns read in order; an error names the column whose value cannot be read.
struct Columns<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    next: usize,
}

impl<'r, 's> Columns<'r, 's> {
    fn new(row: &'r rusqlite::Row<'s>) -> Self {
        Columns { row, next: 0 }
    }

    fn next<T: FromSql>(&mut self) -> rusqlite::Result<T> {
        let i = self.next;
        self.next += 1;
        self.row.get(i).map_err(|e| match e {
            rusqlite::Error::FromSqlConversionFailure(i, kind, source) => {
                let column = self.row.as_ref().column_name(i).unwrap_or("?").to_owned();
                rusqlite::Error::FromSqlConversionFailure(
                    i,
                    kind,
                    Box::new(InColumn { column, source }),
                )
            }
            other => other,
        })
    }
}

/// What a column could not be read as, with the column's name.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: {source}")]
struct InColumn {
    column: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// Whether the process working on a run still marked `running` is gone: the next run on the
/// database records it `died`; until then only the process table knows.
fn process_died(conn: &Connection, run_id: i64) -> rusqlite::Result<bool> {
    let pid: Option<i64> = conn.query_row(
        "SELECT max(pid) FROM invocations WHERE run_id = ?1 AND status = 'running'",
        [run_id],
        |r| r.get(0),
    )?;
    Ok(pid.is_some_and(|pid| !process_alive(pid)))
}

/// Whether a process with this id exists on this machine (Linux's /proc; elsewhere, assumed).
pub(crate) fn process_alive(pid: i64) -> bool {
    let proc = std::path::Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    pid > 0 && proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each field is read from the column of its name: a view whose every column holds a value
    /// of its own reads back with each value under its column's key.
    #[test]
    fn each_field_reads_its_own_column() {
        let conn = Connection::open_in_memory().unwrap();
        let value = |i: usize, c: &str| match c {
            // A word both a run and an account can stand at.
            "status" => "'interrupted'".to_string(),
            "clean" | "verified" => "1".into(),
            "failure" => "'key_refused'".into(),
            c if c.ends_with("_at") || c.ends_with("_name") || c.ends_with("_url") => {
                format!("'{c}'")
            }
            "key_fingerprint" | "stop_reason" | "account" | "last_error" => format!("'{c}'"),
            _ => (100 + i).to_string(),
        };
        let view = |name: &str, columns: &[&str], extra: &str| {
            let select: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{} AS {c}", value(i, c)))
                .collect();
            conn.execute_batch(&format!(
                "CREATE VIEW {name} AS SELECT {}, {extra}",
                select.join(", ")
            ))
            .unwrap();
        };
        view("run_reconciliation", RunRow::FIELDS, "1 AS unused");
        view(
            "account_reconciliation",
            AccountRow::COLUMNS,
            "1 AS run_id, 1 AS csv_line, 1 AS dirty",
        );
        let check = |json: serde_json::Value, columns: &[&str]| {
            for (i, c) in columns.iter().enumerate() {
                let want = value(i, c);
                let got = match &json[c] {
                    serde_json::Value::String(s) => format!("'{s}'"),
                    serde_json::Value::Bool(b) => u8::from(*b).to_string(),
                    other => other.to_string(),
                };
                assert_eq!(got, want, "{c}");
            }
        };
        let run = RunRow::read(&conn, 100).unwrap();
        check(serde_json::to_value(&run).unwrap(), RunRow::FIELDS);
        let accounts = AccountRow::read_all(&conn, 1, Only::All).unwrap();
        let json = serde_json::to_value(&accounts[0]).unwrap();
        assert!(accounts[0].dirty && json.get("dirty").is_none(), "{json}");
        check(json, AccountRow::COLUMNS);
    }

    /// The CSV's and JSON's columns are a documented interface (docs/audit-trail.md, "Reports"):
    /// pinned here, so that a field added, renamed or moved fails a test before it fails a reader.
    #[test]
    fn the_columns_are_the_documented_ones() {
        // Both views count an account's orders under the same names, in the same order.
        let counts = [
            "open_before",
            "cancelled",
            "rejected",
            "open_after",
            "unexplained",
            "unverified",
            "late",
        ];
        let account = [
            &["account", "status", "failure", "attempts"][..],
            &counts,
            &["verified", "clean", "last_error"],
        ];
        assert_eq!(AccountRow::COLUMNS, account.concat());
        let run = [
            &[
                "run_id",
                "group_name",
                "started_at",
                "ended_at",
                "duration_ms",
            ][..],
            &[
                "status",
                "stop_reason",
                "base_url",
                "key_fingerprint",
                "accounts",
            ],
            &["accounts_skipped", "accounts_clean", "accounts_dirty"],
            &["accounts_without_snapshot", "accounts_unverified"],
            &counts,
            &["clean"],
        ];
        assert_eq!(RunRow::FIELDS, run.concat());
    }
}
