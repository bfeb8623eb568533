//! The API key and its secret: the key from the environment, the secret from the environment
//! or the first line of a small file. Messages name the variable or file, never a value.

use std::path::{Path, PathBuf};

use secrecy::SecretString;

use crate::client::Credentials;
use crate::config::{ENV_API_KEY, ENV_API_SECRET};
use crate::input_file::{FileError, InputFile};

/// Why a key cannot be loaded: the variable or file to fix, never a value.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{var} is not set; export the API key (master-...) in the environment")]
    KeyNotSet { var: String },
    #[error("{var} contains whitespace or control characters; check how it was exported")]
    KeyMalformed { var: String },
    #[error("{var} is not set; export it or give {file_setting}")]
    SecretNotSet {
        var: String,
        file_setting: &'static str,
    },
    #[error(transparent)]
    SecretFile(#[from] FileError),
    #[error(
        "{}: the API secret file's first line is empty; put the secret on line 1",
        path.display()
    )]
    EmptySecretFile { path: PathBuf },
}

pub fn load(
    secret_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, KeyError> {
    let source = KeySource {
        key_env: ENV_API_KEY,
        secret_env: ENV_API_SECRET,
        secret_file,
        secret_file_setting: "--api-secret-file FILE",
    };
    source.load(env)
}

/// Where one key's id and secret come from: environment variables, or the secret from a file.
pub(crate) struct KeySource<'a> {
    pub key_env: &'a str,
    pub secret_env: &'a str,
    pub secret_file: Option<&'a Path>,
    /// How the user names a secret file here, for the hint when the secret is missing.
    pub secret_file_setting: &'static str,
}

impl KeySource<'_> {
    /// The credentials, or which variable or file to fix (never their values).
    pub fn load(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, KeyError> {
        let var = self.key_env.to_owned();
        let Some(key) = env(&var)
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
        else {
            return Err(KeyError::KeyNotSet { var });
        };
        if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(KeyError::KeyMalformed { var });
        }
        let secret = match self.secret_file {
            Some(path) => read_secret_file(path)?,
            None => env(self.secret_env)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| KeyError::SecretNotSet {
                    var: self.secret_env.to_owned(),
                    file_setting: self.secret_file_setting,
                })?,
        };
        Ok(Credentials {
            key,
            secret: SecretString::from(secret),
        })
    }
}

/// The most an API secret file may hold: a secret is a few dozen characters on line 1.
pub const MAX_SECRET_FILE_BYTES: u64 = 4 * 1024;

const SECRET_FILE: InputFile = InputFile {
    what: "API secret file",
    max_bytes: MAX_SECRET_FILE_BYTES,
    hint: "put the secret on the first line of a regular file (chmod 600)",
    text_hint: "",
};

/// The secret on the first line of `path`, a regular file of at most
/// [`MAX_SECRET_FILE_BYTES`].
fn read_secret_file(path: &Path) -> Result<String, KeyError> {
    let (text, meta) = SECRET_FILE.read_text_at(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "the API secret file is readable by group or others; chmod 600 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.is_empty() {
        let path = path.to_path_buf();
        return Err(KeyError::EmptySecretFile { path });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_environment() {
        let env = |name: &str| match name {
            ENV_API_KEY => Some("master-abc".to_string()),
            ENV_API_SECRET => Some(" s3cret \n".to_string()),
            _ => None,
        };
        let creds = load(None, &env).unwrap();
        assert_eq!(creds.key, "master-abc");
        use secrecy::ExposeSecret;
        assert_eq!(creds.secret.expose_secret(), "s3cret");

        let no_secret = |name: &str| (name == ENV_API_KEY).then(|| "master-abc".to_string());
        let msg = load(None, &no_secret).unwrap_err().to_string();
        assert!(msg.contains(ENV_API_SECRET), "{msg}");
        let msg = load(None, &|_| None).unwrap_err().to_string();
        assert!(msg.contains(ENV_API_KEY), "{msg}");
    }

    #[test]
    fn the_secret_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "line-one\nline-two\n").unwrap();
        let env = |name: &str| (name == ENV_API_KEY).then(|| "master-abc".to_string());
        let creds = load(Some(&file), &env).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(creds.secret.expose_secret(), "line-one");
        std::fs::write(&file, "\n").unwrap();
        assert!(load(Some(&file), &env).is_err());
    }

    #[test]
    fn a_secret_file_is_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let env = |name: &str| (name == ENV_API_KEY).then(|| "master-abc".to_string());
        let refused = |path: &Path| {
            let err = load(Some(path), &env).unwrap_err();
            assert!(matches!(err, KeyError::SecretFile(_)), "{err}");
            err.to_string()
        };
        let msg = refused(dir.path());
        assert!(msg.contains("a directory, not a regular file"), "{msg}");
        let big = dir.path().join("big");
        let mut text = "s3cret\n".to_string();
        text.push_str(&"#".repeat(MAX_SECRET_FILE_BYTES as usize));
        std::fs::write(&big, &text).unwrap();
        let msg = refused(&big);
        assert!(msg.contains("at most 4096"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
        #[cfg(unix)]
        {
            let msg = refused(Path::new("/dev/zero"));
            assert!(msg.contains("a character device"), "{msg}");
        }
    }
}
