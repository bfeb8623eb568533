//! `report --format html`: one self-contained page an auditor opens in a browser.
//!
//! Everything is inline (CSS in a `<style>` element, the charts as inline SVG); there is no
//! script, no font, no image and no link to fetch, and a Content-Security-Policy meta element
//! forbids the browser from loading any. Every number comes from the reconciliation views (or,
//! for the charts, from `attempts` as recorded); what the database does not know reads `—`,
//! never 0. The markup is maud's, which escapes every value it is given; text from outside is
//! an [`OutsideText`], whose control characters are shown as escapes first.
//!
//! - this file: what the page reads ([`Page::read`]) and the page around its sections.
//! - `run`: the run's header, its invocations and its totals.
//! - `accounts`: the accounts table and the orders that may still be open.
//! - `chart`: the requests-over-time chart, its buckets' maths and its SVG.
//! - `flat_chart`: accounts cancelled and proven flat over time, against the rate's bound.
//! - `hold_chart`: with `--hold`, the cancel-alls the hold sent over time.
//! - `reads`: what the page reads beyond the reconciliation rows (processes, open orders).
//! - `verdict`: the run's verdict in words.
//! - `format`: how values read on the page (grouped numbers, durations, table cells).
//! - `style`: the inline stylesheet.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use rusqlite::{Connection, OptionalExtension};

use super::rows::{AccountRow, Only, RunRow};
use super::text::OutsideText;
use crate::store::RunTotals;

mod accounts;
mod chart;
mod flat_chart;
mod format;
mod hold_chart;
mod reads;
mod run;
mod style;
mod verdict;

use chart::Chart;
use flat_chart::FlatChart;
use reads::{Invocation, OpenOrders};

/// The browser loads nothing: styles are inline, and there is nothing else.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

/// Everything the page shows, read before any of it is drawn.
struct Page {
    run: RunRow,
    tool_version: Option<OutsideText>,
    invocations: Vec<Invocation>,
    accounts: Vec<AccountRow>,
    only: Only,
    orders: OpenOrders,
    chart: Chart,
    flat: FlatChart,
    hold: Option<hold_chart::HoldChart>,
    totals: RunTotals,
    generated: OutsideText,
}

/// The page for one run.
pub fn render(conn: &Connection, run_id: i64, only: Only) -> rusqlite::Result<String> {
    Ok(Page::read(conn, run_id, only)?.markup().into_string())
}

impl Page {
    fn read(conn: &Connection, run_id: i64, only: Only) -> rusqlite::Result<Page> {
        let run = RunRow::read(conn, run_id)?;
        let invocations = reads::invocations(conn, run_id)?;
        let chart = chart::chart(conn, run_id, run.duration_ms, &invocations)?;
        let first_rate = invocations.first().and_then(|i| i.rate);
        let totals = crate::store::run_totals(conn, run_id)?;
        let hold = hold_chart::hold_chart(conn, run_id, totals.hold.as_ref())?;
        Ok(Page {
            tool_version: conn
                .query_row(
                    "SELECT tool_version FROM runs WHERE run_id = ?1",
                    [run_id],
                    |r| r.get(0),
                )
                .optional()?,
            accounts: AccountRow::read_all(conn, run_id, only)?,
            orders: reads::open_orders(conn, run_id)?,
            flat: flat_chart::flat_chart(conn, run_id, first_rate)?,
            totals,
            hold,
            generated: conn.query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |r| {
                r.get(0)
            })?,
            run,
            invocations,
            only,
            chart,
        })
    }

    fn markup(&self) -> Markup {
        let run = &self.run;
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta http-equiv="Content-Security-Policy" content=(CSP);
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="generator" content={ "gemini-sweep " (env!("CARGO_PKG_VERSION")) };
                    title {
                        "gemini-sweep run " (run.run_id) " (" (run.group_name) "): "
                        (run.status.as_str())
                    }
                    style { (PreEscaped(style::STYLE)) }
                }
                body {
                    h1 { "gemini-sweep run " (run.run_id) ": group " (run.group_name) }
                    p.sub {
                        "Audit report generated " (self.generated) " (UTC) from the \
                         reconciliation views of the run's database. — means unknown \
                         (nothing was observed), never zero."
                    }
                    (verdict::section(run))
                    (run::run_section(run, &self.totals, self.tool_version.as_ref()))
                    (run::invocations_section(&self.invocations))
                    (run::totals_section(run, &self.chart))
                    (accounts::accounts_section(&self.accounts, self.only))
                    (accounts::orders_section(run, &self.orders))
                    (self.chart.section())
                    (self.flat.section())
                    @if let Some(hold) = &self.hold {
                        (hold.section())
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::chart::{MAX_BUCKETS, bucket_width, nice_step, tick_label};
    use super::format::{grouped, human_ms};

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
