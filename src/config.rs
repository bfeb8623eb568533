//! The command line, and the one configuration struct built from it and passed down.
//!
//! clap types stop here: the rest of the library sees [`SweepConfig`] and [`Credentials`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

use crate::client::{Credentials, NonceMode};
use crate::error::Error;

pub const PRODUCTION_URL: &str = "https://api.gemini.com";
pub const SANDBOX_URL: &str = "https://api.sandbox.gemini.com";

pub const ENV_API_KEY: &str = "GEMINI_API_KEY";
pub const ENV_API_SECRET: &str = "GEMINI_API_SECRET";

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    every account swept and verified flat, no order left rejected
  1    the run finished, but some account failed, some order stayed rejected,
       or some account is not verified flat
  2    bad input or configuration: nothing was sent
  3    internal, database or environment error
  130  interrupted by SIGINT;  143  interrupted by SIGTERM

Credentials come from the environment (GEMINI_API_KEY, GEMINI_API_SECRET) or
--api-secret-file, never from the command line.";

#[derive(Debug, Parser)]
#[command(
    name = "gemini-sweep",
    version,
    about = "Cancel every open order on every Gemini subaccount, under one rate limit, with an SQLite audit trail",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr (RUST_LOG sets the level; default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "GEMINI_SWEEP_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cancel every open order of every enabled account in the CSV.
    #[command(after_help = EXIT_CODES_HELP)]
    Run(RunArgs),
    /// Sweep a built-in simulated exchange: no keys, no network, a few seconds.
    Demo(DemoArgs),
    /// Serve a simulated Gemini exchange on 127.0.0.1, for rehearsals and tests.
    Sim(crate::sim::cli::SimArgs),
    /// Print a run's reconciliation, per account and in total, from the database.
    Report(ReportArgs),
    /// List the runs in the database, newest first.
    Runs(RunsArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Accounts CSV: header row with an `account` column; optional `enabled`, `note`.
    #[arg(
        long,
        value_name = "FILE",
        env = "GEMINI_SWEEP_ACCOUNTS",
        required_unless_present = "resume"
    )]
    pub accounts: Option<PathBuf>,

    /// Finish an earlier run (`latest` or a run id): only its unfinished accounts, under the same
    /// run id, with the run's stored accounts, URL and options (flags given here override them).
    /// (--accounts and GEMINI_SWEEP_ACCOUNTS are then ignored.)
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,

    /// With --resume: also retry accounts that failed on a permanent error.
    #[arg(long, requires = "resume")]
    pub retry_permanent: bool,

    /// Seconds in-flight requests may take to finish after SIGINT/SIGTERM before they are
    /// abandoned [default: 15].
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = positive_secs)]
    pub grace: Option<f64>,

    /// Read the API secret from the first line of FILE instead of GEMINI_API_SECRET.
    #[arg(long, value_name = "FILE")]
    pub api_secret_file: Option<PathBuf>,

    /// Exchange base URL; plain http:// only to loopback addresses.
    #[arg(
        long,
        value_name = "URL",
        env = "GEMINI_BASE_URL",
        conflicts_with = "sandbox"
    )]
    pub base_url: Option<String>,

    /// Use Gemini's sandbox (https://api.sandbox.gemini.com).
    #[arg(long)]
    pub sandbox: bool,

    /// Requests per second for the whole key (all accounts share it) [default: 5].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = positive_rate, env = "GEMINI_SWEEP_RATE")]
    pub rate: Option<f64>,

    /// Requests the limiter lets through back to back before spacing them at --rate [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub burst: Option<u32>,

    /// Requests in flight at once [default: 8].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=1024), env = "GEMINI_SWEEP_CONCURRENCY")]
    pub concurrency: Option<u32>,

    /// Seconds one request may take, connection included [default: 10].
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = positive_secs)]
    pub timeout: Option<f64>,

    /// Attempts per call before an account is given up (transient errors only) [default: 5].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: Option<u32>,

    /// Extra cancel-alls for an account whose orders were rejected, to catch briefly stuck ones
    /// [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub reject_retries: Option<u32>,

    /// The key's nonce mode, as set when the key was created on Gemini [default: increasing].
    #[arg(long, value_enum)]
    pub nonce_mode: Option<NonceModeArg>,

    /// SQLite database for the audit trail; created and migrated on first use.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "gemini-sweep.db",
        env = "GEMINI_SWEEP_DB"
    )]
    pub db: PathBuf,

    /// Where the per-key lock file lives (one run per API key on this machine) [default: the temp dir].
    #[arg(long, value_name = "DIR", env = "GEMINI_SWEEP_LOCK_DIR")]
    pub lock_dir: Option<PathBuf>,

    /// Skip listing open orders before and after the cancel-all (one request per account instead
    /// of three; the run then cannot prove the account is flat).
    #[arg(long)]
    pub no_verify: bool,

    /// Validate everything and print the plan; send nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NonceModeArg {
    /// Milliseconds, strictly increasing (the exchange's default).
    Increasing,
    /// Seconds with a fraction, within 30 s of exchange time.
    Time,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo writes its audit trail.
    #[arg(long, value_name = "FILE", default_value = "gemini-sweep-demo.db")]
    pub db: PathBuf,

    /// Subaccounts in the simulated group.
    #[arg(long, value_name = "N", default_value_t = 36, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub accounts: u32,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The database a run wrote.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "gemini-sweep.db",
        env = "GEMINI_SWEEP_DB"
    )]
    pub db: PathBuf,

    /// `latest` or a run id.
    #[arg(long, value_name = "RUN", default_value = "latest")]
    pub run: String,

    #[arg(long, value_enum, default_value_t = crate::report::Format::Table)]
    pub format: crate::report::Format,

    /// Which accounts to list (the run total is always there).
    #[arg(long, value_enum, default_value_t = crate::report::Only::All)]
    pub only: crate::report::Only,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The database runs wrote.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "gemini-sweep.db",
        env = "GEMINI_SWEEP_DB"
    )]
    pub db: PathBuf,

    #[arg(long, value_enum, default_value_t = crate::report::Format::Table)]
    pub format: crate::report::Format,

    /// How many runs, newest first.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: u32,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(v.is_finite() && v > 0.0 && v <= 100_000.0) {
        return Err("must be above 0 and at most 100000 requests per second".into());
    }
    Ok(v)
}

