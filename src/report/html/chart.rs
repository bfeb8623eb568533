//! The requests-over-time chart: the buckets' maths from `attempts`, then the inline SVG.

use std::fmt::Write as _;

use rusqlite::Connection;

use super::format::grouped;
use super::reads::Invocation;

/// The chart has at most this many bars, whatever the run's length.
pub(crate) const MAX_BUCKETS: usize = 240;

/// Requests over time, bucketed.
pub(crate) struct Chart {
    pub(crate) requests: u64,
    /// Seconds per bucket.
    pub(crate) bucket_s: f64,
    /// Per bucket: answered ok, refused with 429, other failures, never answered.
    pub(crate) buckets: Vec<[u64; 4]>,
    /// Per invocation with a known rate: (start s, end s, requests per second).
    pub(crate) rates: Vec<(f64, f64, f64)>,
}

pub(crate) const OK: usize = 0;
pub(crate) const LIMITED: usize = 1;
pub(crate) const FAILED: usize = 2;
pub(crate) const NO_REPLY: usize = 3;

/// The smallest bucket that keeps the chart within [`MAX_BUCKETS`] bars over `span_s` seconds
/// and is at least `min_s` long.
pub(crate) fn bucket_width(span_s: f64, min_s: f64) -> f64 {
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
pub(crate) fn nice_step(rough: f64) -> f64 {
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
pub(crate) fn tick_label(v: f64, step: f64) -> String {
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

pub(crate) fn chart(
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

/// A chart's frame: 960 × 300 with its margins, seconds since the run started along x, a count
/// or a rate up y; shared by the page's charts.
pub(crate) struct Frame {
    /// Seconds along x, and the top of y with its grid step.
    pub(crate) span: f64,
    pub(crate) y_max: f64,
    pub(crate) y_step: f64,
}

impl Frame {
    pub(crate) const W: f64 = 960.0;
    pub(crate) const H: f64 = 300.0;
    pub(crate) const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 16.0;
    const BOTTOM: f64 = 46.0;
    pub(crate) const PLOT_W: f64 = Self::W - Self::LEFT - Self::RIGHT;
    const PLOT_H: f64 = Self::H - Self::TOP - Self::BOTTOM;

    pub(crate) fn x(&self, s: f64) -> f64 {
        Self::LEFT + s.clamp(0.0, self.span) / self.span * Self::PLOT_W
    }

    pub(crate) fn y(&self, v: f64) -> f64 {
        Self::TOP + Self::PLOT_H - v.clamp(0.0, self.y_max) / self.y_max * Self::PLOT_H
    }

    /// The grid, both axes with their ticks, and their labels.
    pub(crate) fn axes(&self, out: &mut String, y_label: &str) {
        let (left, top, plot_w, plot_h) = (Self::LEFT, Self::TOP, Self::PLOT_W, Self::PLOT_H);
        let mut v = 0.0;
        while v <= self.y_max + self.y_step / 2.0 {
            let _ = write!(
                out,
                "<line class=\"grid\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
                 <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                left + plot_w,
                left - 6.0,
                self.y(v) + 4.0,
                tick_label(v, self.y_step),
                yy = self.y(v),
            );
            v += self.y_step;
        }
        let x_step = nice_step(self.span / 8.0);
        let mut t = 0.0;
        while t <= self.span + x_step / 1000.0 {
            let _ = write!(
                out,
                "<line class=\"axis\" x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\
                 <text class=\"tick\" x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                top + plot_h,
                top + plot_h + 5.0,
                top + plot_h + 18.0,
                tick_label(t, x_step),
                xx = self.x(t),
            );
            t += x_step;
        }
        let _ = write!(
            out,
            "<line class=\"axis\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{b:.1}\" y2=\"{b:.1}\"/>\
             <line class=\"axis\" x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{b:.1}\"/>\
             <text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since the run started</text>\
             <text class=\"label\" x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.1})\">{}</text>",
            left + plot_w,
            left + plot_w / 2.0,
            Self::H - 8.0,
            top + plot_h / 2.0,
            top + plot_h / 2.0,
            super::format::Esc(y_label),
            b = top + plot_h,
        );
    }
}

impl Chart {
    pub(crate) fn svg(&self, out: &mut String) {
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
        let frame = Frame {
            span,
            y_max,
            y_step,
        };
        let (x, y) = (|s: f64| frame.x(s), |v: f64| frame.y(v));
        let _ = write!(
            out,
            "<svg id=\"rate-chart\" viewBox=\"0 0 {} {}\" width=\"100%\" role=\"img\" \
             aria-labelledby=\"rate-chart-title\" preserveAspectRatio=\"xMinYMin meet\">\
             <title id=\"rate-chart-title\">Requests per second ({} s buckets) against the configured rate</title>",
            Frame::W,
            Frame::H,
            self.bucket_s
        );
        frame.axes(out, "requests per second");
        // Bars: answered, then 429s, failures and unanswered stacked on top.
        let slot = Frame::PLOT_W / n as f64;
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
                    Frame::LEFT + i as f64 * slot,
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
