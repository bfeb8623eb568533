//! The flat-over-time chart: accounts cancelled (their first accepted cancel-all answered) and
//! proven flat (the listing after their last cancel-all answered, nothing open) since the run
//! started, against the bound the first invocation's `--rate` sets.

use maud::{Markup, html};
use rusqlite::Connection;

use super::chart::{Frame, nice_step, px};
use super::format::grouped;

/// Points drawn per curve at most; a longer run's curves are thinned evenly.
const MAX_POINTS: usize = 600;

pub(super) struct FlatChart {
    /// Accounts the run sweeps (not skipped).
    pub(super) accounts: usize,
    /// Seconds since the run started at which each account was cancelled, sorted.
    pub(super) cancelled: Vec<f64>,
    /// ... and proven flat, sorted.
    pub(super) proven: Vec<f64>,
    /// The first invocation's `--rate`, when recorded.
    pub(super) rate: Option<f64>,
}

pub(super) fn flat_chart(
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
         -- The sweep's proof: a hold's later listings are not when the account became flat.
         JOIN attempts t ON t.attempt_id =
             (SELECT max(v.attempt_id) FROM attempts v
              WHERE v.run_id = a.run_id AND v.account = a.account
                AND v.phase = 'verify' AND v.outcome = 'ok')
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
    pub(super) fn bound_s(&self) -> Option<f64> {
        self.rate.map(|r| self.accounts as f64 / r)
    }

    /// The section: what the curves are and the bound they are held against, the chart, its
    /// legend.
    pub(super) fn section(&self) -> Markup {
        let bound = match (self.bound_s(), self.rate) {
            (Some(bound), Some(rate)) => format!(
                "The solid line is the bound at --rate {rate}/s: one cancel-all per account, all \
                 done after {bound:.1} s; the dashed one, a proof per account after them, {:.1} s.",
                2.0 * bound
            ),
            _ => "No --rate was recorded for this run, so no bound is drawn.".into(),
        };
        html! {
            h2 { "Flat over time" }
            p.note #flat-chart-note {
                "Of " (grouped(self.accounts as i64)) " accounts: when each was cancelled (its \
                first accepted cancel-all answered; " (grouped(self.cancelled.len() as i64))
                " so far) and proven flat (the listing after its last cancel-all answered, \
                nothing open; " (grouped(self.proven.len() as i64)) " so far). " (bound)
            }
            (self.svg())
            ul.legend {
                li { span.swatch.line.cancelled {} "accounts cancelled" }
                li { span.swatch.line.proven {} "accounts proven flat" }
                li { span.swatch.line.bound {} "bound: cancels at --rate" }
                li { span.swatch.line.bound.proof {} "bound: cancels, then proofs" }
            }
        }
    }

    fn frame(&self) -> Frame {
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
        Frame {
            span,
            y_max,
            y_step: nice_step(y_max / 5.0),
        }
    }

    fn svg(&self) -> Markup {
        let frame = self.frame();
        let n = self.accounts as f64;
        // The bound: one cancel-all per account at --rate, and the proofs after them.
        let bounds = self
            .bound_s()
            .map(|b| [("bound", b), ("bound proof", 2.0 * b)]);
        html! {
            svg #flat-chart viewBox={ "0 0 " (Frame::W) " " (Frame::H) } width="100%" role="img"
                aria-labelledby="flat-chart-title" preserveAspectRatio="xMinYMin meet" {
                title #flat-chart-title {
                    "Accounts cancelled and proven flat since the run started, against the \
                     bound of the configured rate"
                }
                (frame.axes("accounts"))
                @for (class, end) in bounds.into_iter().flatten() {
                    line class=(class) data-seconds=(format!("{end:.3}")) x1=(px(frame.x(0.0)))
                        y1=(px(frame.y(0.0))) x2=(px(frame.x(end))) y2=(px(frame.y(n))) {}
                }
                @for (class, times) in [("cancelled", &self.cancelled), ("proven", &self.proven)] {
                    @if !times.is_empty() {
                        polyline class=(class) data-accounts=(times.len())
                            points=(points(&frame, times)) {
                            title { (grouped(times.len() as i64)) " accounts " (class) }
                        }
                    }
                }
            }
        }
    }
}

/// A step curve through `times`: along at the old count, then up to the new one.
pub(super) fn points(frame: &Frame, times: &[f64]) -> String {
    let mut points = format!("{},{}", px(frame.x(0.0)), px(frame.y(0.0)));
    let mut count = 0;
    for (t, n) in steps(times) {
        let (x, from, to) = (
            px(frame.x(t)),
            px(frame.y(count as f64)),
            px(frame.y(n as f64)),
        );
        points.push_str(&format!(" {x},{from} {x},{to}"));
        count = n;
    }
    points
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
