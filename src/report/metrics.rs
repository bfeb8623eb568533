//! `--metrics-file`: the job's outcome in Prometheus text format, for node_exporter's textfile
//! collector, so the monitoring a desk already runs can alert on a sweep that did not happen or
//! did not finish clean.
//!
//! Every figure is a gauge describing the latest job, labelled with the group, read back from the
//! database like the JSON summary is. `gemini_sweep_last_clean_sweep_timestamp_seconds` comes from
//! the whole history, so "no clean sweep today" is one alert rule whatever happened to the job.

use std::fmt::Write as _;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use crate::engine::SweepSummary;
use crate::store::{AttemptState, RunStatus};

/// One group's part of the job: its summary, or only its exit code when it never got a run.
pub struct GroupOutcome<'a> {
    pub group: &'a str,
    pub exit_code: crate::exit::Exit,
    pub summary: Option<&'a SweepSummary>,
}

/// How far back to look for the last clean run of a group.
const CLEAN_LOOKBACK_RUNS: i64 = 50;

type Labels = Vec<(&'static str, String)>;

struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Labels, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Labels, value: f64) {
        self.samples.push((labels, value));
    }

    /// Its HELP and TYPE lines and a line per sample; nothing when it has no sample.
    fn write(&self, text: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(text, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(text, "# TYPE {} gauge", self.name);
        for (labels, value) in &self.samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = writeln!(text, "{}{{{}}} {value}", self.name, labels.join(","));
        }
    }
}

/// Every family the file has, in the order it lists them.
struct Families {
    exit: Family,
    last_job: Family,
    status: Family,
    run_id: Family,
    duration: Family,
    accounts: Family,
    orders: Family,
    attempts: Family,
    rate_limited: Family,
    nonce_races: Family,
    time_to_flat: Family,
    time_to_proven_flat: Family,
    hold: Family,
    last_clean: Family,
}

/// The metrics text for the job's groups, `now` (seconds since the epoch) being when it was
/// written.
pub fn render(conn: &Connection, groups: &[GroupOutcome], now: f64) -> rusqlite::Result<String> {
    let mut families = Families::new();
    for g in groups {
        let group = || vec![("group", g.group.to_string())];
        families.exit.add(group(), f64::from(g.exit_code.code()));
        families.last_job.add(group(), now);
        if let Some(summary) = g.summary {
            families.add_run(conn, &group, summary)?;
        }
        if let Some(at) = last_clean_sweep(conn, g.group)? {
            families.last_clean.add(group(), at);
        }
    }
    Ok(families.text())
}

impl Families {
    fn new() -> Self {
        Families {
            exit: Family::new(
                "gemini_sweep_exit_code",
                "Exit code of the group's part of the latest job (0: every account verified flat).",
            ),
            last_job: Family::new(
                "gemini_sweep_last_job_timestamp_seconds",
                "When the latest job of the group ended.",
            ),
            status: Family::new(
                "gemini_sweep_run_status",
                "1 for the status the group's latest run is in.",
            ),
            run_id: Family::new("gemini_sweep_run_id", "The group's latest run id."),
            duration: Family::new(
                "gemini_sweep_duration_seconds",
                "How long the latest job took for the group.",
            ),
            accounts: Family::new(
                "gemini_sweep_accounts",
                "Accounts of the group's latest run by outcome (unverified: swept, no listing after the last cancel-all).",
            ),
            orders: Family::new(
                "gemini_sweep_orders",
                "Orders of the group's latest run: cancelled, rejected (never cancelled), still_open (listed after the last cancel-all), unverified (listed before, not accounted for since).",
            ),
            attempts: Family::new(
                "gemini_sweep_attempts",
                "Requests of the group's latest run by outcome and reason (reason empty when ok).",
            ),
            rate_limited: Family::new(
                "gemini_sweep_rate_limited",
                "Requests of the group's latest run the exchange refused with 429.",
            ),
            nonce_races: Family::new(
                "gemini_sweep_nonce_races",
                "Requests of the group's latest run refused with InvalidNonce.",
            ),
            time_to_flat: Family::new(
                "gemini_sweep_time_to_flat_seconds",
                "From the start of the group's latest run to the reply of its last accepted cancel-all (absent while some account was never cancelled).",
            ),
            time_to_proven_flat: Family::new(
                "gemini_sweep_time_to_proven_flat_seconds",
                "From the start of the group's latest run to the listing that proved its last account flat (absent while some account is not proven flat).",
            ),
            hold: Family::new(
                "gemini_sweep_hold",
                "With --hold, what holding the group flat after the latest run's sweep did: seconds, cycles (every account listed once), recancels (cancel-alls for orders that appeared), recancelled_accounts (absent without a hold).",
            ),
            last_clean: Family::new(
                "gemini_sweep_last_clean_sweep_timestamp_seconds",
                "When the group's latest run with every account verified flat ended (absent: none yet).",
            ),
        }
    }

