//! `report --format html`: one self-contained page an auditor opens in a browser.
//!
//! Everything is inline (CSS in a `<style>` element, the chart as inline SVG); there is no
//! script, no font, no image and no link to fetch, and a Content-Security-Policy meta element
//! forbids the browser from loading any. Every number comes from the reconciliation views (or,
//! for the chart, from `attempts` as recorded); what the database does not know reads `—`, never
//! 0. Every piece of text from outside (account names, errors, stop reasons, URLs) is escaped.

use std::fmt::{self, Display, Write as _};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use super::{Only, Row, account_rows_with, field, process_alive, run_row, text};

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

/// At most this many orders are listed; a line says how many more there are.
pub const MAX_ORDERS: usize = 10_000;

/// The chart has at most this many bars, whatever the run's length.
const MAX_BUCKETS: usize = 240;

/// The outcomes of `order_reconciliation` that mean an order may still be open.
const OPEN_OUTCOMES: &str = "('still_open', 'unverified', 'rejected')";

/// Text escaped for HTML element content and quoted attribute values, its control characters
/// and bidirectional overrides first shown as visible escapes ([`crate::safe_text::escape`]): an
/// override in an account's name would otherwise turn the rest of its cell, or row, backwards.
struct Esc<'a>(&'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = crate::safe_text::escape(self.0);
        let mut rest: &str = &shown;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// An integer with thousands separators: 1234567 → "1,234,567".
fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        _ => None,
    }
}

fn opt_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        other => Some(text(other)),
    }
}

/// "6.2 s", "4 min 05 s", "2 h 03 min 05 s": whole seconds from a minute on.
fn human_ms(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        return format!("{s:.1} s");
    }
    let total = (ms / 1000).max(0);
    let (h, m, sec) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        format!("{h} h {m:02} min {sec:02} s")
    } else {
        format!("{m} min {sec:02} s")
    }
}

/// One process that worked on the run.
struct Invocation {
    id: i64,
    kind: String,
    started_at: String,
    ended_at: Option<String>,
    pid: i64,
    status: String,
    exit_code: Option<i64>,
    base_url: String,
    tool_version: String,
    accounts: i64,
    stop_reason: Option<String>,
    /// `rate` from its options JSON (requests per second), when recorded.
    rate: Option<f64>,
    /// Its start and end in seconds since the run started.
    start_s: Option<f64>,
    end_s: Option<f64>,
}

