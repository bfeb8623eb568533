//! Files other programs read while we may be writing them (the reports, the metrics file, the
//! accounts CSV): written whole or not at all.

use std::io::Write;
use std::path::Path;

use crate::output_file;

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, synced, then
/// renamed over it), with exactly `mode` whatever the umask: a reader never sees half a file.
/// The temporary file has an unguessable name, is created exclusively (a symlink planted in the
/// directory is never followed), and is removed whatever stops the write before the rename.
/// `path` must be absent or a regular file ([`output_file::check`]), checked again right before
/// the rename: a device, a FIFO, a socket or a link found there is left as it is (an error of
/// kind `InvalidInput`). Errors name neither `path` (the caller does) nor the temporary file.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let refused = |r: output_file::Refusal| Error::new(ErrorKind::InvalidInput, r.to_string());
    output_file::check(path).map_err(refused)?;
    let name = path.file_name().expect("checked: names a file");
    let dir = output_file::directory_of(path);
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut file = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "cannot create a file in {}: {}",
                    dir.display(),
                    without_path(&e)
                ),
            )
        })?;
    // The umask may have taken bits away from `mode`; set it exactly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    // What stands at the path may have changed while the bytes were produced (a run's metrics
    // are written when it ends): looked at again, as late as a rename allows.
    output_file::check(path).map_err(refused)?;
    file.persist(path).map_err(|e| e.error)?;
    // The rename is durable once the directory is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An error of tempfile's without the temporary path it adds (which the user never gave).
fn without_path(e: &std::io::Error) -> String {
    let inner = e
        .get_ref()
        .and_then(|inner| inner.source())
        .and_then(|source| source.downcast_ref::<std::io::Error>());
    match inner {
        Some(source) => source.to_string(),
        None => std::io::Error::from(e.kind()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_file_is_written_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.html");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&path, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
        assert!(write(&dir.path().join("missing/report.html"), b"x", 0o600).is_err());
    }

    /// Symlinks planted at the names an earlier version used for its temporary file redirect
    /// nothing, and one at the file itself is refused, not replaced: the victim is untouched.
    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_not_followed_and_a_link_at_the_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        let path = dir.path().join("group.csv");
        for attempt in 0..3 {
            let tmp = dir
                .path()
                .join(format!(".group.csv.{}.{attempt}.tmp", std::process::id()));
            std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        }
        write(&path, b"account\n", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "{meta:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "account\n");

        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = write(&link, b"x", 0o600).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    }

    /// A missing directory is named as the user gave it, not as the temporary file's.
    #[test]
    fn a_missing_directory_is_named_without_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = write(&missing.join("r.csv"), b"x", 0o600).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&*missing.display().to_string()), "{text}");
        assert!(!text.contains(".r.csv."), "{text}");
    }

    #[test]
    fn a_directory_in_the_way_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        assert!(write(&target, b"x", 0o600).is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["out"]);
    }
}
