//! The command line, and the one configuration struct built from it and passed down.
//!
//! clap types stop here: the rest of the library sees [`SweepConfig`] and [`Credentials`].

pub mod groups;

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
       (with --no-verify: every account swept, nothing verified)
  1    the run finished, but some account failed, some order stayed rejected,
       or some account is not verified flat: orders may be open
  2    bad input or configuration: nothing was sent
  3    internal, database or environment error
  4    the exchange refused the key or the configuration (signature, role,
       nonce mode, IP allow-list, redirect): the run stopped sending at once;
       fix the key or the flags, then run again
  130  interrupted by SIGINT;  143  interrupted by SIGTERM
Only 0 means no order is left open. Alert on anything else.

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
    /// Cancel every open order of every enabled account in the CSV, of the group's own list
    /// (--all-accounts), or of each group of a --config file.
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
    /// List the group's accounts (/v1/account/list, master key) and optionally write them as an
    /// accounts CSV for `run --accounts`.
    #[command(after_help = EXIT_CODES_HELP)]
    Accounts(AccountsArgs),
    /// Print a shell completion script: `gemini-sweep completions bash > /etc/bash_completion.d/gemini-sweep`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff): `gemini-sweep man > gemini-sweep.1`, and one per command:
    /// `gemini-sweep man run > gemini-sweep-run.1`.
    Man {
        /// The command whose page to print (run, accounts, report, runs, demo, sim, ...).
        command: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct AccountsArgs {
    /// The exchange, the key's settings and the audit trail (the listing's requests are recorded
    /// there like any other, and use the key's nonce mark).
    #[command(flatten)]
    pub exchange: ExchangeArgs,

    /// Also write the accounts as a CSV that `run --accounts` reads: custody and closed accounts
    /// (and --exclude ones) are written enabled=false, with the reason as their note.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Nicknames to write enabled=false (comma-separated, repeatable).
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub exclude: Vec<String>,

    /// A file of nicknames to write enabled=false, one per line (# comments).
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Option<PathBuf>,

    /// How to print the list on stdout.
    #[arg(long, default_value = "table", value_parser = text_formats())]
    pub format: crate::report::Format,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Accounts CSV: header row with an `account` column; optional `enabled`, `note`.
    #[arg(long, value_name = "FILE", env = "GEMINI_SWEEP_ACCOUNTS")]
    pub accounts: Option<PathBuf>,

    /// Sweep several groups (master keys) in parallel, as FILE (TOML) describes them: each
    /// group's name, key variables or secret file, accounts (`all` or a CSV), nonce mode and
    /// rate. Flags given here apply to every group that does not set them itself. See the
    /// README's "Several groups".
    #[arg(
        long,
        value_name = "FILE",
        env = "GEMINI_SWEEP_CONFIG",
        conflicts_with_all = ["accounts", "all_accounts", "api_secret_file"]
    )]
    pub config: Option<PathBuf>,

    /// Write the job's outcome as Prometheus text (node_exporter's textfile collector) to FILE,
    /// atomically, when the job ends: exit code, run status, accounts, orders, attempts, 429s,
    /// nonce races, duration and the last clean sweep, per group.
    #[arg(long, value_name = "FILE", env = "GEMINI_SWEEP_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,

    /// When stderr is not a terminal: a progress line in the log every SECS (0-3600; 0: none)
    /// [default: 10]. On a terminal a progress bar is shown instead.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, allow_negative_numbers = true,
          value_parser = bounded_f64("SECS", 0.0, 3600.0))]
    pub progress_interval: f64,

    /// With --config: sweep only these groups (comma-separated, repeatable).
    #[arg(
        long,
        value_name = "NAME,...",
        value_delimiter = ',',
        requires = "config"
    )]
    pub group: Vec<String>,

    /// Finish an earlier run (`latest` or a run id): only its accounts not yet swept and
    /// verified, under the same run id, with the run's stored accounts, URL and options (flags
    /// given here override them). `latest` only picks a run started within --resume-within
    /// hours, so a scheduled resume never picks up yesterday's run. A run with nothing left to
    /// do is left untouched. (--accounts and GEMINI_SWEEP_ACCOUNTS are then ignored.)
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,

    /// With --resume latest: how recent (hours, 0.1-168) a run must be to be picked up.
    #[arg(long, value_name = "HOURS", default_value_t = 12.0, requires = "resume",
          value_parser = bounded_f64("HOURS", 0.1, 168.0))]
    pub resume_within: f64,

    /// With --resume: also retry accounts the exchange refused for good (unknown, closed...).
    #[arg(long, requires = "resume")]
    pub retry_permanent: bool,

    /// Seconds (0-600) in-flight requests may take to finish after SIGINT/SIGTERM before they
    /// are abandoned [default: 15].
    #[arg(long, value_name = "SECS", allow_negative_numbers = true,
          value_parser = bounded_f64("SECS", 0.0, 600.0))]
    pub grace: Option<f64>,

    /// Requests (1-100) the pacer lets through back to back before spacing them at --rate
    /// [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub burst: Option<u32>,

    /// Requests (1-1024) in flight at once [default: 8].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=1024), env = "GEMINI_SWEEP_CONCURRENCY")]
    pub concurrency: Option<u32>,

    /// Attempts (1-100) per call before an account is given up (transient errors only)
    /// [default: 5].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: Option<u32>,

    /// Extra cancel-alls (0-10) for an account whose orders were rejected, to catch briefly
    /// stuck ones [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub reject_retries: Option<u32>,

    /// Skip the listing after the cancel-all (one request per account instead of two; the run
    /// then cannot prove the account is flat).
    #[arg(long)]
    pub no_verify: bool,

    /// Also list each account's open orders before its cancel-all, so the audit trail holds
    /// their details (symbol, side, price, amounts). Three requests per account, and each
    /// account's cancel-all waits behind its own listing: the sweep is flat later.
    #[arg(long)]
    pub snapshot: bool,

    /// Validate everything and print the plan; send nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// The exchange, the key's settings and the audit trail.
    #[command(flatten)]
    pub exchange: ExchangeArgs,

    /// Sweep every open exchange account of the group, as /v1/account/list lists them (master
    /// key only), instead of a CSV. Custody and closed accounts are recorded as skipped.
    #[arg(long, conflicts_with_all = ["accounts", "resume"])]
    pub all_accounts: bool,

    /// With --all-accounts: nicknames not to sweep (comma-separated, repeatable).
    #[arg(
        long,
        value_name = "NAME,...",
        value_delimiter = ',',
        requires = "all_accounts"
    )]
    pub exclude: Vec<String>,

    /// With --all-accounts: a file of nicknames not to sweep, one per line (# comments).
    #[arg(long, value_name = "FILE", requires = "all_accounts")]
    pub exclude_file: Option<PathBuf>,
}

