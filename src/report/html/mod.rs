//! `report --format html`: one self-contained page an auditor opens in a browser.
//!
//! Everything is inline (CSS in a `<style>` element, the chart as inline SVG); there is no
//! script, no font, no image and no link to fetch, and a Content-Security-Policy meta element
//! forbids the browser from loading any. Every number comes from the reconciliation views (or,
//! for the chart, from `attempts` as recorded); what the database does not know reads `—`, never
//! 0. Every piece of text from outside (account names, errors, stop reasons, URLs) is escaped.
//!
//! - this file: the page's markup, section by section ([`render`]).
//! - `reads`: what the page reads beyond the reconciliation rows (processes, open orders).
//! - `chart`: the requests-over-time chart, its buckets' maths and its SVG.
//! - `flat_chart`: accounts cancelled and proven flat over time, against the rate's bound.
//! - `verdict`: the run's verdict in words.
//! - `format`: how values read on the page (HTML escaping, grouped numbers, durations).
//! - `style`: the inline stylesheet.

use std::fmt::Write as _;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use super::rows::{Only, account_rows_with, field, process_alive, run_row, text};

mod chart;
mod flat_chart;
mod format;
mod reads;
mod style;
mod verdict;

use chart::{FAILED, LIMITED, NO_REPLY, chart};
use format::{Esc, grouped, human_ms, int, opt_text};
use reads::{MAX_ORDERS, OPEN_OUTCOMES, invocations, open_orders};
use style::STYLE;
use verdict::{Tone, verdict};

/// The columns of `account_reconciliation` the page shows: the JSON report's, then `dirty`.
const ACCOUNT_COLUMNS: &[&str] = &[
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
    "dirty",
];

/// A cell for a count: right-aligned, `—` when unknown (with why, on hover).
fn count_cell(out: &mut String, v: &Value, unknown_why: &str) {
    match v {
        Value::Integer(i) => {
            let _ = write!(
                out,
                "<td class=\"n\" data-value=\"{i}\">{}</td>",
                grouped(*i)
            );
        }
        Value::Null => {
            let _ = write!(
                out,
                "<td class=\"n unknown\" data-value=\"\" title=\"{}\">—</td>",
                Esc(unknown_why)
            );
        }
        other => {
            let _ = write!(out, "<td class=\"n\">{}</td>", Esc(&text(other)));
        }
    }
}

fn text_cell(out: &mut String, v: Option<&str>, class: &str) {
    match v {
        Some(t) => {
            let _ = write!(out, "<td class=\"{class}\">{}</td>", Esc(t));
        }
        None => {
            let _ = write!(out, "<td class=\"{class} unknown\">—</td>");
        }
    }
}

fn yes_no_cell(out: &mut String, v: &Value, unknown_why: &str) {
    match v {
        Value::Integer(0) => out.push_str("<td data-value=\"0\">no</td>"),
        Value::Integer(_) => out.push_str("<td data-value=\"1\">yes</td>"),
        _ => {
            let _ = write!(
                out,
                "<td class=\"unknown\" data-value=\"\" title=\"{}\">—</td>",
                Esc(unknown_why)
            );
        }
    }
}

/// A key-value row of the header or the totals; `id` lets tests and readers find it.
fn kv(out: &mut String, id: &str, label: &str, value: &str, data: Option<i64>) {
    let data = data.map_or(String::new(), |d| format!(" data-value=\"{d}\""));
    let _ = write!(
        out,
        "<tr id=\"{id}\"><th scope=\"row\">{}</th><td{data}>{}</td></tr>",
        Esc(label),
        Esc(value)
    );
}

