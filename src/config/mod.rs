//! The one configuration struct a sweep is given, and the rules it must meet.
//!
//! - [`endpoint`]: which exchange URLs and proxies requests may go to.
//! - [`credentials`]: the key and its secret, from the environment or a secret file.
//! - [`groups`]: a `--config` file of several groups, each with its own key.
//!
//! The command line that fills it in is the edge's ([`crate::cli`]): nothing here knows clap.

pub mod credentials;
pub mod endpoint;
pub mod groups;

use std::path::PathBuf;
use std::time::Duration;

use crate::client::NonceMode;
pub use credentials::KeyError;
pub use endpoint::UrlError;
pub use groups::{ConfigFileError, FileProblem};

/// Settings that cannot be used as given (flags, the environment, a `--config` file); nothing
/// was sent.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Boxed: the file's errors carry the most (its path, the place, what is wrong there).
    #[error(transparent)]
    File(Box<ConfigFileError>),
}

impl From<ConfigFileError> for ConfigError {
    fn from(e: ConfigFileError) -> ConfigError {
        ConfigError::File(Box::new(e))
    }
}

/// A hold's length that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("{text:?} is not a duration such as 20s, 10m or 1h30m ({source})")]
    NotADuration {
        text: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error("{text:?}: a hold lasts at most 24h")]
    TooLong { text: String },
}

pub const PRODUCTION_URL: &str = "https://api.gemini.com";
pub const SANDBOX_URL: &str = "https://api.sandbox.gemini.com";

pub const ENV_API_KEY: &str = "GEMINI_API_KEY";
pub const ENV_API_SECRET: &str = "GEMINI_API_SECRET";

/// Everything a sweep needs, validated. Stored with the run (as `runs.options`) so that
/// `--resume` can carry on with the same settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SweepConfig {
    pub accounts_file: PathBuf,
    pub base_url: String,
    pub rate: f64,
    pub burst: u32,
    pub concurrency: u32,
    #[serde(serialize_with = "as_secs", deserialize_with = "from_secs")]
    pub timeout: Duration,
    pub max_attempts: u32,
    pub reject_retries: u32,
    /// List open orders after the cancel-all: the proof an account is flat.
    pub verify: bool,
    /// List open orders before the cancel-all too, for their details (`--snapshot`).
    #[serde(default)]
    pub snapshot: bool,
    pub nonce_mode: NonceMode,
    pub db: PathBuf,
    /// Where the key's lock lives; `None`: beside the database.
    pub lock_dir: Option<PathBuf>,
    /// The only proxy requests may use (validated); `None`: no proxy at all.
    #[serde(default)]
    pub proxy: Option<String>,
    /// The group (master key) this sweep works for; `default` without a group configuration.
    #[serde(default = "default_group")]
    pub group: String,
    /// First back-off pause after a failed attempt; doubles with each further failure.
    #[serde(serialize_with = "as_secs", deserialize_with = "from_secs")]
    pub retry_base: Duration,
    /// How long requests in flight may finish after a stop signal.
    #[serde(serialize_with = "as_secs", deserialize_with = "from_secs")]
    pub grace: Duration,
    /// How long the run keeps the group flat after its sweep (`--hold`); zero: no hold.
    #[serde(default, serialize_with = "as_secs", deserialize_with = "from_secs")]
    pub hold: Duration,
}

/// The longest `--hold`: a day. A desk that needs longer schedules runs.
pub const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);

/// A hold's length as an operator writes it: `20s`, `10m`, `1h30m` (or plain seconds).
pub fn parse_hold(text: &str) -> Result<Duration, HoldError> {
    let text = text.trim();
    let hold = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text).map_err(|source| HoldError::NotADuration {
            text: text.to_owned(),
            source,
        })?,
    };
    if hold > MAX_HOLD {
        let text = text.to_owned();
        return Err(HoldError::TooLong { text });
    }
    Ok(hold)
}

fn default_group() -> String {
    DEFAULT_GROUP.to_string()
}

pub const DEFAULT_GROUP: &str = "default";

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn from_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = <f64 as serde::Deserialize>::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

impl SweepConfig {
    /// Requests an account costs when nothing fails: the cancel-all, the listing that proves it
    /// (unless --no-verify) and the one before it (with --snapshot).
    pub fn calls_per_account(&self) -> usize {
        1 + usize::from(self.verify) + usize::from(self.snapshot)
    }

    pub fn base_url(&self) -> reqwest::Url {
        reqwest::Url::parse(&self.base_url).expect("validated when the config was built")
    }

    pub fn proxy_url(&self) -> Option<reqwest::Url> {
        self.proxy
            .as_deref()
            .map(|p| reqwest::Url::parse(p).expect("validated when the config was built"))
    }
}

impl SweepConfig {
    /// The built-in defaults, before any flag.
    pub fn defaults(accounts_file: PathBuf, db: PathBuf) -> SweepConfig {
        SweepConfig {
            accounts_file,
            base_url: PRODUCTION_URL.to_string(),
            rate: 5.0,
            burst: 1,
            concurrency: 8,
            timeout: Duration::from_secs(10),
            max_attempts: 5,
            reject_retries: 1,
            verify: true,
            snapshot: false,
            nonce_mode: NonceMode::Increasing,
            db,
            lock_dir: None,
            proxy: None,
            group: default_group(),
            retry_base: Duration::from_millis(250),
            grace: Duration::from_secs(15),
            hold: Duration::ZERO,
        }
    }
}
