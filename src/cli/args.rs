//! The command line's grammar (clap), and how the flags given lay over the configuration: the
//! one place clap types live. What comes out is a [`SweepConfig`] and [`Credentials`], which is
//! all the library below sees.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::{Credentials, NonceMode};
use crate::config::endpoint::{validate_base_url, validate_proxy};
use crate::config::groups::{self, GroupPlan};
use crate::config::{ConfigError, SANDBOX_URL, SweepConfig, UrlError, credentials};
use crate::display::LogFormat;
use crate::error::Error;

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
  5    the exchange could not be reached: the key's first requests all failed
       to connect (refused, DNS, TLS, timeout), so nothing was cancelled; fix
       the URL, the network or the proxy, then run again
  130  interrupted by SIGINT;  143  interrupted by SIGTERM
Only 0 means no order is left open. Alert on anything else.

Credentials come from the environment (GEMINI_API_KEY, GEMINI_API_SECRET) or
--api-secret-file, never from the command line.";

/// The tool's own page: each command's help carries the codes that command returns.
const TOOL_HELP: &str = "\
Exit codes: each command's --help lists its own (`gemini-sweep run --help` for
the sweep's, which a scheduler alerts on). Every command exits 2 on bad input
or configuration (then nothing was sent) and 3 on an internal, database or
environment error.

Credentials come from the environment (GEMINI_API_KEY, GEMINI_API_SECRET) or
--api-secret-file, never from the command line.";

const ACCOUNTS_EXIT_CODES: &str = "\
Exit codes:
  0    the group's accounts listed (and the CSV written, with --csv)
  1    the listing failed, may be incomplete or was interrupted: nothing was
       printed and no CSV written; run it again
  2    bad input or configuration: nothing was sent
  3    internal, database or environment error, or the CSV could not be written
  4    the exchange refused the key (not a master key, signature, role,
       IP allow-list): fix the key, then run again

Credentials come from the environment (GEMINI_API_KEY, GEMINI_API_SECRET) or
--api-secret-file, never from the command line.";

const REPORT_EXIT_CODES: &str = "\
Exit codes:
  0    the report was printed (or written to --out)
  2    bad input: no such database, run or group, --format html without --out,
       or an --out that cannot be written
  3    the database cannot be read, or another internal error
The report's content, not its exit code, says whether orders may be open.";

const RUNS_EXIT_CODES: &str = "\
Exit codes:
  0    the runs were listed
  2    bad input: no such database, or no run recorded in it
  3    the database cannot be read, or another internal error";

const DEMO_EXIT_CODES: &str = "\
Exit codes:
  0    the demo ran (its summary says what a real run would have exited)
  2    bad arguments
  3    the demo's database could not be written, or another internal error";

const SIM_EXIT_CODES: &str = "\
Exit codes:
  0    stopped by SIGINT or SIGTERM (the ledger, if any, written a last time)
  2    bad arguments, an unreadable --accounts-file, a port that cannot be
       bound, or a ledger or stdout that cannot be written";

const PRINT_EXIT_CODES: &str = "\
Exit codes:
  0    printed
  2    bad arguments (an unknown shell or command)
  3    stdout cannot be written";

#[derive(Debug, Parser)]
#[command(
    name = "gemini-sweep",
    version,
    about = "Cancel every open order on every Gemini subaccount, under one rate limit, with an SQLite audit trail",
    after_help = TOOL_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr (RUST_LOG sets the level; default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "GEMINI_SWEEP_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Which flags took their value from the environment (see [`Cli::parse_with_origins`]).
    #[arg(skip)]
    pub origins: Origins,
}

/// The flags whose value came from an environment variable rather than the command line, so
/// that a message about the value can say where it came from: an operator who never typed
/// `--base-url` is not helped by a message about `--base-url` alone.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// (long flag without its dashes, the variable, the value as given).
    from_env: Vec<(String, String, String)>,
}

