//! The library's one error type; [`crate::exit`] turns what kind of failure it is into the
//! process's exit code.

use std::fmt;
use std::path::PathBuf;

use crate::exit::Exit;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem in the accounts CSV, with the file and line already in the message.
    #[error("{0}")]
    Accounts(#[from] AccountsError),

    /// A flag, environment variable or credential that cannot be used as given.
    #[error("{0}")]
    Config(String),

    /// A file named by the user that cannot be read.
    #[error("{}: {reason}", path.display())]
    UnreadableInput { path: PathBuf, reason: String },

    /// A file could not be written after the work that produced it was done (requests may
    /// have been sent by then, so this is no bad input: exit 3).
    #[error("{}: {reason}", path.display())]
    Unwritable { path: PathBuf, reason: String },

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
    /// How the process ends when this error ends it.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Accounts(_) | Error::Config(_) | Error::UnreadableInput { .. } => Exit::BadInput,
            Error::Store { .. } | Error::Unwritable { .. } | Error::Internal(_) => Exit::Internal,
            Error::Refused(_) => Exit::Refused,
            // What the exchange should have done may not be done.
            Error::Unavailable(_) => Exit::Incomplete,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A problem in a file of account nicknames (the accounts CSV, an exclude file): the file,
/// the line when there is one, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AccountsError {
    pub path: PathBuf,
    pub line: Option<u64>,
    pub problem: String,
}

impl fmt::Display for AccountsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.problem),
            None => write!(f, "{}: {}", self.path.display(), self.problem),
        }
    }
}
