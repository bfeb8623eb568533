//! The fixed-width tables a terminal shows: a run's accounts with its total, and the runs list.
//! At most 80 columns: long fields (the last error, URLs) are in the CSV and JSON formats, and
//! what does not fit is clipped with `~`. Outside text is shown with its control characters as
//! escapes.

use super::rows::{AccountRow, RunRow};

/// The widest line a table writes.
const WIDTH: usize = 80;

/// A run's title line, its accounts, its total and why it stopped, if it did.
pub(super) fn run_table(run: &RunRow, accounts: &[AccountRow]) -> String {
    let line = |cells: [&str; 10]| {
        let [a, b, c, d, e, f, g, h, i, j] = cells;
        format!("{a:<15} {b:<13} {c:>6} {d:>6} {e:>5} {f:>5} {g:>5} {h:>5} {i:>5} {j:>4}\n")
    };
    let mut out = title(run);
    out.push_str(&line([
        "ACCOUNT", "STATUS", "BEFORE", "CANCEL", "REJ", "OPEN", "UNVER", "UNEXP", "LATE", "FLAT",
    ]));
    for a in accounts {
        out.push_str(&line([
            &clip(&a.account.shown(), 15),
            a.status.as_str(),
            &count(a.open_before),
            &a.cancelled.to_string(),
            &a.rejected.to_string(),
            &count(a.open_after),
            &a.unverified.to_string(),
            &a.unexplained.to_string(),
            &a.late.to_string(),
            yes_no(a.clean),
        ]));
    }
    // A total over accounts some of which were never listed is a lower bound: marked `+?`.
    let partial = |total: i64, missing: i64| match missing {
        0 => total.to_string(),
        _ => format!("{total}+?"),
    };
    out.push_str(&line([
        &format!("run {} total", run.run_id),
        run.status.as_str(),
        &partial(run.open_before, run.accounts_without_snapshot),
        &run.cancelled.to_string(),
        &run.rejected.to_string(),
        &partial(run.open_after, run.accounts_unverified),
        &run.unverified.to_string(),
        &run.unexplained.to_string(),
        &run.late.to_string(),
        yes_no(run.clean),
    ]));
    if let Some(reason) = &run.stop_reason {
        out.push_str(&format!("stopped: {}\n", reason.shown()));
    }
    out
}

/// What the hold after the sweep did, under a run's table.
pub(super) fn hold_line(hold: &crate::store::HoldTotals) -> String {
    let accounts = match hold.hold_recancelled_accounts.len() {
        0 => String::new(),
        n => format!(
            " on {n} account{} ({})",
            if n == 1 { "" } else { "s" },
            clip(
                &crate::safe_text::escape(&hold.hold_recancelled_accounts.join(", ")),
                40
            )
        ),
    };
    let seen = hold.last_order_seen_at.as_deref().map_or_else(
        || "no order seen".to_owned(),
        |at| format!("last order seen {}", crate::safe_text::escape(at)),
    );
    format!(
        "held {:.1} s: {} cycles, {} re-cancels{accounts}; {seen}\n",
        hold.hold_ms as f64 / 1000.0,
        hold.hold_cycles,
        hold.hold_recancels,
    )
}

/// Orders the history says were cancelled that no reply reported, under a run's table.
pub(super) fn unreported_line(count: i64) -> String {
    format!("{count} cancelled per the order history, in no reply: view unreported_cancels\n")
}

/// Which run and group the table is of: after a job of several groups, one table per group
/// follows another, and nothing else tells them apart.
fn title(run: &RunRow) -> String {
    let head = format!("run {} of group ", run.run_id);
    let tail = format!(", started {}", run.started_at.shown());
    let room = WIDTH.saturating_sub(head.chars().count() + tail.chars().count());
    format!(
        "{head}{}{tail}\n",
        clip(&run.group_name.shown(), room.max(10))
    )
}

/// One line per run, newest first.
pub(super) fn runs_table(rows: &[RunRow]) -> String {
    let line = |cells: [&str; 8]| {
        let [a, b, c, d, e, f, g, h] = cells;
        format!("{a:>5}  {b:<10}  {c:<24}  {d:>8}  {e:<11}  {f:>8}  {g:>5}  {h}\n")
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
    for r in rows {
        let duration = r
            .duration_ms
            .map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        out.push_str(&line([
            &r.run_id.to_string(),
            &clip(&r.group_name.shown(), 10),
            &r.started_at.shown(),
            &duration,
            r.status.as_str(),
            &r.accounts.to_string(),
            &r.accounts_clean.to_string(),
            yes_no(r.clean),
        ]));
    }
    out
}

/// A count: `-` when unknown.
fn count(n: Option<i64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

fn yes_no(flag: Option<bool>) -> &'static str {
    match flag {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

/// At most `width` characters; a clipped text ends in `~`.
pub(super) fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('~');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AccountStatus, RunStatus};

    fn run() -> RunRow {
        RunRow {
            run_id: 7,
            group_name: "desk-b".into(),
            started_at: "2026-11-23T21:40:02.118Z".into(),
            ended_at: None,
            duration_ms: Some(6_200),
            status: RunStatus::Incomplete,
            stop_reason: None,
            base_url: "http://127.0.0.1:1".into(),
            key_fingerprint: "master:0123456789abcdef".into(),
            accounts: 99_999,
            accounts_skipped: 0,
            accounts_clean: 99_999,
            accounts_dirty: 0,
            accounts_without_snapshot: 1,
            accounts_unverified: 0,
            open_before: 99_999,
            cancelled: 99_999,
            rejected: 99_999,
            open_after: 99_999,
            unexplained: 99_999,
            unverified: 99_999,
            late: 99_999,
            clean: Some(false),
        }
    }

    #[test]
    fn the_table_fits_80_columns_names_the_group_and_shows_unknown_as_unknown() {
        let account = AccountRow {
            account: "a-very-long-account-nickname".into(),
            status: AccountStatus::NotAttempted,
            failure: None,
            attempts: 99_999,
            open_before: None,
            cancelled: 99_999,
            rejected: 99_999,
            open_after: None,
            unexplained: 99_999,
            unverified: 99_999,
            late: 99_999,
            verified: false,
            clean: None,
            last_error: None,
            dirty: true,
        };
        let mut long = run();
        long.group_name = "g".repeat(64).as_str().into();
        for run in [run(), long] {
            let out = run_table(&run, std::slice::from_ref(&account));
            for line in out.lines() {
                assert!(line.chars().count() <= WIDTH, "{line:?}");
            }
            let title = out.lines().next().unwrap();
            assert!(title.starts_with("run 7 of group "), "{title}");
            let row = out.lines().nth(2).unwrap();
            assert!(row.contains("not_attempted"), "{row}");
            assert_eq!(row.split_whitespace().nth(2), Some("-"), "{row}");
            let total = out.lines().nth(3).unwrap();
            assert!(total.contains("99999+?"), "{total}");
        }
        assert!(
            run_table(&run(), &[])
                .starts_with("run 7 of group desk-b, started 2026-11-23T21:40:02.118Z\nACCOUNT")
        );
    }

    #[test]
    fn outside_text_is_shown_not_obeyed() {
        let mut run = run();
        run.group_name = "\u{1b}[2Jdesk".into();
        run.stop_reason = Some("bad\r\nFAKE".into());
        let out = run_table(&run, &[]) + &runs_table(&[run]);
        assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out}");
        assert!(out.contains("stopped: bad\\r\\nFAKE"), "{out}");
    }
}
