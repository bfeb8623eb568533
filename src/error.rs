//! The error the engine and the edge return. The modules below them have typed errors of their
//! own ([`AccountsError`], [`ConfigError`], [`OutputError`], [`LockError`], [`StoreError`]);
//! an [`Error`] is one of those, or what went wrong above them. [`Error::exit`] says which exit
//! code it ends the process with.
//!
//! A message is one line with its cause's message in it (the file, the line or the flag, and
//! what to do), since that line is all an operator sees. `source()` still hands the typed cause
//! (the I/O, SQLite, HTTP or parse error) to code that wants it, so a printer that walks the
//! chain repeats it: print the message.

use std::path::{Path, PathBuf};

use crate::accounts::AccountsError;
use crate::client::ClientError;
use crate::config::ConfigError;
use crate::exit::Exit;
use crate::lock::LockError;
use crate::output_file::OutputError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Accounts(#[from] AccountsError),

    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A path the tool would write is not absent or a regular file.
    #[error(transparent)]
    Output(#[from] OutputError),

    #[error(transparent)]
    Lock(#[from] LockError),

    #[error(transparent)]
    Store(#[from] StoreError),

    /// Flags or settings that cannot go together, or a plan no key could carry out: found by
    /// looking at them, with nothing underneath. Nothing was sent.
    #[error("{0}")]
    Usage(String),

    /// `--run` or `--resume` names no run of the database (of `group`, when one is given).
    #[error("{}", no_run(.db, .run, .group, .to_resume))]
    NoSuchRun {
        db: PathBuf,
        run: String,
        group: Option<String>,
        to_resume: bool,
    },

    /// One group of a job, named, and its error.
    #[error("group {group:?}: {source}")]
    InGroup {
        group: String,
        #[source]
        source: Box<Error>,
    },

    /// A file could not be written after the work that produced it was done: requests may
    /// have been sent by then, so this is no bad input.
    #[error("{}: cannot write {what}: {source}", path.display())]
    Unwritable {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// `report --out` could not be written; nothing is sent by a report.
    #[error("cannot write the report to {}: {source}", path.display())]
    Report {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The exchange refused the key or the configuration (outside a run, which records it).
    /// The text is the exchange's reason and message: no error of ours lies beneath it.
    #[error("the exchange refused the key: {0}")]
    Refused(String),

    /// The exchange did not answer what was asked (outside a run): why, as its replies said.
    #[error("{0}")]
    Unavailable(String),

    /// `gemini-sweep sim`: the simulator's own error (its crate is the edge's to name).
    #[error(transparent)]
    Simulator(Box<dyn std::error::Error + Send + Sync>),

    /// Our fault rather than the user's: what we could not do, and why.
    #[error("internal error: cannot {doing}: {source}")]
    Internal {
        doing: &'static str,
        #[source]
        source: Cause,
    },

    /// Something that cannot happen did.
    #[error("internal error: {0}")]
    Bug(&'static str),
}

/// What failed underneath an [`Error::Internal`].
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Http(#[from] ClientError),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// How the process ends when this error ends it.
    pub fn exit(&self) -> Exit {
        use std::io::ErrorKind::*;
        match self {
            Error::Accounts(_)
            | Error::Config(_)
            | Error::Output(_)
            | Error::Usage(_)
            | Error::NoSuchRun { .. }
            | Error::Simulator(_) => Exit::BadInput,
            // A lock beside the database is the database's; one in --lock-dir, the user's.
            Error::Lock(LockError::Unusable { lock_dir: None, .. }) => Exit::Internal,
            Error::Lock(_) => Exit::BadInput,
            Error::Store(StoreError::Failed { .. }) => Exit::Internal,
            // No such database, an empty one, or a --db that is no file to write.
            Error::Store(_) => Exit::BadInput,
            Error::InGroup { source, .. } => source.exit(),
            Error::Report { source, .. } => match source.kind() {
                NotFound | PermissionDenied | IsADirectory | NotADirectory | InvalidInput
                | ReadOnlyFilesystem => Exit::BadInput,
                _ => Exit::Internal,
            },
            Error::Unwritable { .. } | Error::Internal { .. } | Error::Bug(_) => Exit::Internal,
            Error::Refused(_) => Exit::Refused,
            // What the exchange should have done may not be done.
            Error::Unavailable(_) => Exit::Incomplete,
        }
    }

    /// An internal error: what we could not do, and the cause.
    pub fn internal(doing: &'static str, cause: impl Into<Cause>) -> Error {
        Error::Internal {
            doing,
            source: cause.into(),
        }
    }
}

fn no_run(db: &Path, run: &str, group: &Option<String>, to_resume: &bool) -> String {
    let (of_group, purpose) = match (group, to_resume) {
        (Some(g), true) => (format!(" of group {g:?}"), " to resume"),
        (Some(g), false) => (format!(" in group {g:?}"), ""),
        (None, true) => (String::new(), " to resume"),
        (None, false) => (String::new(), ""),
    };
    format!(
        "{}: no run {run:?}{of_group}{purpose}; give `latest` or a run id listed by `gemini-sweep runs`",
        db.display()
    )
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_ends_the_process_with_its_code() {
        let db = || PathBuf::from("a.db");
        let io = || std::io::Error::from(std::io::ErrorKind::StorageFull);
        let bad_input = [
            Error::Usage("two flags".into()),
            Error::NoSuchRun {
                db: db(),
                run: "7".into(),
                group: None,
                to_resume: true,
            },
            StoreError::Missing { path: db() }.into(),
            Error::Report {
                path: db(),
                source: std::io::ErrorKind::NotFound.into(),
            },
        ];
        for e in &bad_input {
            assert_eq!(e.exit(), Exit::BadInput, "{e}");
        }
        let internal = [
            crate::store::store_error(&db(), crate::store::Cause::Create(io())).into(),
            Error::Unwritable {
                path: db(),
                what: "the accounts CSV",
                source: io(),
            },
            Error::Report {
                path: db(),
                source: io(),
            },
            Error::internal("write to stdout", io()),
            Error::Bug("a group's sweep panicked"),
        ];
        for e in &internal {
            assert_eq!(e.exit(), Exit::Internal, "{e}");
        }
        assert_eq!(
            Error::Refused("InvalidSignature".into()).exit(),
            Exit::Refused
        );
        assert_eq!(Error::Unavailable("down".into()).exit(), Exit::Incomplete);
        let in_group = Error::InGroup {
            group: "desk-a".into(),
            source: Box::new(Error::Usage("no".into())),
        };
        assert_eq!(in_group.exit(), Exit::BadInput);
        assert_eq!(in_group.to_string(), "group \"desk-a\": no");
    }

    #[test]
    fn the_cause_stays_in_the_message_and_behind_source() {
        use std::error::Error as _;
        let e = Error::internal("write to stdout", std::io::Error::other("disk on fire"));
        assert_eq!(
            e.to_string(),
            "internal error: cannot write to stdout: disk on fire"
        );
        let cause = e.source().expect("a source").to_string();
        assert_eq!(cause, "disk on fire");
        let no_run = |group: Option<&str>, to_resume| {
            Error::NoSuchRun {
                db: "a.db".into(),
                run: "latest".into(),
                group: group.map(str::to_owned),
                to_resume,
            }
            .to_string()
        };
        assert!(
            no_run(Some("g"), true)
                .starts_with("a.db: no run \"latest\" of group \"g\" to resume; "),
            "{}",
            no_run(Some("g"), true)
        );
        assert!(no_run(Some("g"), false).starts_with("a.db: no run \"latest\" in group \"g\"; "));
        assert!(no_run(None, false).starts_with("a.db: no run \"latest\"; give `latest`"));
    }
}