impl Origins {
    /// Reads the sources off parsed matches: `command`'s own arguments, in `matches`.
    pub fn of(command: &clap::Command, matches: &clap::ArgMatches) -> Origins {
        let from_env = command
            .get_arguments()
            .filter(|arg| {
                matches.value_source(arg.get_id().as_str())
                    == Some(clap::parser::ValueSource::EnvVariable)
            })
            .filter_map(env_origin)
            .collect();
        Origins { from_env }
    }

    /// For an error clap raised before there were matches: the flags of `command` and its
    /// subcommands that are not in `argv` and whose variable is set, so clap read them there.
    pub fn guess(command: &clap::Command, argv: &[std::ffi::OsString]) -> Origins {
        let given = |long: &str| {
            argv.iter().any(|a| {
                let a = a.to_string_lossy();
                a == format!("--{long}") || a.starts_with(&format!("--{long}="))
            })
        };
        let mut from_env: Vec<(String, String, String)> = std::iter::once(command)
            .chain(command.get_subcommands())
            .flat_map(|c| c.get_arguments())
            .filter(|arg| arg.get_long().is_some_and(|long| !given(long)))
            .filter(|arg| {
                arg.get_env()
                    .and_then(std::env::var_os)
                    .is_some_and(|v| !v.is_empty())
            })
            .filter_map(env_origin)
            .collect();
        from_env.sort();
        from_env.dedup();
        Origins { from_env }
    }

    pub fn merge(mut self, other: Origins) -> Origins {
        self.from_env.extend(other.from_env);
        self
    }

    /// The variable `--long` took its value from, if it did.
    pub fn env_var(&self, long: &str) -> Option<&str> {
        self.from_env
            .iter()
            .find(|(l, _, _)| l == long)
            .map(|(_, var, _)| var.as_str())
    }

    /// `message` with where each value it names came from, when that was the environment: a
    /// flag it names (`--base-url`), or a value it quotes (an accounts file's path).
    pub fn explain(&self, message: &str) -> String {
        let mut notes = Vec::new();
        for (long, var, value) in &self.from_env {
            if mentions_flag(message, long) {
                notes.push(format!(
                    "--{long} comes from the environment variable {var}"
                ));
            } else if !value.is_empty() && message.contains(value.as_str()) {
                notes.push(format!(
                    "{value} is --{long}, from the environment variable {var}"
                ));
            }
        }
        if notes.is_empty() {
            return message.to_owned();
        }
        format!("{message} ({})", notes.join("; "))
    }
}

/// (long flag, variable, value) of an argument whose variable is set; a value is kept only for
/// paths (`FILE`, `DIR`), which a message quotes, while a number could match anything.
fn env_origin(arg: &clap::Arg) -> Option<(String, String, String)> {
    let var = arg.get_env()?;
    let value = std::env::var_os(var)?;
    let is_path = arg
        .get_value_names()
        .is_some_and(|names| names.iter().any(|n| *n == "FILE" || *n == "DIR"));
    Some((
        arg.get_long()?.to_owned(),
        var.to_string_lossy().into_owned(),
        if is_path {
            value.to_string_lossy().into_owned()
        } else {
            String::new()
        },
    ))
}

