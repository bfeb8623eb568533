//! The flat-over-time chart: accounts cancelled (their first accepted cancel-all answered) and
//! proven flat (the listing after their last cancel-all answered, nothing open) since the run
//! started, against the bound the first invocation's `--rate` sets.

use std::fmt::Write as _;

use rusqlite::Connection;

use super::chart::{Frame, nice_step};
use super::format::grouped;

/// Points drawn per curve at most; a longer run's curves are thinned evenly.
const MAX_POINTS: usize = 600;

pub(crate) struct FlatChart {
    /// Accounts the run sweeps (not skipped).
    pub(crate) accounts: usize,
    /// Seconds since the run started at which each account was cancelled, sorted.
    pub(crate) cancelled: Vec<f64>,
    /// ... and proven flat, sorted.
    pub(crate) proven: Vec<f64>,
    /// The first invocation's `--rate`, when recorded.
    pub(crate) rate: Option<f64>,
}

pub(crate) fn flat_chart(
    conn: &Connection,
    run_id: i64,
    rate: Option<f64>,
) -> rusqlite::Result<FlatChart> {
    let accounts: i64 = conn.query_row(
        "SELECT count(*) FROM run_accounts WHERE run_id = ?1 AND status <> 'skipped'",
        [run_id],
        |r| r.get(0),
    )?;
    let times = |sql: &str| -> rusqlite::Result<Vec<f64>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([run_id], |r| r.get::<_, Option<f64>>(0))?;
        let mut v: Vec<f64> = rows
            .filter_map(|r| r.transpose())
            .collect::<rusqlite::Result<_>>()?;
        v.retain(|t| t.is_finite());
        v.sort_by(f64::total_cmp);
        Ok(v)
    };
    // When the reply came: the send time plus the latency.
    let cancelled = times(
        "SELECT min((julianday(t.sent_at) - julianday(r.started_at)) * 86400.0
                    + coalesce(t.latency_ms, 0) / 1000.0)
         FROM attempts t JOIN runs r ON r.run_id = t.run_id
         WHERE t.run_id = ?1 AND t.phase = 'cancel' AND t.outcome = 'ok'
         GROUP BY t.account",
    )?;
    let proven = times(
        "SELECT (julianday(t.sent_at) - julianday(r.started_at)) * 86400.0
                + coalesce(t.latency_ms, 0) / 1000.0
         FROM account_reconciliation a
         JOIN run_accounts ra ON ra.run_id = a.run_id AND ra.account = a.account
         JOIN attempts t ON t.attempt_id = ra.verify_attempt_id
         JOIN runs r ON r.run_id = a.run_id
         WHERE a.run_id = ?1 AND a.clean = 1",
    )?;
    Ok(FlatChart {
        accounts: accounts.max(0) as usize,
        cancelled,
        proven,
        rate: rate.filter(|r| r.is_finite() && *r > 0.0),
    })
}

/// Every `k`-th time of a sorted list (and the last), as (seconds, count so far).
fn steps(times: &[f64]) -> Vec<(f64, usize)> {
    let k = times.len().div_ceil(MAX_POINTS).max(1);
    let mut points: Vec<(f64, usize)> = times
        .iter()
        .enumerate()
        .filter(|(i, _)| (i + 1) % k == 0)
        .map(|(i, &t)| (t, i + 1))
        .collect();
    if let Some(&last) = times.last()
        && points.last().map(|p| p.1) != Some(times.len())
    {
        points.push((last, times.len()));
    }
    points
}

impl FlatChart {
    /// Seconds to cancel every account at the configured rate, one cancel-all each.
    pub(crate) fn bound_s(&self) -> Option<f64> {
        self.rate.map(|r| self.accounts as f64 / r)
    }

    pub(crate) fn svg(&self, out: &mut String) {
        let last = self
            .cancelled
            .last()
            .into_iter()
            .chain(self.proven.last())
            .copied()
            .fold(0.0, f64::max);
        // The proof's bound (twice the cancels') stays in view.
        let span = last.max(self.bound_s().map_or(0.0, |b| 2.0 * b)).max(1.0) * 1.05;
        let y_max = (self.accounts.max(1) as f64 * 1.05).max(1.0);
        let frame = Frame {
            span,
            y_max,
            y_step: nice_step(y_max / 5.0),
        };
        let (x, y) = (|s: f64| frame.x(s), |v: f64| frame.y(v));
        let _ = write!(
            out,
            "<svg id=\"flat-chart\" viewBox=\"0 0 {} {}\" width=\"100%\" role=\"img\" \
             aria-labelledby=\"flat-chart-title\" preserveAspectRatio=\"xMinYMin meet\">\
             <title id=\"flat-chart-title\">Accounts cancelled and proven flat since the run started, against the bound of the configured rate</title>",
            Frame::W,
            Frame::H,
        );
        frame.axes(out, "accounts");
        // The bound: one cancel-all per account at --rate, and the proofs after them.
        if let Some(bound) = self.bound_s() {
            let n = self.accounts as f64;
            for (class, end) in [("bound", bound), ("bound proof", 2.0 * bound)] {
                let _ = write!(
                    out,
                    "<line class=\"{class}\" data-seconds=\"{end:.3}\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>",
                    x(0.0),
                    y(0.0),
                    x(end),
                    y(n),
                );
            }
        }
        for (class, times) in [("cancelled", &self.cancelled), ("proven", &self.proven)] {
            if times.is_empty() {
                continue;
            }
            let mut points = format!("{:.1},{:.1}", x(0.0), y(0.0));
            let mut count = 0;
            for (t, n) in steps(times) {
                // A step: along at the old count, then up to the new one.
                let _ = write!(
                    points,
                    " {:.1},{:.1} {:.1},{:.1}",
                    x(t),
                    y(count as f64),
                    x(t),
                    y(n as f64)
                );
                count = n;
            }
            let _ = write!(
                out,
                "<polyline class=\"{class}\" data-accounts=\"{}\" points=\"{points}\"><title>{} accounts {class}</title></polyline>",
                times.len(),
                grouped(times.len() as i64),
            );
        }
        out.push_str("</svg>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_curves_are_thinned_and_keep_their_last_point() {
        let times: Vec<f64> = (0..10_000).map(|i| i as f64 / 100.0).collect();
        let points = steps(&times);
        assert!(points.len() <= MAX_POINTS + 1, "{}", points.len());
        assert_eq!(points.last(), Some(&(99.99, 10_000)));
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1)
        );
        assert_eq!(steps(&[1.0, 2.0]), [(1.0, 1), (2.0, 2)]);
        assert!(steps(&[]).is_empty());
    }
}