/// What talking to the exchange with the key needs, shared by `run` and `accounts`.
#[derive(Debug, Args)]
pub struct ExchangeArgs {
    /// Read the API secret from the first line of FILE instead of GEMINI_API_SECRET.
    #[arg(long, value_name = "FILE")]
    pub api_secret_file: Option<PathBuf>,

    /// Exchange base URL; plain http:// only to loopback addresses; no user:password.
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

    /// Send every request through this proxy (https://, or http:// to a loopback address). The
    /// environment's HTTP_PROXY/HTTPS_PROXY/ALL_PROXY are never used.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,

    /// Requests per second (0.1-100000) for the whole key; all accounts share it [default: 5].
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = bounded_f64("requests per second", 0.1, 100_000.0), env = "GEMINI_SWEEP_RATE")]
    pub rate: Option<f64>,

    /// Seconds (0.1-600) one request may take to connect and answer; a long reply gets one more
    /// second per MiB received [default: 10].
    #[arg(long, value_name = "SECS", allow_negative_numbers = true,
          value_parser = bounded_f64("SECS", 0.1, 600.0))]
    pub timeout: Option<f64>,

    /// The key's nonce mode, as set when the key was created on Gemini [default: increasing].
    #[arg(long, value_enum)]
    pub nonce_mode: Option<NonceModeArg>,

    /// SQLite database for the audit trail; created (mode 0600) and migrated on first use.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "gemini-sweep.db",
        env = "GEMINI_SWEEP_DB"
    )]
    pub db: PathBuf,

    /// Where the per-key lock file lives (one run per API key) [default: the database's
    /// directory]. Give every job that uses the key the same directory.
    #[arg(long, value_name = "DIR", env = "GEMINI_SWEEP_LOCK_DIR")]
    pub lock_dir: Option<PathBuf>,
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

    /// Only runs of this group (as named in a --config file; `default` without one): `latest`
    /// is then the group's latest run.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,

    #[arg(long, value_enum, default_value_t = crate::report::Format::Table)]
    pub format: crate::report::Format,

    /// Which accounts to list (the run total is always there).
    #[arg(long, value_enum, default_value_t = crate::report::Only::All)]
    pub only: crate::report::Only,

    /// Write the report to FILE (atomically, mode 0600) instead of stdout; required with
    /// `--format html`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
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

    // The report's formats but html: a list of runs is no audit page.
    #[arg(long, default_value = "table", value_parser = text_formats())]
    pub format: crate::report::Format,

    /// How many runs, newest first.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: u32,

    /// Only runs of this group (as named in a --config file; `default` without one).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
}

