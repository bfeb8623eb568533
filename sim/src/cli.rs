//! `gemini-sweep sim`: the simulator as a standalone process, for trying the sweeper by hand or
//! from scripts. Stdout carries exactly the address (and a generated key); logs go to stderr.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngExt;
use rand::distr::Alphanumeric;

use super::{
    AccountKind, AccountListPaging, AccountSpec, AccountStatus, FaultConfig, KeySpec, NonceMode,
    RateLimitConfig, Requote, RequoteWhen, Role, Shared, SimConfig,
};

/// Ledger rewrites are at least this far apart; the final one at shutdown always happens.
const LEDGER_DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Number of open exchange accounts, named acct-0001 ..= acct-N.
    #[arg(long, default_value_t = 50, conflicts_with = "accounts_file")]
    pub accounts: u32,
    /// CSV with an `account` column and optional `type` (exchange|custody), `status`
    /// (open|closed) and `group` columns; `#` comments and blank lines are skipped.
    #[arg(long, value_name = "CSV")]
    pub accounts_file: Option<PathBuf>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// KEY:SECRET[@ACCOUNT][#OPTION]..., OPTION = time | increasing | roles=trader,auditor,... |
    /// group=NAME. Repeatable. Without any, a master key is generated and printed.
    #[arg(long = "key", value_name = "KEY:SECRET[@ACCOUNT][#OPTION]", value_parser = parse_key)]
    pub keys: Vec<KeySpec>,
    /// Orders per account, MIN..=MAX or N.
    #[arg(long, value_name = "MIN..=MAX", value_parser = parse_orders,
          conflicts_with_all = ["min_orders", "max_orders"])]
    pub orders: Option<RangeInclusive<u32>>,
    #[arg(long, default_value_t = 0)]
    pub min_orders: u32,
    #[arg(long, default_value_t = 20)]
    pub max_orders: u32,
    /// NAME=N: account NAME gets exactly N orders, whatever --orders says. Repeatable.
    #[arg(long = "orders-for", value_name = "NAME=N", value_parser = parse_orders_for)]
    pub orders_for: Vec<(String, u32)>,
    /// Fraction of orders that refuse cancellation forever.
    #[arg(long, default_value_t = 0.0)]
    pub reject_fraction: f64,
    /// Requests per second per key, fractions allowed; 0 is unlimited. The default is the
    /// exchange's limit, 600 per minute.
    #[arg(long, value_name = "PER_SEC", default_value_t = 10.0)]
    pub rate: f64,
    /// Requests over the rate that are delayed rather than refused.
    #[arg(long, default_value_t = 5)]
    pub burst_queue: u32,
    /// Send `Retry-After` with 429s.
    #[arg(long)]
    pub retry_after: bool,
    #[arg(long = "p-500", default_value_t = 0.0)]
    pub p_500: f64,
    #[arg(long = "p-502", default_value_t = 0.0)]
    pub p_502: f64,
    #[arg(long = "p-503", default_value_t = 0.0)]
    pub p_503: f64,
    #[arg(long = "p-stall", default_value_t = 0.0)]
    pub p_stall: f64,
    /// How long a stalled request is held before its 504.
    #[arg(long, default_value_t = 120_000)]
    pub stall_ms: u64,
    #[arg(long = "p-drop", default_value_t = 0.0)]
    pub p_drop: f64,
    #[arg(long = "p-garbage", default_value_t = 0.0)]
    pub p_garbage: f64,
    #[arg(long = "p-lost-reply", default_value_t = 0.0)]
    pub p_lost_reply: f64,
    /// Every request naming this account gets 500 System. Repeatable.
    #[arg(long = "failing-account", value_name = "NAME")]
    pub failing_accounts: Vec<String>,
    /// Added to every answer, after the request is handled: latency + U[0,1) * jitter.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Added to every request on its way in, before the rate limit and the nonce check, so
    /// requests can reach the nonce check out of order: latency + U[0,1) * jitter.
    #[arg(long, default_value_t = 0)]
    pub inbound_latency_ms: u64,
    #[arg(long, default_value_t = 0)]
    pub inbound_jitter_ms: u64,
    /// Share of an account's orders that fill right after its first /v1/orders reply.
    #[arg(long, default_value_t = 0.0)]
    pub fill_after_snapshot: f64,
    /// Orders placed on an account right after its first /v1/orders reply.
    #[arg(long, default_value_t = 0)]
    pub late_orders: u32,
    /// How /v1/account/list reads `timestamp`: on-or-before (newest first, as documented),
    /// on-or-after (oldest first) or ignores-timestamp (always the first page).
    #[arg(long, value_enum, default_value_t = AccountListPaging::OnOrBefore)]
    pub account_list_paging: AccountListPaging,
    /// Accounts whose trading strategy keeps running (comma-separated, repeatable): after
    /// each cancel-all they place new orders (--requote-orders, --requote-after-secs), which a
    /// sweep with --hold catches.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub requote: Vec<String>,
    /// Seconds after a cancel-all before a --requote account's strategy quotes again.
    #[arg(long, value_name = "SECS", default_value_t = 6.0)]
    pub requote_after_secs: f64,
    /// Orders a --requote account's strategy places each time it quotes again.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub requote_orders: u32,
    /// Cancel-alls a --requote account's strategy answers by quoting again (default: every one).
    #[arg(long, value_name = "N")]
    pub requote_rounds: Option<u32>,
    /// Keep this file holding the ledger JSON, rewritten atomically as it changes.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimCliError {
    #[error("reading accounts file {path}: {source}")]
    AccountsFile { path: PathBuf, source: csv::Error },
    #[error("accounts file {0} has no 'account' column")]
    NoAccountColumn(PathBuf),
    #[error("accounts file {path}, account {account:?}: {problem}")]
    BadAccount {
        path: PathBuf,
        account: String,
        problem: String,
    },
    #[error("cannot start the simulator: {0}")]
    Start(std::io::Error),
    #[error("writing the ledger to {path}: {source}")]
    Ledger {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing to stdout: {0}")]
    Stdout(std::io::Error),
    #[error("{flag}: {problem}")]
    BadFlag { flag: &'static str, problem: String },
}

/// Runs until SIGINT or SIGTERM, then writes the ledger one last time.
pub async fn run(args: SimArgs) -> Result<(), SimCliError> {
    run_until(args, shutdown_signal(), std::io::stdout()).await
}

/// [`run`] with the stop condition and the stdout stream supplied by the caller.
pub async fn run_until(
    args: SimArgs,
    stop: impl Future<Output = ()>,
    mut out: impl Write,
) -> Result<(), SimCliError> {
    let mut config = config_from(&args)?;
    let generated = config.keys.is_empty().then(generate_master_key);
    if let Some(key) = &generated {
        config.keys.push(key.clone());
    }
    let server = super::start_on(config, args.port)
        .await
        .map_err(SimCliError::Start)?;

    writeln!(out, "listening on {}", server.base_url()).map_err(SimCliError::Stdout)?;
    if let Some(key) = &generated {
        writeln!(out, "key: {} secret: {}", key.key, key.secret).map_err(SimCliError::Stdout)?;
    }
    out.flush().map_err(SimCliError::Stdout)?;
    tracing::info!(addr = %server.addr(), "simulator listening");

    tokio::pin!(stop);
    if let Some(path) = &args.ledger {
        write_ledger(path, &server.shared)?;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = server.ledger_changed() => {}
            }
            if let Err(e) = write_ledger(path, &server.shared) {
                // Keep serving: a full disk should not kill a test exchange mid-run.
                tracing::warn!(error = %e, "ledger not written");
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(LEDGER_DEBOUNCE) => {}
            }
        }
    } else {
        stop.await;
    }

    let shared = server.stop().await;
    if let Some(path) = &args.ledger {
        write_ledger(path, &shared)?;
    }
    tracing::info!("simulator stopped");
    Ok(())
}

