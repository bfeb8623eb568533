//! How every file the user names is read (the API secret, `--config`, `--accounts`,
//! `--exclude-file`): a regular file, of at most a size fit for what it holds. Anything else is
//! refused before a byte is read: opening a FIFO would wait for a writer forever, and a device
//! such as /dev/zero never ends.

use std::fs::Metadata;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// One kind of input file: what the messages call it, how big it may be, and what to tell
/// the user when it is not such a file.
pub struct InputFile {
    /// As messages name it: "API secret file", "configuration file".
    pub what: &'static str,
    pub max_bytes: u64,
    /// Said after a refusal for its kind or size: what the file should be.
    pub hint: &'static str,
    /// Said after "is not UTF-8 text", for a file read as text: what text it should hold.
    pub text_hint: &'static str,
}

/// Why a file the user named cannot be used, as the message says it after the path: never
/// anything of the file's content.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read the {what} ({source}); check the path and its permissions")]
    Unreadable {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("is {kind}, not a regular file ({what} expected); {hint}")]
    NotAFile {
        what: &'static str,
        kind: &'static str,
        hint: &'static str,
    },
    #[error("is {len} bytes (at most {max}): too big for the {what}; {hint}")]
    TooBig {
        what: &'static str,
        len: u64,
        max: u64,
        hint: &'static str,
    },
    /// It grew past the limit while it was read.
    #[error("holds more than {max} bytes: too big for the {what}; {hint}")]
    Grew {
        what: &'static str,
        max: u64,
        hint: &'static str,
    },
    #[error("the {what} is not UTF-8 text{hint}")]
    NotText {
        what: &'static str,
        hint: &'static str,
        #[source]
        source: std::str::Utf8Error,
    },
}

/// A file the user named that cannot be used: its path, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub problem: InputError,
}

impl InputFile {
    /// The file's bytes and what it was when read, or why it cannot be used.
    pub fn read(&self, path: &Path) -> Result<(Vec<u8>, Metadata), InputError> {
        let what = self.what;
        let cannot_read = |source| InputError::Unreadable { what, source };
        // Checked before opening (the open itself would block on a FIFO), then again on what was
        // opened, in case the path changed in between; the read is bounded whatever the size says.
        self.acceptable(&std::fs::metadata(path).map_err(cannot_read)?)?;
        let file = std::fs::File::open(path).map_err(cannot_read)?;
        let meta = file.metadata().map_err(cannot_read)?;
        self.acceptable(&meta)?;
        let mut bytes = Vec::new();
        file.take(self.max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot_read)?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(InputError::Grew {
                what,
                max: self.max_bytes,
                hint: self.hint,
            });
        }
        Ok((bytes, meta))
    }

    /// [`InputFile::read`], for a file that holds UTF-8 text.
    pub fn read_text(&self, path: &Path) -> Result<(String, Metadata), InputError> {
        let (bytes, meta) = self.read(path)?;
        let text = String::from_utf8(bytes).map_err(|e| InputError::NotText {
            what: self.what,
            hint: self.text_hint,
            source: e.utf8_error(),
        })?;
        Ok((text, meta))
    }

    /// [`InputFile::read_text`], the error naming the path.
    pub fn read_text_at(&self, path: &Path) -> Result<(String, Metadata), FileError> {
        self.read_text(path).map_err(|problem| FileError {
            path: path.to_path_buf(),
            problem,
        })
    }

    fn acceptable(&self, meta: &Metadata) -> Result<(), InputError> {
        let (what, hint) = (self.what, self.hint);
        if !meta.is_file() {
            let kind = file_kind(meta);
            return Err(InputError::NotAFile { what, kind, hint });
        }
        if meta.len() > self.max_bytes {
            let (len, max) = (meta.len(), self.max_bytes);
            return Err(InputError::TooBig {
                what,
                len,
                max,
                hint,
            });
        }
        Ok(())
    }
}

/// What a path that is not a regular file is, for the message.
pub(crate) fn file_kind(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}
