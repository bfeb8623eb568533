//! What the operator sees while a job runs: on a terminal, a progress bar with log lines printed
//! above it; elsewhere (cron, systemd, Airflow), a progress record in the log every few seconds
//! and never an escape code. Whatever came from outside (an exchange's message, an account's
//! name) reaches a terminal, a log line or a text report through [`escape`], so that it cannot
//! move the cursor, start a line of its own or turn the text around it backwards.

use std::collections::VecDeque;
use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing_indicatif::IndicatifLayer;
use tracing_indicatif::filter::IndicatifFilter;
use tracing_indicatif::span_ext::IndicatifSpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::engine::progress::Progress;
pub use crate::safe_text::{escape, json_safe};

/// Log format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Stderr for JSON logs, each record through [`json_safe`] (the formatter writes one whole
/// record per call).
struct JsonSafeStderr;

impl std::io::Write for JsonSafeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut stderr = std::io::stderr().lock();
        match std::str::from_utf8(buf) {
            Ok(text) => stderr.write_all(json_safe(text).as_bytes())?,
            Err(_) => stderr.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Display {
    /// A bar on the terminal (stderr is one, human logs).
    Bar,
    /// A log record every so often.
    Lines(Duration),
    /// Nothing but the usual log.
    Quiet,
}

impl Display {
    /// The bar only where a person watches: stderr a terminal, human logs, TERM not dumb.
    pub fn choose(format: LogFormat, interval: Duration, wants_progress: bool) -> Display {
        let terminal =
            std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
        Self::choose_for(terminal, format, interval, wants_progress)
    }

    fn choose_for(
        terminal: bool,
        format: LogFormat,
        interval: Duration,
        wants_progress: bool,
    ) -> Display {
        match (wants_progress, terminal && format == LogFormat::Human) {
            (false, _) => Display::Quiet,
            (true, true) => Display::Bar,
            (true, false) if interval.is_zero() => Display::Quiet,
            (true, false) => Display::Lines(interval),
        }
    }
}

/// Sets up logging on stderr (stdout carries the JSON summary and must never get a log line);
/// with the bar, log lines are printed above it so that neither tears the other.
pub fn init_logging(format: LogFormat, display: Display) {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let ansi = std::io::stderr().is_terminal();
    if display == Display::Bar {
        let bars: IndicatifLayer<_> = IndicatifLayer::new();
        let logs = tracing_subscriber::fmt::layer()
            .fmt_fields(EscapedFields)
            .with_ansi(ansi)
            .with_writer(bars.get_stderr_writer())
            .with_filter(filter());
        tracing_subscriber::registry()
            .with(logs)
            // Only the span made for the bar gets one (not the per-group spans).
            .with(bars.with_filter(IndicatifFilter::new(false)))
            .init();
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.fmt_fields(EscapedFields).init(),
        // JSON escapes C0 controls itself, and json_safe the rest.
        LogFormat::Json => builder.json().with_writer(|| JsonSafeStderr).init(),
    }
}

/// Human log fields, the message among them, each through [`escape`]: an exchange's message
/// is logged as it came, and a CR/LF in it must not start a log line of its own (a forged
/// `all clean` in the cron log) nor an escape sequence act on the terminal. Otherwise the
/// lines read as tracing's own: `message field="text" field=42`.
struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    result: fmt::Result,
    first: bool,
}

impl EscapingVisitor<'_> {
    fn emit(&mut self, field: &Field, text: &str) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let text = escape(text);
        self.result = if name == "message" {
            write!(self.writer, "{separator}{text}")
        } else if self.writer.has_ansi_escapes() {
            write!(
                self.writer,
                "{separator}\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m{text}"
            )
        } else {
            write!(self.writer, "{separator}{name}={text}")
        };
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.emit(field, value);
        } else {
            // Quoted, as tracing's default shows a string field.
            self.emit(field, &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.emit(field, &format!("{value:?}"));
    }
}

/// Shows `progress` until [`Shown::finish`] (or drop).
pub struct Shown {
    task: Option<tokio::task::JoinHandle<()>>,
    done: CancellationToken,
}

impl Shown {
    /// Shows the final counts once more, then takes the bar down.
    pub async fn finish(mut self) {
        self.done.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn show(progress: Arc<Progress>, display: Display) -> Shown {
    let done = CancellationToken::new();
    let task = match display {
        Display::Quiet => None,
        Display::Bar => Some(tokio::spawn(bar(progress, done.clone()))),
        Display::Lines(every) => Some(tokio::spawn(lines(progress, every, done.clone()))),
    };
    Shown { task, done }
}

async fn bar(progress: Arc<Progress>, done: CancellationToken) {
    let span = tracing::info_span!("sweep", indicatif.pb_show = true);
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} accounts · {msg}",
    )
    .expect("a valid template");
    span.pb_set_style(&style);
    span.pb_set_length(0);
    span.pb_start();
    let mut rate = RequestRate::default();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = done.cancelled() => true,
        };
        let counts = progress.counts();
        let per_second = rate.update(counts.requests);
        span.pb_set_length(counts.accounts_total);
        span.pb_set_position(counts.accounts_done);
        let eta = counts
            .eta_secs()
            .map_or("—".to_owned(), |s| format!("{s}s"));
        span.pb_set_message(&format!(
            "{} orders cancelled · {} failed · {per_second:.1} req/s · ETA {eta}",
            counts.orders_cancelled, counts.accounts_failed
        ));
        if last {
            return;
        }
    }
}