    /// The samples of the group's latest run, from its summary and its attempts.
    fn add_run(
        &mut self,
        conn: &Connection,
        group: &dyn Fn() -> Labels,
        s: &SweepSummary,
    ) -> rusqlite::Result<()> {
        let t = &s.totals;
        let with = |name: &'static str, value: &str| {
            let mut labels = group();
            labels.push((name, value.to_string()));
            labels
        };
        // Each status gets a 0/1 sample, so that a rule can match on the label.
        for &st in RunStatus::ALL {
            let value = f64::from(u8::from(t.status == st));
            self.status.add(with("status", st.as_str()), value);
        }
        self.run_id.add(group(), t.run_id as f64);
        self.duration.add(group(), s.wall_ms as f64 / 1000.0);
        for (outcome, n) in [
            ("ok", t.accounts_ok),
            ("rejects_left", t.accounts_rejects_left),
            ("failed", t.accounts_failed),
            ("skipped", t.accounts_skipped),
            ("unfinished", t.accounts_unfinished),
            ("not_attempted", t.accounts_not_attempted),
            ("unverified", t.accounts_unverified),
        ] {
            self.accounts.add(with("outcome", outcome), n as f64);
        }
        for (outcome, n) in [
            ("cancelled", t.orders_cancelled),
            ("rejected", t.orders_rejected),
            ("still_open", t.orders_still_open),
            ("unverified", t.orders_unverified),
        ] {
            self.orders.add(with("outcome", outcome), n as f64);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT outcome, coalesce(error_reason, ''), count(*) FROM attempts
             WHERE run_id = ?1 GROUP BY 1, 2 ORDER BY 1, 2",
        )?;
        let rows = stmt.query_map([t.run_id], |r| {
            Ok((
                r.get::<_, AttemptState>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (outcome, reason, n) = row?;
            let mut labels = with("outcome", outcome.as_str());
            labels.push(("reason", reason));
            self.attempts.add(labels, n as f64);
        }
        self.rate_limited.add(group(), t.rate_limited as f64);
        self.nonce_races.add(group(), t.nonce_refused as f64);
        // Unknown is absent, never 0: an alert on "not flat within N seconds" must fire on it.
        if let Some(ms) = t.time_to_flat_ms {
            self.time_to_flat.add(group(), ms as f64 / 1000.0);
        }
        if let Some(ms) = t.time_to_proven_flat_ms {
            self.time_to_proven_flat.add(group(), ms as f64 / 1000.0);
        }
        if let Some(h) = &t.hold {
            for (what, n) in [
                ("seconds", h.hold_ms as f64 / 1000.0),
                ("cycles", h.hold_cycles as f64),
                ("recancels", h.hold_recancels as f64),
                (
                    "recancelled_accounts",
                    h.hold_recancelled_accounts.len() as f64,
                ),
            ] {
                self.hold.add(with("what", what), n);
            }
        }
        Ok(())
    }

    fn text(&self) -> String {
        let mut text = String::new();
        for family in [
            &self.exit,
            &self.last_job,
            &self.status,
            &self.run_id,
            &self.duration,
            &self.accounts,
            &self.orders,
            &self.attempts,
            &self.rate_limited,
            &self.nonce_races,
            &self.time_to_flat,
            &self.time_to_proven_flat,
            &self.hold,
            &self.last_clean,
        ] {
            family.write(&mut text);
        }
        text
    }
}

/// The end of the group's latest run that finished with every account verified flat.
fn last_clean_sweep(conn: &Connection, group: &str) -> rusqlite::Result<Option<f64>> {
    // Newest first, one indexed reconciliation per candidate: cheap however long the history.
    let mut candidates = conn.prepare_cached(
        "SELECT run_id FROM runs WHERE group_name = ?1 AND status = 'completed'
         ORDER BY run_id DESC LIMIT ?2",
    )?;
    let ids = candidates
        .query_map(rusqlite::params![group, CLEAN_LOOKBACK_RUNS], |r| {
            r.get::<_, i64>(0)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for id in ids {
        let ended: Option<f64> = conn
            .query_row(
                "SELECT (julianday(ended_at) - 2440587.5) * 86400.0 FROM run_reconciliation
                 WHERE run_id = ?1 AND clean = 1",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        if let Some(at) = ended {
            return Ok(Some((at * 1000.0).round() / 1000.0));
        }
    }
    Ok(None)
}

/// Label values may hold what the exchange wrote (a reason). Its newlines and other control
/// characters become visible escapes first, like everywhere else (the format would take most of
/// them raw, the terminal of whoever reads the file would not); then the format's own `\` and
/// `"` escapes.
fn escape_label(value: &str) -> String {
    crate::safe_text::escape(value)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// Writes the file whole or not at all, so the collector never reads half a file. Counts only,
/// no secret: mode 0644, since the collector runs as another user and must read it.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    crate::atomic_file::write(path, text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_from_the_exchange_cannot_break_the_format() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\\\nd");
        assert_eq!(escape_label("x\u{1b}[2J"), "x\\\\u{1b}[2J");
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_no_half_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sweep.prom");
        write_atomic(&target, "a 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "a 1\n");
        // A directory in the way: the rename fails, the old file stays, nothing is left over.
        let blocked = dir.path().join("blocked.prom");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), "").unwrap();
        assert!(write_atomic(&blocked, "b 2\n").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}