/// Whether `text` names the flag `--long` (and not a longer one that starts the same).
pub fn mentions_flag(text: &str, long: &str) -> bool {
    let flag = format!("--{long}");
    text.match_indices(&flag).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + flag.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cancel every open order of every enabled account in the CSV, of the group's own list
    /// (--all-accounts), or of each group of a --config file.
    #[command(after_help = EXIT_CODES_HELP)]
    Run(RunArgs),
    /// Sweep a built-in simulated exchange: no keys, no network, a few seconds.
    #[command(after_help = DEMO_EXIT_CODES)]
    Demo(DemoArgs),
    /// Serve a simulated Gemini exchange on 127.0.0.1, for rehearsals and tests.
    #[command(after_help = SIM_EXIT_CODES)]
    Sim(gemini_sim::cli::SimArgs),
    /// Print a run's reconciliation, per account and in total, from the database.
    #[command(after_help = REPORT_EXIT_CODES)]
    Report(ReportArgs),
    /// List the runs in the database, newest first.
    #[command(after_help = RUNS_EXIT_CODES)]
    Runs(RunsArgs),
    /// List the group's accounts (/v1/account/list, master key) and optionally write them as an
    /// accounts CSV for `run --accounts`.
    #[command(after_help = ACCOUNTS_EXIT_CODES)]
    Accounts(AccountsArgs),
    /// Print a shell completion script:
    /// `gemini-sweep completions bash > /etc/bash_completion.d/gemini-sweep`.
    #[command(after_help = PRINT_EXIT_CODES)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff): `gemini-sweep man > gemini-sweep.1`, and one per command:
    /// `gemini-sweep man run > gemini-sweep-run.1`.
    #[command(after_help = PRINT_EXIT_CODES)]
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
    /// (and --exclude ones) are written enabled=false, with the reason as their note. `-` prints
    /// the CSV on stdout instead of the table. FILE must be absent or a regular file (not a
    /// symlink, device or FIFO).
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
    /// Accounts CSV: header row with an `account` column; optional `enabled`, `note`; columns of
    /// your own start with `x-` (any other column is refused).
    #[arg(long, value_name = "FILE", env = "GEMINI_SWEEP_ACCOUNTS")]
    pub accounts: Option<PathBuf>,

    /// Sweep several groups (master keys) in parallel, as FILE (TOML) describes them: each
    /// group's name, key variables or secret file, accounts (`all` or a CSV), nonce mode and
    /// rate. Flags given here apply to every group that does not set them itself. See
    /// docs/operator-guide.md, "Several groups in one job".
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
    /// do is left untouched. --accounts and --all-accounts are refused beside it;
    /// GEMINI_SWEEP_ACCOUNTS and a --config file's `accounts` are not read.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,

    /// With --resume latest: how recent (hours, 0.1-168) a run must be to be picked up.
    #[arg(long, value_name = "HOURS", default_value_t = 12.0, requires = "resume",
          value_parser = bounded_f64("HOURS", 0.1, 168.0))]
    pub resume_within: f64,

    /// With --resume: also retry accounts the exchange refused for good (unknown, closed...).
    #[arg(long, requires = "resume")]
    pub retry_permanent: bool,

    /// After the sweep, keep the group flat for DURATION (20s, 10m, 1h30m; at most 24h): list the
    /// swept accounts in turn at the key's pace and cancel again, ahead of any listing, whatever
    /// appears. An order can stand at most one cycle (accounts / --rate) before it is caught.
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_hold)]
    pub hold: Option<Duration>,

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

    /// Exchange base URL; plain http:// only to loopback addresses; no user:password. Beside
    /// --sandbox, refused (even when it comes from GEMINI_BASE_URL).
    #[arg(long, value_name = "URL", env = "GEMINI_BASE_URL")]
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

    /// Which of the command's flags came from the environment (see [`Origins`]).
    #[arg(skip)]
    pub origins: Origins,
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

    /// Hold the group flat this long after the sweep (20s, 1m): the first two accounts then
    /// run a strategy that quotes again 1.5 s after each cancel-all, which the hold catches.
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_hold)]
    pub hold: Option<Duration>,
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

    /// `latest` (every run of the latest job, one table each) or a run id.
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
    /// `--format html`. `-` is stdout. FILE must be absent or a regular file (not a symlink,
    /// device or FIFO).
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

    /// How many runs, newest first (and every run of the latest job).
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

/// A number flag's value that cannot be used (clap puts the flag before it).
#[derive(Debug, thiserror::Error)]
pub enum NumberError {
    #[error("{text:?} is not a number")]
    NotANumber {
        text: String,
        #[source]
        source: std::num::ParseFloatError,
    },
    #[error("must be from {min} to {max} ({unit})")]
    OutOfRange {
        min: f64,
        max: f64,
        unit: &'static str,
    },
}