fn positive_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
        return Err("must be above 0 and at most 3600 seconds".into());
    }
    Ok(v)
}

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
    /// List open orders before and after the cancel-all, for reconciliation.
    pub verify: bool,
    pub nonce_mode: NonceMode,
    pub db: PathBuf,
    pub lock_dir: PathBuf,
    /// First back-off pause after a failed attempt; doubles with each further failure.
    #[serde(serialize_with = "as_secs", deserialize_with = "from_secs")]
    pub retry_base: Duration,
    /// How long requests in flight may finish after a stop signal.
    #[serde(serialize_with = "as_secs", deserialize_with = "from_secs")]
    pub grace: Duration,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn from_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = <f64 as serde::Deserialize>::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

impl SweepConfig {
    /// Requests an account costs when nothing fails: snapshot, cancel-all and verify, or just the
    /// cancel-all without verification.
    pub fn calls_per_account(&self) -> usize {
        if self.verify { 3 } else { 1 }
    }

    pub fn base_url(&self) -> reqwest::Url {
        reqwest::Url::parse(&self.base_url).expect("validated when the config was built")
    }
}

impl RunArgs {
    /// Builds the configuration of a new run; `env` looks up environment variables (injected
    /// for tests).
    pub fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(SweepConfig, Credentials), Error> {
        let defaults = SweepConfig {
            accounts_file: self.accounts.clone().unwrap_or_default(),
            base_url: PRODUCTION_URL.to_string(),
            rate: 5.0,
            burst: 1,
            concurrency: 8,
            timeout: Duration::from_secs(10),
            max_attempts: 5,
            reject_retries: 1,
            verify: true,
            nonce_mode: NonceMode::Increasing,
            db: self.db.clone(),
            lock_dir: std::env::temp_dir(),
            retry_base: Duration::from_millis(250),
            grace: Duration::from_secs(15),
        };
        self.resolve_over(defaults, env)
    }