/// The simulator configuration the arguments describe (keys as given, none generated).
pub fn config_from(args: &SimArgs) -> Result<SimConfig, SimCliError> {
    let accounts = match &args.accounts_file {
        Some(path) => read_accounts(path)?,
        None => SimConfig::numbered_accounts(args.accounts),
    };
    Ok(SimConfig {
        seed: args.seed,
        accounts,
        keys: args.keys.clone(),
        orders_per_account: args
            .orders
            .clone()
            .unwrap_or(args.min_orders..=args.max_orders),
        orders_for: args.orders_for.iter().cloned().collect::<BTreeMap<_, _>>(),
        reject_fraction: args.reject_fraction,
        rate_limit: (args.rate != 0.0).then_some(RateLimitConfig {
            per_second: args.rate,
            burst_queue: args.burst_queue,
            send_retry_after: args.retry_after,
        }),
        faults: FaultConfig {
            p_500: args.p_500,
            p_502: args.p_502,
            p_503: args.p_503,
            p_stall: args.p_stall,
            stall_for: Duration::from_millis(args.stall_ms),
            p_drop: args.p_drop,
            p_garbage: args.p_garbage,
            p_lost_reply: args.p_lost_reply,
            failing_accounts: args.failing_accounts.iter().cloned().collect(),
            latency: Duration::from_millis(args.latency_ms),
            jitter: Duration::from_millis(args.jitter_ms),
            inbound_latency: Duration::from_millis(args.inbound_latency_ms),
            inbound_jitter: Duration::from_millis(args.inbound_jitter_ms),
        },
        fill_after_snapshot_fraction: args.fill_after_snapshot,
        late_orders_after_snapshot: args.late_orders,
        account_list_paging: args.account_list_paging,
        requote: requote_from(args)?,
    })
}

