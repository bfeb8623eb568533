//! The requests-over-time chart: the buckets' maths from `attempts`, then its section of the
//! page, the inline SVG with its note and legend. [`Frame`], the axes, serves both charts.

use maud::{Markup, html};
use rusqlite::Connection;

use super::format::{grouped, plural};
use super::reads::Invocation;
use crate::store::AttemptState;

/// The chart has at most this many bars, whatever the run's length.
pub(super) const MAX_BUCKETS: usize = 240;

/// Requests over time, bucketed.
pub(super) struct Chart {
    pub(super) requests: u64,
    /// Seconds per bucket.
    pub(super) bucket_s: f64,
    /// Per bucket: answered ok, refused with 429, other failures, never answered.
    pub(super) buckets: Vec<[u64; 4]>,
    /// Per invocation with a known rate: (start s, end s, requests per second).
    pub(super) rates: Vec<(f64, f64, f64)>,
}

pub(super) const OK: usize = 0;
pub(super) const LIMITED: usize = 1;
pub(super) const FAILED: usize = 2;
pub(super) const NO_REPLY: usize = 3;

/// The smallest bucket that keeps the chart within [`MAX_BUCKETS`] bars over `span_s` seconds
/// and is at least `min_s` long.
pub(super) fn bucket_width(span_s: f64, min_s: f64) -> f64 {
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
pub(super) fn nice_step(rough: f64) -> f64 {
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
pub(super) fn tick_label(v: f64, step: f64) -> String {
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

pub(super) fn chart(
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
            let outcome: AttemptState = r.get(1)?;
            let http: Option<i64> = r.get(2)?;
            let i = ((s.unwrap_or(0.0) / bucket_s).floor().max(0.0) as usize).min(n - 1);
            let kind = match (outcome, http) {
                (AttemptState::Ok, _) => OK,
                (_, Some(429)) => LIMITED,
                (AttemptState::InFlight | AttemptState::Abandoned, _) => NO_REPLY,
                (AttemptState::Transient | AttemptState::Permanent, _) => FAILED,
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

/// A chart's frame: 960 × 300 with its margins, seconds since the run started along x, a count
/// or a rate up y; shared by the page's charts.
pub(super) struct Frame {
    /// Seconds along x, and the top of y with its grid step.
    pub(super) span: f64,
    pub(super) y_max: f64,
    pub(super) y_step: f64,
}

/// A coordinate as the SVG gets it: one decimal (a tenth of a pixel is finer than any screen).
pub(super) fn px(v: f64) -> String {
    format!("{v:.1}")
}

impl Frame {
    pub(super) const W: f64 = 960.0;
    pub(super) const H: f64 = 300.0;
    pub(super) const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 16.0;
    const BOTTOM: f64 = 46.0;
    pub(super) const PLOT_W: f64 = Self::W - Self::LEFT - Self::RIGHT;
    const PLOT_H: f64 = Self::H - Self::TOP - Self::BOTTOM;

    pub(super) fn x(&self, s: f64) -> f64 {
        Self::LEFT + s.clamp(0.0, self.span) / self.span * Self::PLOT_W
    }

    pub(super) fn y(&self, v: f64) -> f64 {
        Self::TOP + Self::PLOT_H - v.clamp(0.0, self.y_max) / self.y_max * Self::PLOT_H
    }

    /// The grid, both axes with their ticks, and their labels.
    pub(super) fn axes(&self, y_label: &str) -> Markup {
        let (left, top) = (Self::LEFT, Self::TOP);
        let (right, bottom) = (left + Self::PLOT_W, top + Self::PLOT_H);
        let y_ticks = (0..)
            .map(|k| k as f64 * self.y_step)
            .take_while(|v| *v <= self.y_max + self.y_step / 2.0);
        let x_step = nice_step(self.span / 8.0);
        let x_ticks = (0..)
            .map(|k| k as f64 * x_step)
            .take_while(|t| *t <= self.span + x_step / 1000.0);
        let mid_y = px(top + Self::PLOT_H / 2.0);
        html! {
            @for v in y_ticks {
                line.grid x1=(left) x2=(px(right)) y1=(px(self.y(v))) y2=(px(self.y(v))) {}
                text.tick x=(px(left - 6.0)) y=(px(self.y(v) + 4.0)) text-anchor="end" {
                    (tick_label(v, self.y_step))
                }
            }
            @for t in x_ticks {
                line.axis x1=(px(self.x(t))) x2=(px(self.x(t))) y1=(px(bottom))
                    y2=(px(bottom + 5.0)) {}
                text.tick x=(px(self.x(t))) y=(px(bottom + 18.0)) text-anchor="middle" {
                    (tick_label(t, x_step))
                }
            }
            line.axis x1=(left) x2=(px(right)) y1=(px(bottom)) y2=(px(bottom)) {}
            line.axis x1=(left) x2=(left) y1=(top) y2=(px(bottom)) {}
            text.label x=(px(left + Self::PLOT_W / 2.0)) y=(px(Self::H - 8.0))
                text-anchor="middle" { "seconds since the run started" }
            text.label x="14" y=(mid_y) text-anchor="middle"
                transform={ "rotate(-90 14 " (mid_y) ")" } { (y_label) }
        }
    }
}

impl Chart {
    /// The section: a note on what the bars are, the chart, its legend.
    pub(super) fn section(&self) -> Markup {
        let rates = if self.rates.is_empty() {
            " (not recorded for this run)"
        } else {
            ""
        };
        html! {
            h2 { "Requests over time" }
            p.note #chart-note {
                (plural(self.requests as i64, "request", "requests")) " in " (self.bucket_s)
                " s buckets: each bar is the requests sent in its bucket divided by the \
                bucket's length (the last bucket may be partly empty). The dashed line is the \
                configured " code { "--rate" } " of each invocation over the time it ran"
                (rates) ". Hover a bar for its counts."
            }
            (self.svg())
            ul.legend {
                li { span.swatch.ok {} "answered" }
                li { span.swatch.limited {} "refused with 429 (rate limited)" }
                li { span.swatch.failed {} "other failures" }
                li { span.swatch.noreply {} "never answered (in flight or abandoned)" }
                li { span.swatch.rate {} "configured --rate" }
            }
        }
    }

    fn frame(&self) -> Frame {
        let span = self.buckets.len().max(1) as f64 * self.bucket_s;
        let peak = self
            .buckets
            .iter()
            .map(|b| b.iter().sum::<u64>() as f64 / self.bucket_s)
            .fold(0.0, f64::max);
        let top_rate = self.rates.iter().map(|r| r.2).fold(0.0, f64::max);
        let top = peak.max(top_rate).max(1.0) * 1.1;
        let y_step = nice_step(top / 5.0);
        Frame {
            span,
            y_max: (top / y_step).ceil() * y_step,
            y_step,
        }
    }

    fn svg(&self) -> Markup {
        let frame = self.frame();
        html! {
            svg #rate-chart viewBox={ "0 0 " (Frame::W) " " (Frame::H) } width="100%" role="img"
                aria-labelledby="rate-chart-title" preserveAspectRatio="xMinYMin meet" {
                title #rate-chart-title {
                    "Requests per second (" (self.bucket_s)
                    " s buckets) against the configured rate"
                }
                (frame.axes("requests per second"))
                @for (i, b) in self.buckets.iter().enumerate() {
                    @if b.iter().sum::<u64>() > 0 { (self.bar(&frame, i, b)) }
                }
                // The configured rate of each invocation, over the time it ran.
                @for &(start, end, rate) in &self.rates {
                    @let (x1, x2) = (frame.x(start), frame.x(end).max(frame.x(start) + 2.0));
                    @let y = px(frame.y(rate));
                    line.rate-limit data-rate=(rate) x1=(px(x1)) x2=(px(x2)) y1=(y) y2=(y) {}
                    text.rate-label x=(px(x1 + 4.0)) y=(px(frame.y(rate) - 5.0)) {
                        "--rate " (rate) "/s"
                    }
                }
            }
        }
    }

    /// Bucket `i`'s bar: answered, then 429s, failures and unanswered stacked on top, with its
    /// counts on hover.
    fn bar(&self, frame: &Frame, i: usize, counts: &[u64; 4]) -> Markup {
        let slot = Frame::PLOT_W / self.buckets.len().max(1) as f64;
        let width = if slot > 3.0 { slot * 0.85 } else { slot };
        let from = i as f64 * self.bucket_s;
        let n = |kind: usize| grouped(counts[kind] as i64);
        let mut base = 0.0;
        let mut stack = Vec::new();
        for (kind, class) in [
            (OK, "ok"),
            (LIMITED, "limited"),
            (FAILED, "failed"),
            (NO_REPLY, "noreply"),
        ] {
            if counts[kind] > 0 {
                let h = counts[kind] as f64 / self.bucket_s;
                stack.push((class, base, base + h));
                base += h;
            }
        }
        html! {
            g.bucket {
                title {
                    (tick_label(from, self.bucket_s)) " to "
                    (tick_label(from + self.bucket_s, self.bucket_s)) " s: "
                    (grouped(counts.iter().sum::<u64>() as i64)) " requests (" (n(OK))
                    " answered, " (n(LIMITED)) " refused with 429, " (n(FAILED)) " failed, "
                    (n(NO_REPLY)) " unanswered)"
                }
                @for (class, low, high) in stack {
                    rect class=(class) x=(format!("{:.2}", Frame::LEFT + i as f64 * slot))
                        y=(format!("{:.2}", frame.y(high))) width=(format!("{width:.2}"))
                        height=(format!("{:.2}", (frame.y(low) - frame.y(high)).max(0.5))) {}
                }
            }
        }
    }
}