/// The page for one run.
pub fn render(conn: &Connection, run_id: i64, only: Only) -> rusqlite::Result<String> {
    let run = run_row(conn, run_id)?;
    let tool_version: Option<String> = conn
        .query_row(
            "SELECT tool_version FROM runs WHERE run_id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .optional()?;
    let invocations = invocations(conn, run_id)?;
    let accounts = account_rows_with(conn, ACCOUNT_COLUMNS, run_id, only)?;
    let (orders, orders_total) = open_orders(conn, run_id)?;
    let unstorable: i64 = conn.query_row(
        "SELECT count(*) FROM unstorable_order_ids WHERE run_id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    let duration_ms = int(field(&run, "duration_ms"));
    let chart = chart(conn, run_id, duration_ms, &invocations)?;
    let flat = flat_chart::flat_chart(conn, run_id, invocations.first().and_then(|i| i.rate))?;
    let totals = crate::store::run_totals(conn, run_id)?;
    let generated: String =
        conn.query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| {
            r.get(0)
        })?;

    let n = |c: &str| int(field(&run, c)).unwrap_or(0);
    let group = text(field(&run, "group_name"));
    let status = text(field(&run, "status"));
    let mut out = String::with_capacity(64 * 1024 + orders.len() * 256 + accounts.len() * 400);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"generator\" content=\"gemini-sweep {}\">\
         <title>gemini-sweep run {run_id} ({}): {}</title><style>{STYLE}</style></head><body>\n",
        env!("CARGO_PKG_VERSION"),
        Esc(&group),
        Esc(&status),
    );
    let _ = writeln!(
        out,
        "<h1>gemini-sweep run {run_id}: group {}</h1>\
         <p class=\"sub\">Audit report generated {} (UTC) from the reconciliation views of the run's database. \
         — means unknown (nothing was observed), never zero.</p>",
        Esc(&group),
        Esc(&generated),
    );

    // The verdict.
    let (tone, line) = verdict(&run);
    let tone = match tone {
        Tone::Good => "good",
        Tone::Bad => "bad",
        Tone::Warn => "warn",
    };
    let _ = writeln!(
        out,
        "<p id=\"verdict\" class=\"verdict {tone}\">{}</p>",
        Esc(&line)
    );

    // 1. The run.
    out.push_str("<h2>Run</h2><table class=\"kv\" id=\"run\"><tbody>");
    kv(&mut out, "run-id", "Run", &run_id.to_string(), Some(run_id));
    kv(&mut out, "run-group", "Group", &group, None);
    kv(
        &mut out,
        "run-started",
        "Started (UTC)",
        &text(field(&run, "started_at")),
        None,
    );
    kv(
        &mut out,
        "run-ended",
        "Ended (UTC)",
        &opt_text(field(&run, "ended_at")).unwrap_or_else(|| "— (not ended)".into()),
        None,
    );
    kv(
        &mut out,
        "run-duration",
        "Duration",
        &duration_ms.map_or("—".into(), human_ms),
        duration_ms,
    );
    kv(&mut out, "run-status", "Status", &status, None);
    kv(
        &mut out,
        "run-time-to-flat",
        "Flat after (the last accepted cancel-all answered)",
        &totals
            .time_to_flat_ms
            .map_or_else(|| "— (some account was never cancelled)".into(), human_ms),
        totals.time_to_flat_ms,
    );
    kv(
        &mut out,
        "run-time-to-proven-flat",
        "Proven flat after (the last account's proof answered)",
        &totals
            .time_to_proven_flat_ms
            .map_or_else(|| "— (some account is not proven flat)".into(), human_ms),
        totals.time_to_proven_flat_ms,
    );
    kv(
        &mut out,
        "run-stop-reason",
        "Stop reason",
        &opt_text(field(&run, "stop_reason")).unwrap_or_else(|| "none".into()),
        None,
    );
    kv(
        &mut out,
        "run-base-url",
        "Base URL",
        &text(field(&run, "base_url")),
        None,
    );
    kv(
        &mut out,
        "run-key",
        "API key fingerprint",
        &text(field(&run, "key_fingerprint")),
        None,
    );
    if let Some(v) = &tool_version {
        kv(
            &mut out,
            "run-tool-version",
            "gemini-sweep version",
            v,
            None,
        );
    }
    out.push_str("</tbody></table>\n");

    out.push_str(
        "<h3>Invocations</h3><p class=\"note\">Every process that worked on the run: the one that started it and each <code>run --resume</code>.</p>\
         <table id=\"invocations\"><thead><tr><th>#</th><th>kind</th><th>started (UTC)</th><th>ended (UTC)</th>\
         <th>pid</th><th>status</th><th>exit code</th><th>accounts</th><th>--rate</th><th>base URL</th><th>version</th><th>stop reason</th></tr></thead><tbody>",
    );
    for inv in &invocations {
        let status = if inv.status == "running" && !process_alive(inv.pid) {
            format!("running (process {} is gone: died)", inv.pid)
        } else {
            inv.status.clone()
        };
        let _ = write!(
            out,
            "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"mono\">{}</td>",
            inv.id,
            Esc(&inv.kind),
            Esc(&inv.started_at)
        );
        text_cell(&mut out, inv.ended_at.as_deref(), "mono");
        let _ = write!(
            out,
            "<td class=\"n\">{}</td><td>{}</td>",
            inv.pid,
            Esc(&status)
        );
        count_cell(
            &mut out,
            &inv.exit_code.map_or(Value::Null, Value::Integer),
            "no exit code recorded (still running, or the process died)",
        );
        let _ = write!(out, "<td class=\"n\">{}</td>", grouped(inv.accounts));
        text_cell(&mut out, inv.rate.map(|r| format!("{r}/s")).as_deref(), "n");
        text_cell(&mut out, Some(&inv.base_url), "mono");
        text_cell(&mut out, Some(&inv.tool_version), "");
        text_cell(&mut out, inv.stop_reason.as_deref(), "err");
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");

    // 2. Totals.
    let enabled = n("accounts") - n("accounts_skipped");
    // A total over accounts some of which were never listed is a lower bound.
    let bound = |total: &str, missing: &str, never: &str| -> (String, Option<i64>) {
        let (t, m) = (n(total), n(missing));
        if m == 0 {
            (grouped(t), Some(t))
        } else if m >= enabled {
            (format!("unknown (no account was {never})"), None)
        } else {
            (
                format!(
                    "{}+ ({} account{} never {never})",
                    grouped(t),
                    grouped(m),
                    if m == 1 { "" } else { "s" }
                ),
                None,
            )
        }
    };
    out.push_str("<h2>Totals</h2><table class=\"kv\" id=\"totals\"><tbody>");
    let plain = |out: &mut String, id: &str, label: &str, c: &str| {
        kv(out, id, label, &grouped(n(c)), Some(n(c)));
    };
    plain(
        &mut out,
        "total-accounts",
        "Accounts in the run",
        "accounts",
    );
    plain(
        &mut out,
        "total-accounts-skipped",
        "Accounts skipped (enabled=false)",
        "accounts_skipped",
    );
    plain(
        &mut out,
        "total-accounts-clean",
        "Accounts verified flat",
        "accounts_clean",
    );
    plain(
        &mut out,
        "total-accounts-dirty",
        "Accounts not verified flat (dirty)",
        "accounts_dirty",
    );
    plain(
        &mut out,
        "total-accounts-without-snapshot",
        "Accounts never listed before the cancel-all",
        "accounts_without_snapshot",
    );
    plain(
        &mut out,
        "total-accounts-unverified",
        "Accounts not listed after their last cancel-all",
        "accounts_unverified",
    );
    let (v, d) = bound(
        "open_before",
        "accounts_without_snapshot",
        "listed before the cancel-all",
    );
    kv(
        &mut out,
        "total-open-before",
        "Orders open before the sweep",
        &v,
        d,
    );
    plain(&mut out, "total-cancelled", "Orders cancelled", "cancelled");
    plain(
        &mut out,
        "total-rejected",
        "Orders that refused cancellation (never cancelled later)",
        "rejected",
    );
    let (v, d) = bound(
        "open_after",
        "accounts_unverified",
        "listed after its last cancel-all",
    );
    kv(
        &mut out,
        "total-open-after",
        "Orders open after the sweep (verified listing)",
        &v,
        d,
    );
    plain(
        &mut out,
        "total-unverified",
        "Orders unverified (no listing since the last cancel-all: possibly still open)",
        "unverified",
    );
    plain(
        &mut out,
        "total-unexplained",
        "Orders unexplained (listed before; neither cancelled, rejected nor open after)",
        "unexplained",
    );
    plain(
        &mut out,
        "total-late",
        "Orders placed during the sweep (late)",
        "late",
    );
    let clean = match int(field(&run, "clean")) {
        Some(1) => "yes: every account verified flat",
        Some(_) => "no: some account is not verified flat",
        None => "unknown (still running, or swept without verification)",
    };
    kv(
        &mut out,
        "total-clean",
        "Clean",
        clean,
        int(field(&run, "clean")),
    );
    let (requests, limited, failed, no_reply) = chart.buckets.iter().fold((0, 0, 0, 0), |t, b| {
        (
            t.0 + b.iter().sum::<u64>(),
            t.1 + b[LIMITED],
            t.2 + b[FAILED],
            t.3 + b[NO_REPLY],
        )
    });
    kv(
        &mut out,
        "total-requests",
        "Requests sent",
        &format!(
            "{} ({} refused with 429, {} other failures, {} never answered)",
            grouped(requests as i64),
            grouped(limited as i64),
            grouped(failed as i64),
            grouped(no_reply as i64)
        ),
        Some(requests as i64),
    );
    out.push_str("</tbody></table>\n");

    // 3. Accounts.
    let only_note = match only {
        Only::All => "every account of the run",
        Only::Failed => {
            "only accounts that failed, were interrupted, not attempted or never finished (--only failed)"
        }
        Only::Dirty => "only accounts not verified flat (--only dirty)",
    };
    let _ = write!(
        out,
        "<h2>Accounts</h2><p class=\"note\">{}, in the accounts file's order; rows not verified flat are highlighted. \
         <b>before</b>: open in the listing before the cancel-all; <b>open after</b>: open in a listing taken after the last cancel-all; \
         <b>unverified</b>: listed before, neither cancelled nor rejected, and no listing since the last cancel-all (possibly still open).</p>\
         <table id=\"accounts\"><thead><tr><th>account</th><th>verdict</th><th>status</th><th>failure</th><th>attempts</th>\
         <th>before</th><th>cancelled</th><th>rejected</th><th>open after</th><th>unexplained</th><th>unverified</th><th>late</th>\
         <th>verified</th><th>clean</th><th>last error</th></tr></thead><tbody>",
        Esc(&format!(
            "{} account{}: {only_note}",
            grouped(accounts.len() as i64),
            if accounts.len() == 1 { "" } else { "s" }
        )),
    );
    for a in &accounts {
        let dirty = matches!(field(a, "dirty"), Value::Integer(d) if *d != 0);
        let status = text(field(a, "status"));
        let verdict = if dirty {
            "dirty"
        } else if status == "skipped" {
            "skipped"
        } else if int(field(a, "clean")) == Some(1) {
            "flat"
        } else {
            "not verified"
        };
        let _ = write!(
            out,
            "<tr{} data-account=\"{}\"><td class=\"mono\">{}</td><td class=\"verdict-cell\">{verdict}</td><td>{}</td>",
            if dirty { " class=\"dirty\"" } else { "" },
            Esc(&text(field(a, "account"))),
            Esc(&text(field(a, "account"))),
            Esc(&status),
        );
        text_cell(&mut out, opt_text(field(a, "failure")).as_deref(), "");
        count_cell(&mut out, field(a, "attempts"), "");
        count_cell(
            &mut out,
            field(a, "open_before"),
            "unknown: the account was never listed before the cancel-all",
        );
        for c in ["cancelled", "rejected"] {
            count_cell(&mut out, field(a, c), "");
        }
        count_cell(
            &mut out,
            field(a, "open_after"),
            "unknown: no listing was taken after the last cancel-all",
        );
        for c in ["unexplained", "unverified", "late"] {
            count_cell(&mut out, field(a, c), "");
        }
        yes_no_cell(&mut out, field(a, "verified"), "");
        yes_no_cell(
            &mut out,
            field(a, "clean"),
            "unknown: skipped, never verified, or swept with --no-verify",
        );
        match opt_text(field(a, "last_error")) {
            Some(e) => {
                let _ = write!(out, "<td class=\"err\">{}</td>", Esc(&e));
            }
            None => out.push_str("<td class=\"err\"></td>"),
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");

    // 4. Orders that may still be open.
    let _ = write!(
        out,
        "<h2>Orders that may still be open</h2><p class=\"note\" id=\"orders-count\" data-value=\"{orders_total}\">{} order{} of this run \
         {} <b>still_open</b> (open in the listing after the last cancel-all), <b>unverified</b> (no listing since the last cancel-all \
         says what became of it) or <b>rejected</b> (refused cancellation, never cancelled).</p>",
        grouped(orders_total as i64),
        if orders_total == 1 { "" } else { "s" },
        if orders_total == 1 { "is" } else { "are" },
    );
    if n("accounts_without_snapshot") > 0 {
        let _ = write!(
            out,
            "<p class=\"note\" id=\"orders-never-listed\"><b>{} account{} never listed</b>: any order open there is not in this list, \
             because the run never saw it.</p>",
            grouped(n("accounts_without_snapshot")),
            if n("accounts_without_snapshot") == 1 {
                " was"
            } else {
                "s were"
            },
        );
    }
    if unstorable > 0 {
        let _ = write!(
            out,
            "<p class=\"note\">{} order id{} above 2^63-1 {} kept as text in the table <code>unstorable_order_ids</code> and not listed here.</p>",
            grouped(unstorable),
            if unstorable == 1 { "" } else { "s" },
            if unstorable == 1 { "is" } else { "are" },
        );
    }
    if !orders.is_empty() {
        out.push_str(
            "<table id=\"orders\"><thead><tr><th>account</th><th>order id</th><th>outcome</th><th>in snapshot</th>\
             <th>symbol</th><th>side</th><th>price</th><th>remaining</th></tr></thead><tbody>",
        );
        for o in &orders {
            let _ = write!(
                out,
                "<tr class=\"{}\"><td class=\"mono\">{}</td><td class=\"n mono\">{}</td><td>{}</td><td>{}</td>",
                Esc(&o.outcome),
                Esc(&o.account),
                o.order_id,
                Esc(&o.outcome),
                if o.in_snapshot { "yes" } else { "no" },
            );
            text_cell(&mut out, o.symbol.as_deref(), "");
            text_cell(&mut out, o.side.as_deref(), "");
            text_cell(&mut out, o.price.as_deref(), "n");
            text_cell(&mut out, o.remaining.as_deref(), "n");
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>\n");
    }
    let more = orders_total.saturating_sub(orders.len() as u64);
    if more > 0 {
        let _ = writeln!(
            out,
            "<p class=\"note\" id=\"orders-more\" data-value=\"{more}\"><b>… and {} more</b> not listed here (the page lists the first {}). \
             All of them: <code>SELECT account, order_id, outcome FROM order_reconciliation WHERE run_id = {run_id} AND outcome IN {OPEN_OUTCOMES}</code></p>",
            grouped(more as i64),
            grouped(MAX_ORDERS as i64),
        );
    }

    // 5. Requests over time.
    let _ = write!(
        out,
        "<h2>Requests over time</h2><p class=\"note\" id=\"chart-note\">{} request{} in {} s buckets: each bar is the requests sent in its bucket \
         divided by the bucket's length (the last bucket may be partly empty). The dashed line is the configured <code>--rate</code> \
         of each invocation over the time it ran{}. Hover a bar for its counts.</p>",
        grouped(chart.requests as i64),
        if chart.requests == 1 { "" } else { "s" },
        chart.bucket_s,
        if chart.rates.is_empty() {
            " (not recorded for this run)"
        } else {
            ""
        },
    );
    chart.svg(&mut out);
    out.push_str(
        "<ul class=\"legend\"><li><span class=\"swatch ok\"></span>answered</li>\
         <li><span class=\"swatch limited\"></span>refused with 429 (rate limited)</li>\
         <li><span class=\"swatch failed\"></span>other failures</li>\
         <li><span class=\"swatch noreply\"></span>never answered (in flight or abandoned)</li>\
         <li><span class=\"swatch rate\"></span>configured --rate</li></ul>\n",
    );

    // 6. Flat over time.
    let _ = write!(
        out,
        "<h2>Flat over time</h2><p class=\"note\" id=\"flat-chart-note\">Of {} accounts: when each was cancelled \
         (its first accepted cancel-all answered; {} so far) and proven flat (the listing after its last cancel-all answered, \
         nothing open; {} so far). {}</p>",
        grouped(flat.accounts as i64),
        grouped(flat.cancelled.len() as i64),
        grouped(flat.proven.len() as i64),
        match (flat.bound_s(), flat.rate) {
            (Some(bound), Some(rate)) => format!(
                "The solid line is the bound at --rate {rate}/s: one cancel-all per account, all done after {bound:.1} s; \
                 the dashed one, a proof per account after them, {:.1} s.",
                2.0 * bound
            ),
            _ => "No --rate was recorded for this run, so no bound is drawn.".into(),
        },
    );
    flat.svg(&mut out);
    out.push_str(
        "<ul class=\"legend\"><li><span class=\"swatch line cancelled\"></span>accounts cancelled</li>\
         <li><span class=\"swatch line proven\"></span>accounts proven flat</li>\
         <li><span class=\"swatch line bound\"></span>bound: cancels at --rate</li>\
         <li><span class=\"swatch line bound proof\"></span>bound: cancels, then proofs</li></ul>\n",
    );
    out.push_str("</body></html>\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::chart::{MAX_BUCKETS, bucket_width, nice_step, tick_label};
    use super::*;

    #[test]
    fn text_is_escaped_for_content_and_attributes() {
        assert_eq!(
            Esc("<script>alert('x&y')</script> \"q\"").to_string(),
            "&lt;script&gt;alert(&#39;x&amp;y&#39;)&lt;/script&gt; &quot;q&quot;"
        );
        assert_eq!(Esc("acct-0001").to_string(), "acct-0001");
        assert_eq!(Esc("é—ü").to_string(), "é—ü");
    }

    #[test]
    fn the_html_columns_are_the_json_reports_and_dirty() {
        assert_eq!(
            &ACCOUNT_COLUMNS[..ACCOUNT_COLUMNS.len() - 1],
            super::super::ACCOUNT_COLUMNS
        );
        assert_eq!(ACCOUNT_COLUMNS.last(), Some(&"dirty"));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(-1234), "-1,234");
        assert_eq!(human_ms(6_200), "6.2 s");
        assert_eq!(human_ms(245_000), "4 min 05 s");
        assert_eq!(human_ms(7_385_000), "2 h 03 min 05 s");
    }

    #[test]
    fn buckets_adapt_to_the_runs_length() {
        // One request, or a fraction of a second at a high rate: the smallest bucket allowed.
        assert_eq!(bucket_width(0.0, 1.0), 1.0);
        assert_eq!(bucket_width(0.3, 0.01), 0.01);
        // Never more than MAX_BUCKETS bars.
        for span in [
            0.5,
            3.0,
            59.0,
            600.0,
            3600.0,
            86_400.0,
            30.0 * 86_400.0,
            1e9,
        ] {
            for min in [0.01, 1.0, 50.0] {
                let w = bucket_width(span, min);
                assert!(w >= min, "{span} {min} {w}");
                assert!(((span / w).floor() as usize) < MAX_BUCKETS, "{span} {w}");
            }
        }
        assert_eq!(bucket_width(f64::NAN, 1.0), 1.0);
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(420.0), 500.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(2500.0, 500.0), "2,500");
    }
}
