//! The library's one error type and the one place that turns it into a process exit code.

use std::path::PathBuf;

/// Exit codes are part of the interface schedulers script against; the README lists them.
pub mod exit_code {
    use crate::engine::StopSignal;
    use crate::store::RunStatus;

    /// Every account swept, nothing left rejected, verified flat (or swept, with --no-verify).
    pub const OK: i32 = 0;
    /// The run finished, but some account failed, kept rejected orders or is not verified flat.
    pub const INCOMPLETE: i32 = 1;
    /// Bad input or configuration; nothing was sent to the exchange.
    pub const BAD_INPUT: i32 = 2;
    /// Internal, database or environment error.
    pub const INTERNAL: i32 = 3;
    /// The exchange refused the key or the request as configured (signature, role, nonce mode,
    /// IP allow-list, redirect, unknown endpoint): the run stopped sending at once, and nothing
    /// will work until the key or the configuration is fixed.
    pub const REFUSED: i32 = 4;
    /// Interrupted by SIGINT (128 + 2).
    pub const SIGINT: i32 = 130;
    /// Interrupted by SIGTERM (128 + 15).
    pub const SIGTERM: i32 = 143;

    /// The exit code of a run that ended with `status`, stopped by `signal` if any.
    pub fn for_run(status: RunStatus, signal: Option<StopSignal>) -> i32 {
        match status {
            RunStatus::Completed => OK,
            RunStatus::Incomplete => INCOMPLETE,
            RunStatus::Refused => REFUSED,
            RunStatus::Aborted => INTERNAL,
            RunStatus::Interrupted => match signal {
                Some(StopSignal::Terminate) => SIGTERM,
                _ => SIGINT,
            },
        }
    }

    /// One code for a job of several groups: the one that needs the most attention. A broken
    /// job (3) or input (2) first, then a refused key (4), an interruption, orders possibly left
    /// open (1), and 0 only when every group is 0.
    pub fn combine(codes: impl IntoIterator<Item = i32>) -> i32 {
        let rank = |code: i32| match code {
            OK => 0,
            INCOMPLETE => 1,
            SIGINT => 2,
            SIGTERM => 3,
            REFUSED => 4,
            BAD_INPUT => 5,
            _ => 6,
        };
        codes.into_iter().max_by_key(|c| rank(*c)).unwrap_or(OK)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_job_exits_with_its_most_urgent_group() {
            assert_eq!(combine([]), OK);
            assert_eq!(combine([OK, OK]), OK);
            assert_eq!(combine([OK, INCOMPLETE]), INCOMPLETE);
            assert_eq!(combine([SIGTERM, INCOMPLETE, OK]), SIGTERM);
            assert_eq!(combine([INCOMPLETE, REFUSED, SIGINT]), REFUSED);
            assert_eq!(combine([REFUSED, INTERNAL, OK]), INTERNAL);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem in the accounts CSV, with the file and line already in the message.
    #[error("{0}")]
    Accounts(#[from] crate::accounts::AccountsError),

    /// A flag, environment variable or credential that cannot be used as given.
    #[error("{0}")]
    Config(String),

    /// A file named by the user that cannot be read.
    #[error("{}: {reason}", path.display())]
    UnreadableInput { path: PathBuf, reason: String },

    /// The database could not be opened, migrated or written.
    #[error("database {}: {reason}", path.display())]
    Store { path: PathBuf, reason: String },

    /// The exchange refused the key or the configuration (outside a run, which records it).
    #[error("the exchange refused the key: {0}")]
    Refused(String),

    /// The exchange did not answer what was asked (outside a run).
    #[error("{0}")]
    Unavailable(String),

    /// Anything that is our fault rather than the user's.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Accounts(_) | Error::Config(_) | Error::UnreadableInput { .. } => {
                exit_code::BAD_INPUT
            }
            Error::Store { .. } | Error::Internal(_) => exit_code::INTERNAL,
            Error::Refused(_) => exit_code::REFUSED,
            Error::Unavailable(_) => exit_code::INCOMPLETE,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