fn requote_from(args: &SimArgs) -> Result<Option<Requote>, SimCliError> {
    if args.requote.is_empty() {
        return Ok(None);
    }
    let after = Duration::try_from_secs_f64(args.requote_after_secs)
        .ok()
        .filter(|d| *d <= Duration::from_secs(3600))
        .ok_or_else(|| SimCliError::BadFlag {
            flag: "--requote-after-secs",
            problem: "must be from 0 to 3600 seconds".into(),
        })?;
    Ok(Some(Requote {
        accounts: args.requote.iter().cloned().collect(),
        orders: args.requote_orders,
        when: RequoteWhen::After(after),
        rounds: args.requote_rounds,
    }))
}

/// `KEY:SECRET[@ACCOUNT][#OPTION]...`; a secret cannot contain `@` or `#`.
pub fn parse_key(spec: &str) -> Result<KeySpec, String> {
    let (key, rest) = spec
        .split_once(':')
        .ok_or("expected KEY:SECRET[@ACCOUNT][#OPTION]...")?;
    let mut parts = rest.split('#');
    let secret_and_account = parts.next().unwrap_or_default();
    let (secret, account) = match secret_and_account.split_once('@') {
        Some((s, a)) => (s, Some(a.to_owned())),
        None => (secret_and_account, None),
    };
    if key.is_empty() || secret.is_empty() {
        return Err("key and secret must not be empty".into());
    }
    if account.as_deref() == Some("") {
        return Err("empty account after '@'".into());
    }
    if key.starts_with("account-") != account.is_some() {
        return Err("account- keys, and only they, take @ACCOUNT".into());
    }
    let mut out = KeySpec {
        key: key.to_owned(),
        secret: secret.to_owned(),
        nonce_mode: NonceMode::Increasing,
        roles: vec![Role::Trader, Role::Auditor],
        account,
        group: None,
    };
    for option in parts {
        match option {
            "time" => out.nonce_mode = NonceMode::Time,
            "increasing" => out.nonce_mode = NonceMode::Increasing,
            _ if option.starts_with("group=") => {
                let group = &option["group=".len()..];
                if group.is_empty() {
                    return Err("empty group after 'group='".into());
                }
                out.group = Some(group.to_owned());
            }
            _ => {
                let roles = option
                    .strip_prefix("roles=")
                    .ok_or_else(|| format!("unknown key option {option:?}"))?;
                out.roles = roles
                    .split(',')
                    .filter(|r| !r.is_empty())
                    .map(|r| match r.to_ascii_lowercase().as_str() {
                        "trader" => Ok(Role::Trader),
                        "auditor" => Ok(Role::Auditor),
                        "fundmanager" => Ok(Role::Fundmanager),
                        _ => Err(format!("unknown role {r:?}")),
                    })
                    .collect::<Result<_, _>>()?;
            }
        }
    }
    Ok(out)
}