fn invocations(conn: &Connection, run_id: i64) -> rusqlite::Result<Vec<Invocation>> {
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
struct OpenOrder {
    account: String,
    order_id: i64,
    outcome: String,
    in_snapshot: bool,
    symbol: Option<String>,
    side: Option<String>,
    price: Option<String>,
    remaining: Option<String>,
}

/// The first [`MAX_ORDERS`] orders still open, unverified or rejected, and how many there are.
fn open_orders(conn: &Connection, run_id: i64) -> rusqlite::Result<(Vec<OpenOrder>, u64)> {
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

/// Requests over time, bucketed.
struct Chart {
    requests: u64,
    /// Seconds per bucket.
    bucket_s: f64,
    /// Per bucket: answered ok, refused with 429, other failures, never answered.
    buckets: Vec<[u64; 4]>,
    /// Per invocation with a known rate: (start s, end s, requests per second).
    rates: Vec<(f64, f64, f64)>,
}

const OK: usize = 0;
const LIMITED: usize = 1;
const FAILED: usize = 2;
const NO_REPLY: usize = 3;

/// The smallest bucket that keeps the chart within [`MAX_BUCKETS`] bars over `span_s` seconds
/// and is at least `min_s` long.
fn bucket_width(span_s: f64, min_s: f64) -> f64 {
    const STEPS: &[f64] = &[
        0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0,
        600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 21600.0, 43200.0, 86400.0,
    ];
    let span_s = if span_s.is_finite() {
        span_s.max(0.0)
    } else {
        0.0
    };
    let fits = |w: f64| (span_s / w).floor() + 1.0 <= MAX_BUCKETS as f64;
    if let Some(&w) = STEPS.iter().find(|&&w| w >= min_s && fits(w)) {
        return w;
    }
    let mut w = 86400.0_f64.max(min_s);
    while !fits(w) {
        w *= 2.0;
    }
    w
}

/// A round step (1, 2 or 5 times a power of ten) near `rough`.
fn nice_step(rough: f64) -> f64 {
    if !(rough.is_finite() && rough > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(rough.log10().floor());
    let m = rough / power;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// A tick label: as many decimals as the step needs, no more.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    let s = format!("{v:.decimals$}");
    if decimals == 0 {
        grouped(v.round() as i64)
    } else {
        s
    }
}

fn chart(
    conn: &Connection,
    run_id: i64,
    duration_ms: Option<i64>,
    invocations: &[Invocation],
) -> rusqlite::Result<Chart> {
    let origin: Option<f64> = conn.query_row(
        "SELECT julianday(started_at) FROM runs WHERE run_id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    let (requests, last_s): (i64, Option<f64>) = conn.query_row(
        "SELECT count(*), (julianday(max(sent_at)) - ?2) * 86400.0 FROM attempts WHERE run_id = ?1",
        rusqlite::params![run_id, origin],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let run_s = duration_ms.map(|ms| ms as f64 / 1000.0);
    let span_s = last_s.into_iter().chain(run_s).fold(0.0, f64::max);
    let top_rate = invocations
        .iter()
        .filter_map(|i| i.rate)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    // A bucket long enough to hold about five requests at the configured rate: shorter ones
    // show the pacer's spacing as noise.
    let min_s = (5.0 / top_rate.unwrap_or(5.0)).max(0.01);
    let bucket_s = bucket_width(span_s, min_s);
    let n = ((span_s / bucket_s).floor() as usize + 1).min(MAX_BUCKETS);
    let mut buckets = vec![[0u64; 4]; n];
    if requests > 0
        && let Some(origin) = origin
    {
        let mut stmt = conn.prepare(
            "SELECT (julianday(sent_at) - ?2) * 86400.0, outcome, http_status
             FROM attempts WHERE run_id = ?1",
        )?;
        let mut rows = stmt.query(rusqlite::params![run_id, origin])?;
        while let Some(r) = rows.next()? {
            let s: Option<f64> = r.get(0)?;
            let outcome: String = r.get(1)?;
            let http: Option<i64> = r.get(2)?;
            let i = ((s.unwrap_or(0.0) / bucket_s).floor().max(0.0) as usize).min(n - 1);
            let kind = match (outcome.as_str(), http) {
                ("ok", _) => OK,
                (_, Some(429)) => LIMITED,
                ("in_flight" | "abandoned", _) => NO_REPLY,
                _ => FAILED,
            };
            buckets[i][kind] += 1;
        }
    }
    let end_all = n as f64 * bucket_s;
    let rates = invocations
        .iter()
        .enumerate()
        .filter_map(|(k, inv)| {
            let rate = inv.rate?;
            let start = inv.start_s.unwrap_or(0.0).clamp(0.0, end_all);
            // Until it ended, or until the next one started, or to the chart's end.
            let next = invocations.get(k + 1).and_then(|i| i.start_s);
            let end = inv.end_s.or(next).unwrap_or(end_all).clamp(start, end_all);
            Some((start, end.max(start), rate))
        })
        .collect();
    Ok(Chart {
        requests: requests.max(0) as u64,
        bucket_s,
        buckets,
        rates,
    })
}

impl Chart {
    fn svg(&self, out: &mut String) {
        const W: f64 = 960.0;
        const H: f64 = 300.0;
        const LEFT: f64 = 70.0;
        const RIGHT: f64 = 20.0;
        const TOP: f64 = 16.0;
        const BOTTOM: f64 = 46.0;
        let plot_w = W - LEFT - RIGHT;
        let plot_h = H - TOP - BOTTOM;
        let n = self.buckets.len().max(1);
        let span = n as f64 * self.bucket_s;
        let per_s = |c: u64| c as f64 / self.bucket_s;
        let peak = self
            .buckets
            .iter()
            .map(|b| per_s(b.iter().sum()))
            .fold(0.0, f64::max);
        let top_rate = self.rates.iter().map(|r| r.2).fold(0.0, f64::max);
        let y_step = nice_step(peak.max(top_rate).max(1.0) * 1.1 / 5.0);
        let y_max = ((peak.max(top_rate).max(1.0) * 1.1) / y_step).ceil() * y_step;
        let x = |s: f64| LEFT + s / span * plot_w;
        let y = |v: f64| TOP + plot_h - v / y_max * plot_h;
        let _ = write!(
            out,
            "<svg id=\"rate-chart\" viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" \
             aria-labelledby=\"rate-chart-title\" preserveAspectRatio=\"xMinYMin meet\">\
             <title id=\"rate-chart-title\">Requests per second ({} s buckets) against the configured rate</title>",
            self.bucket_s
        );
        // Grid and y axis.
        let mut v = 0.0;
        while v <= y_max + y_step / 2.0 {
            let _ = write!(
                out,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
                 <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT + plot_w,
                LEFT - 6.0,
                y(v) + 4.0,
                tick_label(v, y_step),
                yy = y(v),
            );
            v += y_step;
        }
        // x axis: seconds since the run started.
        let x_step = nice_step(span / 8.0);
        let mut t = 0.0;
        while t <= span + x_step / 1000.0 {
            let _ = write!(
                out,
                "<line class=\"axis\" x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\
                 <text class=\"tick\" x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP + plot_h,
                TOP + plot_h + 5.0,
                TOP + plot_h + 18.0,
                tick_label(t, x_step),
                xx = x(t),
            );
            t += x_step;
        }
        let _ = write!(
            out,
            "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{b:.1}\" y2=\"{b:.1}\"/>\
             <line class=\"axis\" x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{b:.1}\"/>\
             <text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since the run started</text>\
             <text class=\"label\" x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.1})\">requests per second</text>",
            LEFT + plot_w,
            LEFT + plot_w / 2.0,
            H - 8.0,
            TOP + plot_h / 2.0,
            TOP + plot_h / 2.0,
            b = TOP + plot_h,
        );
        // Bars: answered, then 429s, failures and unanswered stacked on top.
        let slot = plot_w / n as f64;
        let bar_w = if slot > 3.0 { slot * 0.85 } else { slot };
        for (i, b) in self.buckets.iter().enumerate() {
            let total: u64 = b.iter().sum();
            if total == 0 {
                continue;
            }
            let from = i as f64 * self.bucket_s;
            let _ = write!(
                out,
                "<g class=\"bucket\"><title>{} to {} s: {} requests ({} answered, {} refused with 429, {} failed, {} unanswered)</title>",
                tick_label(from, self.bucket_s),
                tick_label(from + self.bucket_s, self.bucket_s),
                grouped(total as i64),
                grouped(b[OK] as i64),
                grouped(b[LIMITED] as i64),
                grouped(b[FAILED] as i64),
                grouped(b[NO_REPLY] as i64),
            );
            let mut base = 0.0;
            for (kind, class) in [
                (OK, "ok"),
                (LIMITED, "limited"),
                (FAILED, "failed"),
                (NO_REPLY, "noreply"),
            ] {
                if b[kind] == 0 {
                    continue;
                }
                let h = per_s(b[kind]);
                let _ = write!(
                    out,
                    "<rect class=\"{class}\" x=\"{:.2}\" y=\"{:.2}\" width=\"{bar_w:.2}\" height=\"{:.2}\"/>",
                    LEFT + i as f64 * slot,
                    y(base + h),
                    (y(base) - y(base + h)).max(0.5),
                );
                base += h;
            }
            out.push_str("</g>");
        }
        // The configured rate of each invocation, over the time it ran.
        for &(start, end, rate) in &self.rates {
            let (x1, x2) = (x(start), x(end).max(x(start) + 2.0));
            let yy = y(rate);
            let _ = write!(
                out,
                "<line class=\"rate-limit\" data-rate=\"{rate}\" x1=\"{x1:.1}\" x2=\"{x2:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
                 <text class=\"rate-label\" x=\"{:.1}\" y=\"{:.1}\">--rate {rate}/s</text>",
                x1 + 4.0,
                yy - 5.0,
            );
        }
        out.push_str("</svg>");
    }
}

/// How a run's verdict reads: good, bad, or neither.
#[derive(Clone, Copy)]
enum Tone {
    Good,
    Bad,
    Warn,
}

fn verdict(run: &Row) -> (Tone, String) {
    let status = text(field(run, "status"));
    let reason = opt_text(field(run, "stop_reason"));
    let n = |c: &str| int(field(run, c)).unwrap_or(0);
    let because = reason
        .as_deref()
        .map_or(String::new(), |r| format!(" ({r})"));
    let open_detail = format!(
        "{} of {} accounts are not verified flat; {} orders open after the sweep, {} unverified, {} rejected",
        grouped(n("accounts_dirty")),
        grouped(n("accounts") - n("accounts_skipped")),
        grouped(n("open_after")),
        grouped(n("unverified")),
        grouped(n("rejected")),
    );
    match (status.as_str(), int(field(run, "clean"))) {
        ("refused", _) => (
            Tone::Bad,
            format!(
                "The exchange refused the key: {}. The run stopped sending at once; orders may still be open: see below.",
                reason.as_deref().unwrap_or("no reason recorded")
            ),
        ),
        ("running", _) => (
            Tone::Warn,
            "The run is still going: these numbers are a snapshot and will change.".into(),
        ),
        ("died", _) => (
            Tone::Bad,
            format!(
                "The run's process died before it finished: orders may still be open: see below. {open_detail}."
            ),
        ),
        (_, Some(1)) => (Tone::Good, "Every account verified flat.".into()),
        ("interrupted", _) => (
            Tone::Bad,
            format!(
                "The run was interrupted{because}: orders may still be open: see below. {open_detail}."
            ),
        ),
        ("aborted", _) => (
            Tone::Bad,
            format!(
                "The run stopped on an error{because}: orders may still be open: see below. {open_detail}."
            ),
        ),
        (_, Some(_)) => (
            Tone::Bad,
            format!("Orders may still be open: see below. {open_detail}."),
        ),
        (_, None) => (
            Tone::Warn,
            "Not verified: the accounts were swept without listing them afterwards (--no-verify), so nothing proves they are flat.".into(),
        ),
    }
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d1d1f;margin:24px auto;max-width:1200px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#555;margin:0 0 16px}
.verdict{font-size:17px;font-weight:600;padding:12px 16px;border-radius:6px;margin:16px 0}
.verdict.good{background:#e6f4ea;border:1px solid #34a853}.verdict.bad{background:#fce8e6;border:1px solid #d93025}
.verdict.warn{background:#fef7e0;border:1px solid #f9ab00}
table{border-collapse:collapse;margin:4px 0 8px}th,td{padding:3px 8px;border-bottom:1px solid #e5e5e5;text-align:left;vertical-align:top}
thead th{position:sticky;top:0;background:#f5f5f7;border-bottom:1px solid #bbb}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.kv th{font-weight:normal;color:#555;padding-right:16px}
.unknown{color:#888}
tr.dirty td{background:#fce8e6}tr.dirty td.verdict-cell{font-weight:600;color:#b3261e}
td.err{max-width:420px;overflow-wrap:anywhere;font-size:12px;color:#444}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.note{color:#555;font-size:13px}
#rate-chart{max-width:960px;display:block;margin:8px 0}
#rate-chart .grid{stroke:#eee}#rate-chart .axis{stroke:#888}
#rate-chart .tick{font-size:11px;fill:#555}#rate-chart .label{font-size:12px;fill:#333}
.ok{fill:#4e79a7}.limited{fill:#f28e2b}.failed{fill:#d62728}.noreply{fill:#9a9a9a}
#rate-chart .rate-limit{stroke:#111;stroke-width:1.5;stroke-dasharray:6 4}
#rate-chart .rate-label{font-size:11px;fill:#111}
.legend{list-style:none;padding:0;margin:4px 0;display:flex;gap:18px;flex-wrap:wrap;font-size:13px}
.swatch{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px}
.swatch.ok{background:#4e79a7}.swatch.limited{background:#f28e2b}.swatch.failed{background:#d62728}
.swatch.noreply{background:#9a9a9a}.swatch.rate{border-top:2px dashed #111;height:0;width:18px;vertical-align:3px}
@media print{thead th{position:static}.verdict{border-width:2px}}
";

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
    out.push_str("</body></html>\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
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