/// The report formats that print to stdout (all but html, which is a page written to a file).
fn text_formats() -> impl clap::builder::TypedValueParser<Value = crate::report::Format> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["table", "csv", "json"]).map(|s| match s.as_str() {
        "csv" => crate::report::Format::Csv,
        "json" => crate::report::Format::Json,
        _ => crate::report::Format::Table,
    })
}

/// A parser for a number within `min..=max` (in `unit`), for clap.
pub fn bounded_f64(
    unit: &'static str,
    min: f64,
    max: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number"))?;
        if !(v.is_finite() && (min..=max).contains(&v)) {
            return Err(format!("must be from {min} to {max} ({unit})"));
        }
        Ok(v)
    }
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
        }
    }
}

impl ExchangeArgs {
    /// Applies the exchange flags that were given over `config`, validates the URLs and loads
    /// the credentials.
    pub fn apply(
        &self,
        config: &mut SweepConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Credentials, Error> {
        self.apply_settings(config)?;
        load_credentials(self.api_secret_file.as_deref(), env)
    }

    /// The exchange flags that were given, over `config`, without the key (a group
    /// configuration names each group's key itself).
    pub fn apply_settings(&self, config: &mut SweepConfig) -> Result<(), Error> {
        match (&self.base_url, self.sandbox) {
            (_, true) => config.base_url = SANDBOX_URL.to_string(),
            (Some(url), false) => config.base_url = url.clone(),
            (None, false) => {}
        }
        config.base_url = validate_base_url(&config.base_url)?.to_string();
        if let Some(proxy) = &self.proxy {
            config.proxy = Some(validate_proxy(proxy)?.to_string());
        }
        if let Some(proxy) = &config.proxy {
            validate_proxy(proxy)?;
        }
        if let Some(v) = self.rate {
            config.rate = v;
        }
        if let Some(v) = self.timeout {
            config.timeout = Duration::from_secs_f64(v);
        }
        if let Some(mode) = self.nonce_mode {
            config.nonce_mode = match mode {
                NonceModeArg::Increasing => NonceMode::Increasing,
                NonceModeArg::Time => NonceMode::Time,
            };
        }
        config.db = self.db.clone();
        if let Some(dir) = &self.lock_dir {
            config.lock_dir = Some(dir.clone());
        }
        Ok(())
    }
}

impl AccountsArgs {
    pub fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(SweepConfig, Credentials), Error> {
        let mut config = SweepConfig::defaults(PathBuf::new(), self.exchange.db.clone());
        let credentials = self.exchange.apply(&mut config, env)?;
        Ok((config, credentials))
    }
}

impl RunArgs {
    /// Builds the configuration of a new run; `env` looks up environment variables (injected
    /// for tests).
    pub fn resolve(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(SweepConfig, Credentials), Error> {
        let defaults = SweepConfig::defaults(
            self.accounts.clone().unwrap_or_default(),
            self.exchange.db.clone(),
        );
        self.resolve_over(defaults, env)
    }

    /// Applies the flags that were given over `base` (the defaults, or a resumed run's stored
    /// options), validates the URL and loads the credentials.
    pub fn resolve_over(
        &self,
        mut config: SweepConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(SweepConfig, Credentials), Error> {
        let credentials = self.exchange.apply(&mut config, env)?;
        self.apply_run_flags(&mut config);
        Ok((config, credentials))
    }

    /// The groups of `--config`, with the flags given here between the file's `[defaults]` and
    /// each group's own settings.
    pub fn resolve_groups(
        &self,
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<groups::GroupPlan>, Error> {
        let over_defaults = |config: &mut SweepConfig| {
            *config = self.flags_over(config.clone())?;
            Ok(())
        };
        groups::load(
            file,
            &self.exchange.db,
            self.exchange.lock_dir.as_deref(),
            &self.group,
            &over_defaults,
            env,
        )
    }

    /// The flags given here over `config` (a resumed run's stored options), without the key.
    pub fn flags_over(&self, mut config: SweepConfig) -> Result<SweepConfig, Error> {
        self.exchange.apply_settings(&mut config)?;
        self.apply_run_flags(&mut config);
        Ok(config)
    }

    /// Refuses flags that the chosen account source would not use (a safeguard such as
    /// `--exclude` that is silently dropped is worse than an error), and a run with no source.
    pub fn check_flag_mix(&self) -> Result<(), Error> {
        let source = if self.config.is_some() {
            "--config"
        } else if self.all_accounts {
            "--all-accounts"
        } else if self.resume.is_some() {
            "--resume"
        } else if self.accounts.is_some() {
            "--accounts"
        } else {
            return Err(Error::Config(
                "run: nothing to sweep; give an account source: --accounts FILE (a CSV), --all-accounts (the group's own list), --config FILE (several groups) or --resume RUN (finish an earlier run)".into(),
            ));
        };
        let excluding = if !self.exclude.is_empty() {
            Some("--exclude")
        } else if self.exclude_file.is_some() {
            Some("--exclude-file")
        } else {
            None
        };
        if let Some(flag) = excluding
            && source != "--all-accounts"
        {
            let instead = match source {
                "--config" => {
                    "in a --config file, give exclude = [...] or exclude_file in the group's [[group]] table"
                }
                "--resume" => {
                    "a resume picks up the run's own unfinished accounts (an --all-accounts run keeps the exclusions it started with)"
                }
                _ => "with --accounts, set enabled=false on the account's line in the CSV",
            };
            return Err(Error::Config(format!(
                "{flag} goes with --all-accounts and would be ignored beside {source}; {instead}"
            )));
        }
        if !self.group.is_empty() && self.config.is_none() {
            return Err(Error::Config(format!(
                "--group picks groups of a --config file, and there is none here (the run sweeps {source}); give --config FILE, or drop --group"
            )));
        }
        Ok(())
    }

    fn apply_run_flags(&self, config: &mut SweepConfig) {
        if let Some(v) = self.burst {
            config.burst = v;
        }
        if let Some(v) = self.concurrency {
            config.concurrency = v;
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
        if self.snapshot {
            config.snapshot = true;
        }
        if self.all_accounts {
            config.accounts_file = PathBuf::from("(--all-accounts)");
        }
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// https anywhere; http only where the traffic cannot leave the machine; never credentials in the
/// URL (they would be stored with the run).
pub fn validate_base_url(text: &str) -> Result<reqwest::Url, Error> {
    let url = reqwest::Url::parse(text).map_err(|e| {
        Error::Config(format!(
            "--base-url {text:?} is not a URL ({e}); e.g. {SANDBOX_URL}"
        ))
    })?;
    // Named without the credentials, which must not reach the message either.
    let shown = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Config(format!(
            "--base-url {shown}: remove the user:password part; Gemini authenticates with the API key, and the URL is stored with the run"
        )));
    }
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(Error::Config(format!(
                "--base-url {text}: plain http:// is allowed only to loopback addresses (127.0.0.1, ::1, localhost); use https://"
            )));
        }
        _ => {
            return Err(Error::Config(format!(
                "--base-url {shown}: must be an https:// URL, e.g. {SANDBOX_URL}"
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

/// The proxy follows the base URL's rule: it sees the signed key, so https, or http that stays on
/// the machine.
pub fn validate_proxy(text: &str) -> Result<reqwest::Url, Error> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| Error::Config(format!("--proxy: not a URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Config(
            "--proxy: remove the user:password part; it would be stored with the run".into(),
        ));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err(Error::Config(format!(
            "--proxy {}: must be https:// (or http:// to a loopback address): the proxy sees the signed API key",
            url.host_str().unwrap_or("?")
        ))),
    }
}

fn load_credentials(
    secret_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, Error> {
    let source = KeySource {
        key_env: ENV_API_KEY,
        secret_env: ENV_API_SECRET,
        secret_file,
        secret_file_flag: "--api-secret-file FILE",
    };
    source.load(env).map_err(Error::Config)
}

/// Where one key's id and secret come from: environment variables, or the secret from a file.
pub(crate) struct KeySource<'a> {
    pub key_env: &'a str,
    pub secret_env: &'a str,
    pub secret_file: Option<&'a Path>,
    /// How the user names a secret file here, for the hint when the secret is missing.
    pub secret_file_flag: &'a str,
}

impl KeySource<'_> {
    /// The credentials, or a message naming the variable or file to fix (never their values).
    pub fn load(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials, String> {
        let key_env = self.key_env;
        let key = env(key_env)
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                format!("{key_env} is not set; export the API key (master-...) in the environment")
            })?;
        if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "{key_env} contains whitespace or control characters; check how it was exported"
            ));
        }
        let secret = match self.secret_file {
            Some(path) => read_secret_file(path).map_err(|e| e.to_string())?,
            None => env(self.secret_env)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    format!(
                        "{} is not set; export it or give {}",
                        self.secret_env, self.secret_file_flag
                    )
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

/// The secret on the first line of `path`, a regular file of at most
/// [`MAX_SECRET_FILE_BYTES`]. Anything else is refused before a byte is read: opening a FIFO
/// would wait for a writer forever, and a device such as /dev/zero never ends.
fn read_secret_file(path: &Path) -> Result<String, Error> {
    use std::io::Read as _;
    let unreadable = |reason: String| Error::UnreadableInput {
        path: path.to_path_buf(),
        reason,
    };
    let cannot_read = |e: std::io::Error| {
        unreadable(format!(
            "cannot read the API secret file ({e}); check the path and its permissions"
        ))
    };
    let acceptable = |meta: &std::fs::Metadata| -> Result<(), Error> {
        if !meta.is_file() {
            return Err(unreadable(format!(
                "the API secret file is {}, not a regular file; put the secret on the first line of a file (chmod 600)",
                file_kind(meta)
            )));
        }
        if meta.len() > MAX_SECRET_FILE_BYTES {
            return Err(unreadable(format!(
                "the API secret file is {} bytes (at most {MAX_SECRET_FILE_BYTES}); it holds the secret on its first line: is this the right file?",
                meta.len()
            )));
        }
        Ok(())
    };
    // Checked before opening (the open itself would block on a FIFO), then again on what was
    // opened, in case the path changed in between; the read is bounded whatever the size says.
    acceptable(&std::fs::metadata(path).map_err(cannot_read)?)?;
    let file = std::fs::File::open(path).map_err(cannot_read)?;
    let meta = file.metadata().map_err(cannot_read)?;
    acceptable(&meta)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(unreadable(format!(
            "the API secret file holds more than {MAX_SECRET_FILE_BYTES} bytes; it holds the secret on its first line: is this the right file?"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| unreadable("the API secret file is not UTF-8 text".into()))?;
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
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.is_empty() {
        return Err(unreadable(
            "the API secret file's first line is empty; put the secret on line 1".into(),
        ));
    }
    Ok(secret)
}

/// What a path that is not a regular file is, for the message.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
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
            "https://user:hunter2@api.gemini.com",
            "http://ops:hunter2@127.0.0.1:8080",
        ] {
            let err = validate_base_url(bad).unwrap_err();
            assert_eq!(err.exit_code(), crate::error::exit_code::BAD_INPUT, "{bad}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_proxy_must_keep_the_key_encrypted_or_on_the_machine() {
        assert!(validate_proxy("https://proxy.corp.example:3128").is_ok());
        assert!(validate_proxy("http://127.0.0.1:3128").is_ok());
        for bad in [
            "http://proxy.corp.example:3128",
            "socks5://127.0.0.1:1080",
            "https://u:hunter2@proxy.corp.example",
            "not a url",
        ] {
            let err = validate_proxy(bad).unwrap_err().to_string();
            assert!(err.starts_with("--proxy"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn numeric_flags_are_bounded() {
        let rate = bounded_f64("requests per second", 0.1, 100_000.0);
        assert_eq!(rate("5"), Ok(5.0));
        for bad in ["0", "1e-20", "1e-9", "-1", "NaN", "inf", "1e9", "x", ""] {
            assert!(rate(bad).is_err(), "{bad}");
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

    #[test]
    fn a_secret_file_is_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let env = |name: &str| (name == ENV_API_KEY).then(|| "master-abc".to_string());
        let refused = |path: &Path| {
            let err = load_credentials(Some(path), &env).unwrap_err();
            assert_eq!(err.exit_code(), crate::error::exit_code::BAD_INPUT, "{err}");
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