async fn lines(progress: Arc<Progress>, every: Duration, done: CancellationToken) {
    let mut rate = RequestRate::default();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        // The summary line follows the run; a last progress line would only repeat it.
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.cancelled() => return,
        }
        let counts = progress.counts();
        // Before the run has its accounts (opening the database, say) there is nothing to say,
        // and "0/0 accounts" would read as an empty run.
        if counts.accounts_total == 0 && counts.requests == 0 {
            continue;
        }
        let per_second = rate.update(counts.requests);
        let eta = counts.eta_secs();
        tracing::info!(
            accounts_done = counts.accounts_done,
            accounts_total = counts.accounts_total,
            accounts_failed = counts.accounts_failed,
            orders_cancelled = counts.orders_cancelled,
            requests = counts.requests,
            requests_per_second = (per_second * 10.0).round() / 10.0,
            eta_s = eta,
            "progress: {}/{} accounts, {} orders cancelled, {} failed, {per_second:.1} requests/s{}",
            counts.accounts_done,
            counts.accounts_total,
            counts.orders_cancelled,
            counts.accounts_failed,
            eta.map(|s| format!(", about {s} s left"))
                .unwrap_or_default()
        );
    }
}

/// Requests per second over the last few seconds.
#[derive(Default)]
struct RequestRate {
    samples: VecDeque<(Instant, u64)>,
}

impl RequestRate {
    const WINDOW: Duration = Duration::from_secs(5);

    fn update(&mut self, requests: u64) -> f64 {
        let now = Instant::now();
        self.samples.push_back((now, requests));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > Self::WINDOW)
            && self.samples.len() > 2
        {
            self.samples.pop_front();
        }
        let (first_at, first) = self.samples.front().copied().unwrap_or((now, requests));
        let span = now.duration_since(first_at).as_secs_f64();
        if span <= 0.0 {
            0.0
        } else {
            (requests - first) as f64 / span
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::captured_log::Captured;

    #[test]
    fn a_human_log_line_stays_one_line_whatever_the_exchange_wrote() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let message = "bad key\r\nFAKE LOG LINE: all clean\u{1b}[2J";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("group", name = "desk\nA");
            let _entered = span.enter();
            tracing::error!("{message}; no further request");
            // A field named `message` is shown bare, as tracing's own formatter shows it.
            tracing::warn!(
                reason = "Invalid\u{202e}Nonce",
                message,
                count = 3,
                "refused"
            );
            let error = std::io::Error::other("disk\rfull");
            tracing::error!(error = %error, "aborted");
        });
        let text = captured.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(!text.contains(['\r', '\u{1b}', '\u{202e}']), "{text:?}");
        assert!(
            lines[0]
                .ends_with("bad key\\r\\nFAKE LOG LINE: all clean\\u{1b}[2J; no further request"),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains("group{name=\"desk\\nA\"}"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains(
                "refused reason=\"Invalid\\u{202e}Nonce\" bad key\\r\\nFAKE LOG LINE: all clean\\u{1b}[2J count=3"
            ),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].ends_with("aborted error=disk\\rfull"),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn eta_is_the_work_left_at_the_keys_pace() {
        let progress = Progress::default();
        assert_eq!(
            progress.counts().eta_secs(),
            None,
            "no pace, no accounts yet"
        );
        progress.add_accounts(50, 2);
        progress.pace_changed(0.0, 10.0);
        // From the first moment: 100 requests at 10/s, nothing done yet.
        assert_eq!(progress.counts().eta_secs(), Some(10));
        for _ in 0..40 {
            progress.request_sent();
        }
        progress.pace_changed(10.0, 6.0);
        assert_eq!(progress.counts().eta_secs(), Some(10), "60 left at 6/s");
        progress.pace_changed(6.0, 0.0);
        assert_eq!(progress.counts().eta_secs(), None, "the key ended");
    }

    #[test]
    fn the_bar_only_for_a_person_at_a_terminal() {
        let every = Duration::from_secs(10);
        let choose = Display::choose_for;
        assert_eq!(choose(true, LogFormat::Human, every, true), Display::Bar);
        assert_eq!(
            choose(false, LogFormat::Human, every, true),
            Display::Lines(every)
        );
        assert_eq!(
            choose(true, LogFormat::Json, every, true),
            Display::Lines(every)
        );
        assert_eq!(
            choose(false, LogFormat::Human, Duration::ZERO, true),
            Display::Quiet
        );
        assert_eq!(choose(true, LogFormat::Human, every, false), Display::Quiet);
    }
}
