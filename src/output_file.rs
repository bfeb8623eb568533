//! How every path the tool writes is checked (`report --out`, `accounts --csv`,
//! `--metrics-file`, `--db` with SQLite's files and the lock beside it, the key's lock in
//! `--lock-dir`), as [`crate::input_file`] does for the files it reads.
//!
//! A path that is absent or a regular file is written. Anything else is refused before the work
//! that would write it, and again just before the write: a device, a FIFO or a socket, because
//! renaming over it replaces it (as root, `--out /dev/null` turned the machine's /dev/null into
//! a regular file); a symbolic link, because the rename replaces the link instead of writing
//! through it, and following links in a directory others can write to is the classic symlink
//! attack; a directory, because it cannot be a file.

use std::fs::Metadata;
use std::path::{Path, PathBuf};

/// Why a path cannot be written: what stands there. The [`OutputError`] around it names the
/// path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("is a symbolic link, which would be replaced rather than written through")]
    Symlink,
    #[error("is {0}, which is never replaced")]
    Special(&'static str),
    #[error("is a directory")]
    Directory,
    #[error("names no file")]
    NoFileName,
    #[error("the directory {} does not exist", .0.display())]
    MissingDirectory(PathBuf),
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot be looked at ({0}); check the path and its permissions")]
    Unreadable(#[source] std::io::Error),
}

/// What the user can do about a refused path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// The user named the path: name another (`-` too, where it means standard output).
    NameAnother { stdout: bool },
    /// The tool derives the path from one the user named (SQLite's `-wal`, a lock file): move
    /// what stands there away, or name another file for the flag.
    MoveAway { flag: &'static str },
}

impl Remedy {
    /// The advice after `refusal`, with its leading `; `, or nothing when the refusal says it.
    fn after(&self, refusal: &Refusal) -> String {
        let or_stdout = |stdout: bool| {
            if stdout {
                " or `-` for standard output"
            } else {
                ""
            }
        };
        match (self, refusal) {
            (
                _,
                Refusal::MissingDirectory(_) | Refusal::NotADirectory(_) | Refusal::Unreadable(_),
            ) => String::new(),
            (Remedy::NameAnother { stdout }, Refusal::Symlink) => {
                format!("; give the path of the link's target{}", or_stdout(*stdout))
            }
            (Remedy::NameAnother { stdout }, _) => {
                format!("; name a regular file{}", or_stdout(*stdout))
            }
            (Remedy::MoveAway { flag }, _) => {
                format!("; move it away, or give another {flag}")
            }
        }
    }
}

/// A refused output: the flag and path as the user gave them, what stands there, and what to
/// do about it.
#[derive(Debug, thiserror::Error)]
#[error("{subject}: {refusal}{}", .remedy.after(.refusal))]
pub struct OutputError {
    /// `--out report.csv`, or `--db a.db: its WAL file a.db-wal` for a file the tool derives.
    pub subject: String,
    #[source]
    pub refusal: Refusal,
    pub remedy: Remedy,
}

impl OutputError {
    /// What is wrong and what to do, without the subject (for a caller that names the path).
    pub fn problem(&self) -> String {
        format!("{}{}", self.refusal, self.remedy.after(&self.refusal))
    }

    /// A device, a FIFO, a socket or a link: something that must never be replaced.
    pub fn is_special(&self) -> bool {
        matches!(self.refusal, Refusal::Symlink | Refusal::Special(_))
    }
}

/// Where a report or a CSV goes: `-` is standard output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

/// `path` as an output that `-` may send to standard output, checked.
pub fn output(flag: &str, path: &Path) -> Result<Output, OutputError> {
    if path == Path::new("-") {
        return Ok(Output::Stdout);
    }
    check(path).map_err(|refusal| OutputError {
        subject: format!("{flag} {}", path.display()),
        refusal,
        remedy: Remedy::NameAnother { stdout: true },
    })?;
    Ok(Output::File(path.to_path_buf()))
}

/// `path` checked as a file `flag` names (`-` is no special name here).
pub fn file(flag: &str, path: &Path) -> Result<(), OutputError> {
    check(path).map_err(|refusal| OutputError {
        subject: format!("{flag} {}", path.display()),
        refusal,
        remedy: Remedy::NameAnother { stdout: false },
    })
}

/// A file the tool puts beside one the user named with `flag` (`what` its role, `path` where
/// it goes), as `--db a.db: its WAL file a.db-wal: ...`.
pub fn derived(
    flag: &'static str,
    given: &Path,
    what: &str,
    path: &Path,
) -> Result<(), OutputError> {
    check(path).map_err(|refusal| derived_error(flag, given, what, path, refusal))
}

/// The refusal of a file the tool derives, for callers that find it refused themselves.
pub fn derived_error(
    flag: &'static str,
    given: &Path,
    what: &str,
    path: &Path,
    refusal: Refusal,
) -> OutputError {
    OutputError {
        subject: format!("{flag} {}: its {what} {}", given.display(), path.display()),
        refusal,
        remedy: Remedy::MoveAway { flag },
    }
}

/// Whether `path` may be written: absent (in a directory that exists) or a regular file. The
/// path itself is never followed if it is a link; its directory may be one.
pub fn check(path: &Path) -> Result<(), Refusal> {
    if path.file_name().is_none() {
        return Err(Refusal::NoFileName);
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => acceptable(&meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = directory_of(path);
            match std::fs::metadata(dir) {
                Ok(meta) if meta.is_dir() => Ok(()),
                Ok(_) => Err(Refusal::NotADirectory(dir.to_path_buf())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Refusal::MissingDirectory(dir.to_path_buf()))
                }
                Err(e) => Err(Refusal::Unreadable(e)),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(Refusal::NotADirectory(directory_of(path).to_path_buf()))
        }
        Err(e) => Err(Refusal::Unreadable(e)),
    }
}

/// Whether an existing file, as `symlink_metadata` or `File::metadata` describes it, may be
/// written.
pub fn acceptable(meta: &Metadata) -> Result<(), Refusal> {
    let kind = meta.file_type();
    if kind.is_file() {
        Ok(())
    } else if kind.is_symlink() {
        Err(Refusal::Symlink)
    } else if kind.is_dir() {
        Err(Refusal::Directory)
    } else {
        Err(Refusal::Special(crate::input_file::file_kind(meta)))
    }
}

/// The directory `path` is in (`.` for a bare name).
pub fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_and_regular_files_pass_and_the_rest_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.csv");
        assert!(check(&file).is_ok());
        std::fs::write(&file, "x").unwrap();
        assert!(check(&file).is_ok());
        assert!(matches!(check(dir.path()), Err(Refusal::Directory)));
        assert!(matches!(check(Path::new("/")), Err(Refusal::NoFileName)));
        let missing = dir.path().join("nope");
        assert!(matches!(
            check(&missing.join("r.csv")),
            Err(Refusal::MissingDirectory(dir)) if dir == missing
        ));
        assert!(matches!(
            check(&file.join("r.csv")),
            Err(Refusal::NotADirectory(dir)) if dir == file
        ));
    }

    #[cfg(unix)]
    #[test]
    fn links_fifos_and_sockets_are_refused_and_a_linked_directory_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(check(&link), Err(Refusal::Symlink)));
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("absent"), &dangling).unwrap();
        assert!(matches!(check(&dangling), Err(Refusal::Symlink)));

        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(matches!(
            check(&fifo),
            Err(Refusal::Special("a FIFO (named pipe)"))
        ));
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert!(matches!(check(&socket), Err(Refusal::Special("a socket"))));

        // A directory reached through a link (Debian's /var/lock is one) holds files as usual.
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        assert!(check(&linked.join("x.lock")).is_ok());
    }

    #[test]
    fn the_message_names_the_flag_and_path_and_offers_stdout_where_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let err = output("--out", dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "--out {}: is a directory; name a regular file or `-` for standard output",
                dir.path().display()
            )
        );
        let err = file("--metrics-file", dir.path()).unwrap_err().to_string();
        assert!(
            err.ends_with("is a directory; name a regular file"),
            "{err}"
        );
        assert!(matches!(
            output("--csv", Path::new("-")),
            Ok(Output::Stdout)
        ));
        let wal = dir.path().join("a.db-wal");
        std::fs::create_dir(&wal).unwrap();
        let err = derived("--db", &dir.path().join("a.db"), "WAL file", &wal)
            .unwrap_err()
            .to_string();
        let expected = format!(
            "--db {}: its WAL file {}: is a directory; move it away, or give another --db",
            dir.path().join("a.db").display(),
            wal.display()
        );
        assert_eq!(err, expected);
    }
}
