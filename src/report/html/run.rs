//! The run's sections: its header (ids, times, status, where it sent), the processes that
//! worked on it, and its totals.

use maud::{Markup, html};

use super::chart::{Chart, FAILED, LIMITED, NO_REPLY};
use super::format::{count_cell, grouped, human_ms, kv, plural, text_cell};
use super::reads::Invocation;
use crate::report::rows::{RunRow, process_alive};
use crate::report::text::OutsideText;
use crate::store::{RunStatus, RunTotals};

pub(super) fn run_section(
    run: &RunRow,
    totals: &RunTotals,
    tool_version: Option<&OutsideText>,
) -> Markup {
    let text_or = |t: Option<&OutsideText>, none: &str| match t {
        Some(t) => html! { (t) },
        None => html! { (none) },
    };
    let after = |ms: Option<i64>, none: &str| ms.map_or_else(|| none.to_owned(), human_ms);
    html! {
        h2 { "Run" }
        table.kv #run { tbody {
            (kv("run-id", "Run", run.run_id, Some(run.run_id)))
            (kv("run-group", "Group", &run.group_name, None))
            (kv("run-started", "Started (UTC)", &run.started_at, None))
            (kv("run-ended", "Ended (UTC)", text_or(run.ended_at.as_ref(), "— (not ended)"),
                None))
            (kv("run-duration", "Duration", after(run.duration_ms, "—"), run.duration_ms))
            (kv("run-status", "Status", run.status.as_str(), None))
            (kv(
                "run-time-to-flat",
                "Flat after (the last accepted cancel-all answered)",
                after(totals.time_to_flat_ms, "— (some account was never cancelled)"),
                totals.time_to_flat_ms,
            ))
            (kv(
                "run-time-to-proven-flat",
                "Proven flat after (the last account's proof answered)",
                after(totals.time_to_proven_flat_ms, "— (some account is not proven flat)"),
                totals.time_to_proven_flat_ms,
            ))
            (kv("run-stop-reason", "Stop reason", text_or(run.stop_reason.as_ref(), "none"), None))
            (kv("run-base-url", "Base URL", &run.base_url, None))
            (kv("run-key", "API key fingerprint", &run.key_fingerprint, None))
            @if let Some(v) = tool_version {
                (kv("run-tool-version", "gemini-sweep version", v, None))
            }
        } }
    }
}

pub(super) fn invocations_section(invocations: &[Invocation]) -> Markup {
    html! {
        h3 { "Invocations" }
        p.note {
            "Every process that worked on the run: the one that started it and each "
            code { "run --resume" } "."
        }
        table #invocations {
            thead { tr {
                @for h in ["#", "kind", "started (UTC)", "ended (UTC)", "pid", "status",
                           "exit code", "accounts", "--rate", "base URL", "version",
                           "stop reason"] {
                    th { (h) }
                }
            } }
            tbody { @for inv in invocations { (invocation_row(inv)) } }
        }
    }
}

const NO_EXIT_CODE: &str = "no exit code recorded (still running, or the process died)";

fn invocation_row(inv: &Invocation) -> Markup {
    // The process table says what the database cannot: a process still marked running is gone.
    let gone = inv.status == RunStatus::Running && !process_alive(inv.pid);
    html! {
        tr {
            td.n { (inv.id) }
            td { (inv.kind.as_str()) }
            td.mono { (inv.started_at) }
            (text_cell(inv.ended_at.as_ref(), "mono"))
            td.n { (inv.pid) }
            td {
                (inv.status.as_str())
                @if gone { " (process " (inv.pid) " is gone: died)" }
            }
            (count_cell(inv.exit_code, NO_EXIT_CODE))
            td.n { (grouped(inv.accounts)) }
            (text_cell(inv.rate.map(|r| format!("{r}/s")), "n"))
            (text_cell(Some(&inv.base_url), "mono"))
            (text_cell(Some(&inv.tool_version), ""))
            (text_cell(inv.stop_reason.as_ref(), "err"))
        }
    }
}

pub(super) fn totals_section(run: &RunRow, chart: &Chart) -> Markup {
    let plain = |id: &str, label: &str, n: i64| kv(id, label, grouped(n), Some(n));
    html! {
        h2 { "Totals" }
        table.kv #totals { tbody {
            (plain("total-accounts", "Accounts in the run", run.accounts))
            (plain("total-accounts-skipped", "Accounts skipped (enabled=false)",
                   run.accounts_skipped))
            (plain("total-accounts-clean", "Accounts verified flat", run.accounts_clean))
            (plain("total-accounts-dirty", "Accounts not verified flat (dirty)",
                   run.accounts_dirty))
            (plain("total-accounts-without-snapshot",
                   "Accounts never listed before the cancel-all", run.accounts_without_snapshot))
            (plain("total-accounts-unverified",
                   "Accounts not listed after their last cancel-all", run.accounts_unverified))
            (bounded("total-open-before", "Orders open before the sweep", run, run.open_before,
                     run.accounts_without_snapshot, "listed before the cancel-all"))
            (plain("total-cancelled", "Orders cancelled", run.cancelled))
            (plain("total-rejected", "Orders that refused cancellation (never cancelled later)",
                   run.rejected))
            (bounded("total-open-after", "Orders open after the sweep (verified listing)", run,
                     run.open_after, run.accounts_unverified, "listed after its last cancel-all"))
            (plain("total-unverified", "Orders unverified (no listing since the last \
                    cancel-all: possibly still open)", run.unverified))
            (plain("total-unexplained", "Orders unexplained (listed before; neither \
                    cancelled, rejected nor open after)", run.unexplained))
            (plain("total-late", "Orders placed during the sweep (late)", run.late))
            (kv("total-clean", "Clean", clean_words(run.clean), run.clean.map(i64::from)))
            (requests_row(chart))
        } }
    }
}

/// A total over accounts some of which were never listed: a lower bound, said so, with no
/// machine value; over none of them, unknown.
fn bounded(id: &str, label: &str, run: &RunRow, total: i64, missing: i64, never: &str) -> Markup {
    if missing == 0 {
        kv(id, label, grouped(total), Some(total))
    } else if missing >= run.enabled() {
        kv(id, label, format!("unknown (no account was {never})"), None)
    } else {
        let bound = format!(
            "{}+ ({} never {never})",
            grouped(total),
            plural(missing, "account", "accounts")
        );
        kv(id, label, bound, None)
    }
}

fn clean_words(clean: Option<bool>) -> &'static str {
    match clean {
        Some(true) => "yes: every account verified flat",
        Some(false) => "no: some account is not verified flat",
        None => "unknown (still running, or swept without verification)",
    }
}

fn requests_row(chart: &Chart) -> Markup {
    let (requests, limited, failed, no_reply) = chart.buckets.iter().fold((0, 0, 0, 0), |t, b| {
        (
            t.0 + b.iter().sum::<u64>(),
            t.1 + b[LIMITED],
            t.2 + b[FAILED],
            t.3 + b[NO_REPLY],
        )
    });
    let n = |v: u64| grouped(v as i64);
    let words = format!(
        "{} ({} refused with 429, {} other failures, {} never answered)",
        n(requests),
        n(limited),
        n(failed),
        n(no_reply)
    );
    kv(
        "total-requests",
        "Requests sent",
        words,
        Some(requests as i64),
    )
}
