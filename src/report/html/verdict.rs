//! The run's verdict in words: what its status and counts mean for an auditor.

use super::format::{grouped, int, opt_text};
use crate::report::rows::{Row, field, text};

/// How a run's verdict reads: good, bad, or neither.
#[derive(Clone, Copy)]
pub(crate) enum Tone {
    Good,
    Bad,
    Warn,
}

pub(crate) fn verdict(run: &Row) -> (Tone, String) {
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