/// A parser for a number within `min..=max` (in `unit`), for clap.
pub fn bounded_f64(
    unit: &'static str,
    min: f64,
    max: f64,
) -> impl Fn(&str) -> Result<f64, NumberError> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: f64 = s.trim().parse().map_err(|source| NumberError::NotANumber {
            text: s.to_owned(),
            source,
        })?;
        if !(v.is_finite() && (min..=max).contains(&v)) {
            return Err(NumberError::OutOfRange { min, max, unit });
        }
        Ok(v)
    }
}

impl Cli {
    /// Parses the process's arguments, and notes which flags took their value from the
    /// environment ([`Origins`]).
    pub fn parse_with_origins() -> Result<Cli, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command();
        let matches = command.clone().try_get_matches()?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        let mut origins = Origins::of(&command, &matches);
        if let Some((name, sub)) = matches.subcommand()
            && let Some(sub_command) = command.find_subcommand(name)
        {
            origins = origins.merge(Origins::of(sub_command, sub));
        }
        match &mut cli.command {
            Command::Run(args) => args.exchange.origins = origins.clone(),
            Command::Accounts(args) => args.exchange.origins = origins.clone(),
            _ => {}
        }
        cli.origins = origins;
        Ok(cli)
    }
}

impl ExchangeArgs {
    /// Applies the exchange flags that were given over `config`, validates the URLs and loads
    /// the credentials.
    pub fn apply(
        &self,
        config: &mut SweepConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Credentials, ConfigError> {
        self.apply_settings(config)?;
        Ok(credentials::load(self.api_secret_file.as_deref(), env)?)
    }

    /// The exchange flags that were given, over `config`, without the key (a group
    /// configuration names each group's key itself).
    pub fn apply_settings(&self, config: &mut SweepConfig) -> Result<(), ConfigError> {
        match (&self.base_url, self.sandbox) {
            (Some(url), true) => {
                let url = url.clone();
                return Err(UrlError::TwoExchanges { url }.into());
            }
            (None, true) => config.base_url = SANDBOX_URL.to_string(),
            (Some(url), false) => config.base_url = url.clone(),
            (None, false) => {}
        }
        config.base_url = validate_base_url("--base-url", &config.base_url)?.to_string();
        if let Some(proxy) = &self.proxy {
            config.proxy = Some(validate_proxy("--proxy", proxy)?.to_string());
        }
        if let Some(proxy) = &config.proxy {
            validate_proxy("--proxy", proxy)?;
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
    ) -> Result<(SweepConfig, Credentials), ConfigError> {
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
    ) -> Result<(SweepConfig, Credentials), ConfigError> {
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
    ) -> Result<(SweepConfig, Credentials), ConfigError> {
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
    ) -> Result<Vec<GroupPlan>, ConfigError> {
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
    pub fn flags_over(&self, mut config: SweepConfig) -> Result<SweepConfig, ConfigError> {
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
            return Err(Error::Usage(
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
            return Err(Error::Usage(format!(
                "{flag} goes with --all-accounts and would be ignored beside {source}; {instead}"
            )));
        }
        if self.resume.is_some() && self.accounts.is_some() {
            match self.exchange.origins.env_var("accounts") {
                // A scheduler's environment names the CSV for the daily run; the retry job
                // beside it says --resume in the same environment.
                Some(var) => tracing::info!(
                    "{var} is not read: --resume finishes the recorded run's own accounts"
                ),
                None => {
                    return Err(Error::Usage(
                        "--accounts would be ignored beside --resume: a resume finishes the recorded run's own accounts; drop --accounts (or, to sweep that CSV, start a new run without --resume)".into(),
                    ));
                }
            }
        }
        if !self.group.is_empty() && self.config.is_none() {
            return Err(Error::Usage(format!(
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
        if let Some(v) = self.hold {
            config.hold = v;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_flags_are_bounded() {
        let rate = bounded_f64("requests per second", 0.1, 100_000.0);
        assert_eq!(rate("5").ok(), Some(5.0));
        for bad in ["0", "1e-20", "1e-9", "-1", "NaN", "inf", "1e9", "x", ""] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }
}
