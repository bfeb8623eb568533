//! What a job is made of and what it reports: each group's settings, key and accounts
//! ([`GroupJob`], [`Target`]), how it is told to stop ([`StopTokens`]), and each group's
//! summary ([`SweepSummary`]).

use std::collections::BTreeSet;

use tokio_util::sync::CancellationToken;

use crate::accounts::AccountEntry;
use crate::client::Credentials;
use crate::config::SweepConfig;
use crate::store::RunTotals;

/// What a finished sweep reports: the database's totals plus what only the process knows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepSummary {
    #[serde(flatten)]
    pub totals: RunTotals,
    /// This process's invocation of the run (`null` when a resume found nothing to do).
    pub invocation_id: Option<i64>,
    pub wall_ms: u64,
    pub db: String,
    /// Set by a `--resume` that found nothing left to do, and so sent and wrote nothing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub nothing_to_resume: bool,
    /// The run's end could not be written to the database (which reads `running` until the
    /// next run on it marks it died): status and stop reason here are this process's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub record_unwritten: bool,
    pub exit_code: crate::exit::Exit,
}

/// Which accounts a sweep works on.
pub enum Target {
    /// A new run over the CSV's accounts (disabled ones are recorded as skipped).
    New(Vec<AccountEntry>),
    /// A new run over every open exchange account the group lists (`--all-accounts`), but these.
    Discover { excluded: BTreeSet<String> },
    /// Finishing an earlier run: these of its accounts, under its run id.
    Resume { run_id: i64, accounts: Vec<String> },
}

impl Target {
    /// How many accounts it sweeps, if known before anything is sent.
    pub fn to_sweep(&self) -> Option<usize> {
        match self {
            Target::New(entries) => Some(entries.iter().filter(|a| a.enabled).count()),
            Target::Discover { .. } => None,
            Target::Resume { accounts, .. } => Some(accounts.len()),
        }
    }
}

/// How the process is told to stop: the first signal stops new requests, the grace period or a
/// second signal stops waiting for the ones in flight.
#[derive(Clone, Default)]
pub struct StopTokens {
    pub shutdown: CancellationToken,
    pub hard_stop: CancellationToken,
}

/// One group's sweep in a job: its settings, its key and its accounts.
pub struct GroupJob {
    pub config: SweepConfig,
    pub credentials: Credentials,
    pub target: Target,
}