/// `NAME=N`: the order count of one account.
pub fn parse_orders_for(spec: &str) -> Result<(String, u32), String> {
    let (name, n) = spec.rsplit_once('=').ok_or("expected NAME=N")?;
    if name.is_empty() {
        return Err("empty account name before '='".into());
    }
    let n = n
        .trim()
        .parse::<u32>()
        .map_err(|e| format!("{n:?} is not a count: {e}"))?;
    Ok((name.to_owned(), n))
}

/// `MIN..=MAX` or a single `N`.
pub fn parse_orders(spec: &str) -> Result<RangeInclusive<u32>, String> {
    let number = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|e| format!("{s:?} is not a count: {e}"))
    };
    let range = match spec.split_once("..=") {
        Some((lo, hi)) => number(lo)?..=number(hi)?,
        None => {
            let n = number(spec)?;
            n..=n
        }
    };
    if range.is_empty() {
        return Err(format!("{spec:?} is an empty range"));
    }
    Ok(range)
}

fn read_accounts(path: &Path) -> Result<Vec<AccountSpec>, SimCliError> {
    let csv_error = |source| SimCliError::AccountsFile {
        path: path.to_owned(),
        source,
    };
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(path)
        .map_err(csv_error)?;
    let headers = reader.headers().map_err(csv_error)?.clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let account_col = column("account").ok_or_else(|| SimCliError::NoAccountColumn(path.into()))?;
    let (type_col, status_col, group_col) = (column("type"), column("status"), column("group"));
    let mut accounts = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let field = |col: Option<usize>| col.and_then(|c| record.get(c)).unwrap_or("");
        let name = field(Some(account_col)).to_owned();
        if name.is_empty() {
            continue;
        }
        let bad = |problem: String| SimCliError::BadAccount {
            path: path.to_owned(),
            account: name.clone(),
            problem,
        };
        let kind = match field(type_col).to_ascii_lowercase().as_str() {
            "" | "exchange" => AccountKind::Exchange,
            "custody" => AccountKind::Custody,
            other => return Err(bad(format!("unknown type {other:?}"))),
        };
        let status = match field(status_col).to_ascii_lowercase().as_str() {
            "" | "open" => AccountStatus::Open,
            "closed" => AccountStatus::Closed,
            other => return Err(bad(format!("unknown status {other:?}"))),
        };
        let group = Some(field(group_col))
            .filter(|g| !g.is_empty())
            .map(str::to_owned);
        accounts.push(AccountSpec {
            name,
            kind,
            status,
            group,
        });
    }
    Ok(accounts)
}

fn generate_master_key() -> KeySpec {
    let mut rng = rand::rng();
    let mut token = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(rng.sample(Alphanumeric)))
            .collect()
    };
    KeySpec {
        key: format!("master-{}", token(20)),
        secret: token(28),
        nonce_mode: NonceMode::Increasing,
        roles: vec![Role::Trader, Role::Auditor],
        account: None,
        group: None,
    }
}

/// Writes a temporary file next to `path` and renames it over, so readers never see half a file.
fn write_ledger(path: &Path, shared: &Shared) -> Result<(), SimCliError> {
    let io_error = |source| SimCliError::Ledger {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io_error(std::io::Error::other("the ledger path names no file")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(&tmp)?);
        shared.write_ledger_json(&mut file, true)?;
        file.write_all(b"\n")?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_error)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