    /// Applies the flags that were given over `base` (the defaults, or a resumed run's stored
    /// options), validates the URL and loads the credentials.
    pub fn resolve_over(
        &self,
        mut config: SweepConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(SweepConfig, Credentials), Error> {
        match (&self.base_url, self.sandbox) {
            (_, true) => config.base_url = SANDBOX_URL.to_string(),
            (Some(url), false) => config.base_url = url.clone(),
            (None, false) => {}
        }
        config.base_url = validate_base_url(&config.base_url)?.to_string();
        if let Some(v) = self.rate {
            config.rate = v;
        }
        if let Some(v) = self.burst {
            config.burst = v;
        }
        if let Some(v) = self.concurrency {
            config.concurrency = v;
        }
        if let Some(v) = self.timeout {
            config.timeout = Duration::from_secs_f64(v);
        }
        if let Some(v) = self.max_attempts {
            config.max_attempts = v;
        }
        if let Some(v) = self.reject_retries {
            config.reject_retries = v;
        }
        if let Some(v) = self.grace {
            config.grace = Duration::from_secs_f64(v);
        }
        if self.no_verify {
            config.verify = false;
        }
        if let Some(mode) = self.nonce_mode {
            config.nonce_mode = match mode {
                NonceModeArg::Increasing => NonceMode::Increasing,
                NonceModeArg::Time => NonceMode::Time,
            };
        }
        config.db = self.db.clone();
        if let Some(dir) = &self.lock_dir {
            config.lock_dir = dir.clone();
        }
        let credentials = load_credentials(self.api_secret_file.as_deref(), env)?;
        Ok((config, credentials))
    }
}

/// https anywhere; http only where the traffic cannot leave the machine.
pub fn validate_base_url(text: &str) -> Result<reqwest::Url, Error> {
    let url = reqwest::Url::parse(text).map_err(|e| {
        Error::Config(format!(
            "--base-url {text:?} is not a URL ({e}); e.g. {SANDBOX_URL}"
        ))
    })?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if loopback => {}
        "http" => {
            return Err(Error::Config(format!(
                "--base-url {text}: plain http:// is allowed only to loopback addresses (127.0.0.1, ::1, localhost); use https://"
            )));
        }
        _ => {
            return Err(Error::Config(format!(
                "--base-url {text}: must be an https:// URL, e.g. {SANDBOX_URL}"
            )));
        }
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(Error::Config(format!(
            "--base-url {text}: give only scheme, host and port (the endpoint paths are added)"
        )));
    }
    Ok(url)
}

fn load_credentials(
    secret_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, Error> {
    let key = env(ENV_API_KEY)
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Error::Config(format!(
                "{ENV_API_KEY} is not set; export the API key (master-...) in the environment"
            ))
        })?;
    if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::Config(format!(
            "{ENV_API_KEY} contains whitespace or control characters; check how it was exported"
        )));
    }
    let secret = match secret_file {
        Some(path) => read_secret_file(path)?,
        None => env(ENV_API_SECRET)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::Config(format!(
                    "{ENV_API_SECRET} is not set; export it or pass --api-secret-file FILE"
                ))
            })?,
    };
    Ok(Credentials {
        key,
        secret: SecretString::from(secret),
    })
}

fn read_secret_file(path: &Path) -> Result<String, Error> {
    let unreadable = |reason: String| Error::UnreadableInput {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| unreadable(format!("cannot read the API secret file ({e})")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                file = %path.display(),
                "the API secret file is readable by group or others; chmod 600 it"
            );
        }
    }
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.is_empty() {
        return Err(unreadable(
            "the API secret file's first line is empty; put the secret on line 1".into(),
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_to_loopback() {
        for ok in [
            "https://api.gemini.com",
            "https://api.sandbox.gemini.com/",
            "http://127.0.0.1:8080",
            "http://127.9.9.9:1",
            "http://[::1]:80",
            "http://localhost:3000",
        ] {
            assert!(validate_base_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.gemini.com",
            "http://10.0.0.1",
            "http://192.168.1.10:8080",
            "ftp://127.0.0.1",
            "api.gemini.com",
            "https://api.gemini.com/v1",
        ] {
            let err = validate_base_url(bad).unwrap_err();
            assert_eq!(err.exit_code(), crate::error::exit_code::BAD_INPUT, "{bad}");
        }
    }

    #[test]
    fn credentials_come_from_the_environment() {
        let env = |name: &str| match name {
            ENV_API_KEY => Some("master-abc".to_string()),
            ENV_API_SECRET => Some(" s3cret \n".to_string()),
            _ => None,
        };
        let creds = load_credentials(None, &env).unwrap();
        assert_eq!(creds.key, "master-abc");
        use secrecy::ExposeSecret;
        assert_eq!(creds.secret.expose_secret(), "s3cret");

        let no_secret = |name: &str| (name == ENV_API_KEY).then(|| "master-abc".to_string());
        let msg = load_credentials(None, &no_secret).unwrap_err().to_string();
        assert!(msg.contains(ENV_API_SECRET), "{msg}");
        let msg = load_credentials(None, &|_| None).unwrap_err().to_string();
        assert!(msg.contains(ENV_API_KEY), "{msg}");
    }

    #[test]
    fn the_secret_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "line-one\nline-two\n").unwrap();
        let env = |name: &str| (name == ENV_API_KEY).then(|| "master-abc".to_string());
        let creds = load_credentials(Some(&file), &env).unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(creds.secret.expose_secret(), "line-one");
        std::fs::write(&file, "\n").unwrap();
        assert!(load_credentials(Some(&file), &env).is_err());
    }
}
