//! The hold over time: with `--hold`, the cancel-alls the hold sent for orders that appeared
//! after the sweep, counted since the run started, between the hold's first and last listing.

use maud::{Markup, html};
use rusqlite::Connection;

use super::chart::{Frame, nice_step, px};
use super::flat_chart::points;
use super::format::grouped;
use crate::store::HoldTotals;

pub(super) struct HoldChart {
    /// Seconds since the run started at which each of the hold's cancel-alls was answered.
    recancels: Vec<f64>,
    /// When the hold's first and last requests left, in seconds since the run started.
    span: (f64, f64),
    listings: i64,
    totals: HoldTotals,
}

/// The chart, if the run held.
pub(super) fn hold_chart(
    conn: &Connection,
    run_id: i64,
    totals: Option<&HoldTotals>,
) -> rusqlite::Result<Option<HoldChart>> {
    let Some(totals) = totals else {
        return Ok(None);
    };
    let since = "(julianday(t.sent_at) - julianday(r.started_at)) * 86400.0";
    let mut stmt = conn.prepare(&format!(
        "SELECT {since} + coalesce(t.latency_ms, 0) / 1000.0
         FROM attempts t JOIN runs r ON r.run_id = t.run_id
         WHERE t.run_id = ?1 AND t.phase = 'hold' AND t.endpoint = '/v1/order/cancel/all'
           AND t.outcome = 'ok'
         ORDER BY 1"
    ))?;
    let recancels = stmt
        .query_map([run_id], |r| r.get::<_, Option<f64>>(0))?
        .filter_map(|r| r.transpose())
        .collect::<rusqlite::Result<Vec<f64>>>()?;
    let (first, last, listings): (Option<f64>, Option<f64>, i64) = conn.query_row(
        &format!(
            "SELECT min({since}), max({since}), sum(t.endpoint = '/v1/orders')
             FROM attempts t JOIN runs r ON r.run_id = t.run_id
             WHERE t.run_id = ?1 AND t.phase = 'hold'"
        ),
        [run_id],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, Option<i64>>(2)?.unwrap_or(0),
            ))
        },
    )?;
    Ok(Some(HoldChart {
        recancels: recancels.into_iter().filter(|t| t.is_finite()).collect(),
        span: (first.unwrap_or(0.0), last.unwrap_or(0.0)),
        listings,
        totals: totals.clone(),
    }))
}

impl HoldChart {
    pub(super) fn section(&self) -> Markup {
        let t = &self.totals;
        // Text from the database: its control characters are shown as escapes.
        let escape = crate::safe_text::escape;
        let seen = t
            .last_order_seen_at
            .as_deref()
            .map_or("never".into(), escape);
        html! {
            h2 { "Holding the group flat" }
            p.note #hold-note {
                "After the sweep the run held the group for "
                (format!("{:.1}", t.hold_ms as f64 / 1000.0)) " s: " (grouped(t.hold_cycles))
                " full cycles of " (grouped(self.listings)) " listings, and "
                (grouped(t.hold_recancels)) " cancel-alls again for orders that appeared, on "
                (grouped(t.hold_recancelled_accounts.len() as i64)) " accounts. The last order \
                seen: " (seen) " (UTC)."
            }
            @if !t.hold_recancelled_accounts.is_empty() {
                p.note #hold-accounts {
                    "Cancelled again: " (escape(&t.hold_recancelled_accounts.join(", ")))
                }
            }
            (self.svg())
        }
    }

    fn svg(&self) -> Markup {
        let n = self.recancels.len() as f64;
        let y_max = (n * 1.05).max(1.0);
        let frame = Frame {
            span: self
                .span
                .1
                .max(self.recancels.last().copied().unwrap_or(0.0))
                .max(1.0)
                * 1.05,
            y_max,
            y_step: nice_step(y_max / 5.0),
        };
        html! {
            svg #hold-chart viewBox={ "0 0 " (Frame::W) " " (Frame::H) } width="100%" role="img"
                aria-labelledby="hold-chart-title" preserveAspectRatio="xMinYMin meet" {
                title #hold-chart-title {
                    "Cancel-alls the hold sent for orders that appeared, since the run started"
                }
                (frame.axes("re-cancels"))
                line class="bound" x1=(px(frame.x(self.span.0))) y1=(px(frame.y(0.0)))
                    x2=(px(frame.x(self.span.0))) y2=(px(frame.y(y_max))) {
                    title { "the hold starts" }
                }
                @if !self.recancels.is_empty() {
                    polyline class="cancelled" data-recancels=(self.recancels.len())
                        points=(points(&frame, &self.recancels)) {
                        title { (grouped(self.recancels.len() as i64)) " re-cancels" }
                    }
                }
            }
        }
    }
}
