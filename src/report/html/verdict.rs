//! The run's verdict in words: what its status and counts mean for an auditor.

use maud::{Markup, html};

use super::format::grouped;
use crate::report::rows::RunRow;
use crate::store::RunStatus;

/// How a run's verdict reads: good, bad, or neither. The name is the CSS class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tone {
    Good,
    Bad,
    Warn,
}

/// The verdict as the page's first paragraph, coloured by its tone.
pub(super) fn section(run: &RunRow) -> Markup {
    let (tone, line) = verdict(run);
    let class = match tone {
        Tone::Good => "verdict good",
        Tone::Bad => "verdict bad",
        Tone::Warn => "verdict warn",
    };
    html! { p #verdict class=(class) { (line) } }
}

fn verdict(run: &RunRow) -> (Tone, String) {
    // Outside text in a sentence: shown (escaped for the terminal's sake too) like everywhere.
    let reason = run.stop_reason.as_ref().map(|r| r.shown().into_owned());
    let because = reason
        .as_deref()
        .map_or(String::new(), |r| format!(" ({r})"));
    let open_detail = format!(
        "{} of {} accounts are not verified flat; {} orders open after the sweep, {} \
         unverified, {} rejected",
        grouped(run.accounts_dirty),
        grouped(run.enabled()),
        grouped(run.open_after),
        grouped(run.unverified),
        grouped(run.rejected),
    );
    let open = "orders may still be open: see below";
    match (run.status, run.clean) {
        (RunStatus::Refused, _) => (
            Tone::Bad,
            format!(
                "The exchange refused the key: {}. The run stopped sending at once; {open}.",
                reason.as_deref().unwrap_or("no reason recorded")
            ),
        ),
        (RunStatus::Running, _) => (
            Tone::Warn,
            "The run is still going: these numbers are a snapshot and will change.".into(),
        ),
        (RunStatus::Died, _) => (
            Tone::Bad,
            format!("The run's process died before it finished: {open}. {open_detail}."),
        ),
        (_, Some(true)) => (Tone::Good, "Every account verified flat.".into()),
        (RunStatus::Interrupted, _) => (
            Tone::Bad,
            format!("The run was interrupted{because}: {open}. {open_detail}."),
        ),
        (RunStatus::Aborted, _) => (
            Tone::Bad,
            format!("The run stopped on an error{because}: {open}. {open_detail}."),
        ),
        (_, Some(false)) => (
            Tone::Bad,
            format!("Orders may still be open: see below. {open_detail}."),
        ),
        (_, None) => (
            Tone::Warn,
            "Not verified: the accounts were swept without listing them afterwards \
             (--no-verify), so nothing proves they are flat."
                .into(),
        ),
    }
}
