//! How every file the user names is read (the API secret, `--config`, `--accounts`,
//! `--exclude-file`): a regular file, of at most a size fit for what it holds. Anything else is
//! refused before a byte is read: opening a FIFO would wait for a writer forever, and a device
//! such as /dev/zero never ends.

use std::fs::Metadata;
use std::io::Read as _;
use std::path::Path;

/// One kind of input file: what the messages call it, how big it may be, and what to tell
/// the user when it is not such a file.
pub struct InputFile {
    /// As messages name it: "API secret file", "configuration file".
    pub what: &'static str,
    pub max_bytes: u64,
    /// Said after a refusal for its kind or size: what the file should be.
    pub hint: &'static str,
}

impl InputFile {
    /// The file's bytes and what it was when read, or why it cannot be used, as a message that
    /// names neither the path (the caller does) nor anything of its content.
    pub fn read(&self, path: &Path) -> Result<(Vec<u8>, Metadata), String> {
        let what = self.what;
        let cannot_read = |e: std::io::Error| {
            format!("cannot read the {what} ({e}); check the path and its permissions")
        };
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
            return Err(format!(
                "holds more than {} bytes: too big for the {what}; {}",
                self.max_bytes, self.hint
            ));
        }
        Ok((bytes, meta))
    }

    fn acceptable(&self, meta: &Metadata) -> Result<(), String> {
        if !meta.is_file() {
            return Err(format!(
                "is {}, not a regular file ({} expected); {}",
                file_kind(meta),
                self.what,
                self.hint
            ));
        }
        if meta.len() > self.max_bytes {
            return Err(format!(
                "is {} bytes (at most {}): too big for the {}; {}",
                meta.len(),
                self.max_bytes,
                self.what,
                self.hint
            ));
        }
        Ok(())
    }
}

/// What a path that is not a regular file is, for the message.
fn file_kind(meta: &Metadata) -> &'static str {
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
