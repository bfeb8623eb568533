//! The edge: parse the command line ([`args`]), set up logging and signals (`signals`), call
//! the library, turn the result into stdout, stderr and the exit code [`crate::exit`] decides.
//! `--dry-run`'s plan is `dry_run`'s.

pub mod args;
mod dry_run;
mod signals;

use std::io::Write;
use std::sync::Arc;

use crate::cli::args::{AccountsArgs, Cli, Command, DemoArgs, ReportArgs, RunArgs, RunsArgs};
use crate::config::groups::{GroupAccounts, GroupPlan};
use crate::config::{ConfigError, ConfigFileError, SweepConfig};
use crate::display::{self, Display};
use crate::engine::{
    self, GroupJob, ResumePlan, ResumeRequest, StopTokens, SweepSummary, Target, resume_target,
};
use crate::error::Error;
use crate::exit::Exit;
use crate::output_file::{self, Output};
use crate::store::store_error;
use crate::{accounts, atomic_file, client, demo, lock, report, store};
use dry_run::print_plan;
use signals::{signal_seen, watch_signals};

/// Runs the program and returns its exit code.
pub fn main() -> Exit {
    let cli = match Cli::parse_with_origins() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    return Exit::Ok;
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    return Exit::BadInput;
                }
                _ => {}
            }
            let argv: Vec<_> = std::env::args_os().collect();
            let command = <Cli as clap::CommandFactory>::command();
            let origins = args::Origins::guess(&command, &argv);
            eprintln!("{}", clap_error_line(&e.render().to_string(), &origins));
            return Exit::BadInput;
        }
    };
    let origins = cli.origins.clone();
    let display = match &cli.command {
        Command::Run(args) => Display::choose(
            cli.log_format,
            std::time::Duration::from_secs_f64(args.progress_interval),
            !args.dry_run,
        ),
        _ => Display::Quiet,
    };
    display::init_logging(cli.log_format, display);
    // The sweeper runs on one thread: its dispatchers and requests wait on the network, not on
    // the CPU (SQLite has its own writer thread, large replies are parsed on the blocking pool).
    // Nothing depends on it: each key's dispatcher orders its own requests. The simulator
    // models an exchange serving many connections at once, so it gets the worker pool.
    let mut builder = if matches!(cli.command, Command::Sim(_)) {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Internal;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args, display).await,
            Command::Demo(args) => run_demo(args).await,
            Command::Sim(args) => gemini_sim::cli::run(args)
                .await
                .map(|()| Exit::Ok)
                .map_err(|e| Error::Simulator(Box::new(e))),
            Command::Report(args) => run_report(args),
            Command::Runs(args) => list_runs(args),
            Command::Accounts(args) => list_accounts(args).await,
            Command::Completions { shell } => {
                let mut command = <Cli as clap::CommandFactory>::command();
                let mut text = Vec::new();
                clap_complete::generate(shell, &mut command, "gemini-sweep", &mut text);
                if shell == clap_complete::Shell::Bash {
                    // clap_complete spells a hyphenated name one way in the bash script's state
                    // and another in the arms that match it, so no subcommand's flags complete
                    // (clap-rs/clap#6421): spell the arms the way the state is built.
                    text = String::from_utf8_lossy(&text)
                        .replace("gemini__subcmd__sweep__subcmd__", "gemini__sweep__subcmd__")
                        .into_bytes();
                }
                print_bytes(&text)
            }
            Command::Man { command } => man_page(command.as_deref()),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, whatever the log format (the operator guide promises it), whatever the
            // exchange wrote into the message; a value from the environment is said to be so.
            let message = match e.exit() {
                Exit::BadInput => origins.explain(&e.to_string()),
                _ => e.to_string(),
            };
            eprintln!("error: {}", display::escape(&message));
            e.exit()
        }
    }
}

/// clap's error (`rendered`) as one line: its message with what makes it useful (a similar
/// flag's name, the missing arguments, the possible values), without the usage block, with
/// where a value came from when that was the environment, and outside text (a value the user
/// gave) escaped.
fn clap_error_line(rendered: &str, origins: &args::Origins) -> String {
    let mut line = String::new();
    // Within a list clap introduces with a colon (the missing arguments).
    let mut listing = false;
    for raw in rendered.lines() {
        let part = raw.trim();
        if part.starts_with("Usage:") || part.starts_with("For more information") {
            break;
        }
        if part.is_empty() {
            listing = false;
            continue;
        }
        if line.is_empty() {
            line.push_str(part);
        } else if part.starts_with('[') {
            line.push(' ');
            line.push_str(part);
        } else if line.ends_with(':') {
            line.push(' ');
            line.push_str(part);
            listing = true;
        } else if listing {
            line.push_str(", ");
            line.push_str(part);
        } else {
            line.push_str("; ");
            line.push_str(part);
        }
    }
    if line.is_empty() {
        line.push_str("error: invalid arguments");
    }
    format!("{} (see --help)", display::escape(&origins.explain(&line)))
}

/// A man page generated from the same definitions as `--help`.
fn man_page(subcommand: Option<&str>) -> Result<Exit, Error> {
    let mut command = <Cli as clap::CommandFactory>::command();
    command.build();
    let (page, name) = match subcommand {
        None => (command, "gemini-sweep".to_string()),
        Some(wanted) => {
            let Some(sub) = command.find_subcommand(wanted).cloned() else {
                let names: Vec<_> = command
                    .get_subcommands()
                    .map(|c| c.get_name().to_string())
                    .collect();
                return Err(Error::Usage(format!(
                    "man {wanted}: no such command; give one of {}",
                    names.join(", ")
                )));
            };
            let name = format!("gemini-sweep-{wanted}");
            (sub, name)
        }
    };
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .title(name)
        .source(format!("gemini-sweep {}", env!("CARGO_PKG_VERSION")))
        .manual("gemini-sweep manual")
        .render(&mut text)
        .map_err(|e| Error::internal("render the man page", e))?;
    print_bytes(&text)
}

/// Writes generated text to stdout; a reader that stops early (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> Result<Exit, Error> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(Exit::Ok),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Exit::Ok),
        Err(e) => Err(Error::internal("write to stdout", e)),
    }
}

async fn run(args: RunArgs, display: Display) -> Result<Exit, Error> {
    args.check_flag_mix()?;
    if let Some(path) = &args.metrics_file {
        check_metrics_file(path)?;
    }
    if let Some(file) = &args.config {
        return run_config(&args, file, display).await;
    }
    let env = |name: &str| std::env::var(name).ok();
    let (config, credentials, target) = match &args.resume {
        None if args.all_accounts => {
            let (config, credentials) = args.resolve(&env)?;
            let excluded = accounts::excludes(&args.exclude, args.exclude_file.as_deref())?;
            (config, credentials, Target::Discover { excluded })
        }
        None => {
            let (config, credentials) = args.resolve(&env)?;
            let entries = accounts::load(&config.accounts_file)?;
            (config, credentials, Target::New(entries))
        }
        Some(run) => match resume_target(&resume_request(&args, run, None), |base| {
            Ok(args.resolve_over(base, &env)?)
        })? {
            ResumePlan::Sweep(job) => (job.config, job.credentials, job.target),
            ResumePlan::NothingToDo(summary) => {
                print_summary(&summary);
                write_metrics(&args, &[outcome_of(&summary)]);
                return Ok(summary.exit_code);
            }
        },
    };
    check_sweep_outputs(&config, &credentials)?;
    engine::plan(&credentials, &target, &config)?;
    if args.dry_run {
        let plan = print_plan(&config, &target, &credentials).to_string();
        println!("{}", display::json_safe(&plan));
        return Ok(Exit::Ok);
    }
    let job = GroupJob {
        config,
        credentials,
        target,
    };
    let mut results = sweep(vec![job], display).await?;
    let summary = results.pop().expect("one job, one result")?;
    print_summary(&summary);
    write_metrics(&args, &[outcome_of(&summary)]);
    Ok(summary.exit_code)
}

fn outcome_of(summary: &SweepSummary) -> report::metrics::GroupOutcome<'_> {
    report::metrics::GroupOutcome {
        group: &summary.totals.group,
        exit_code: summary.exit_code,
        summary: Some(summary),
    }
}

/// `--metrics-file` refused before anything is sent when it could not be written: `-` too,
/// since standard output carries the JSON summary.
fn check_metrics_file(path: &std::path::Path) -> Result<(), Error> {
    if path == std::path::Path::new("-") {
        return Err(Error::Usage(
            "--metrics-file -: standard output carries the JSON summary; name a file in node_exporter's textfile directory".into(),
        ));
    }
    Ok(output_file::file("--metrics-file", path)?)
}

/// What a sweep writes besides its metrics, refused up front (exit 2, nothing sent) when it is
/// not absent or a regular file: the database with SQLite's files beside it, and the locks.
fn check_sweep_outputs(
    config: &SweepConfig,
    credentials: &client::Credentials,
) -> Result<(), Error> {
    store::check_outputs(&config.db)?;
    let fingerprints = [credentials.fingerprint()];
    Ok(lock::check_outputs(
        &config.db,
        config.lock_dir.as_deref(),
        &fingerprints,
    )?)
}

/// `--metrics-file`, after the summary is out. A failure is logged, not fatal: the sweep
/// happened, and the metrics' stale timestamps are what the alert watches.
fn write_metrics(args: &RunArgs, outcomes: &[report::metrics::GroupOutcome]) {
    let Some(path) = &args.metrics_file else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let db = &args.exchange.db;
    let written = || -> Result<(), Error> {
        let conn = store::open_read_only(db)?;
        let text = report::metrics::render(&conn, outcomes, (now * 1000.0).round() / 1000.0)
            .map_err(|e| store_error(db, e))?;
        report::metrics::write_atomic(path, &text).map_err(|source| Error::Unwritable {
            path: path.clone(),
            what: "the metrics",
            source,
        })
    };
    match written() {
        Ok(()) => tracing::debug!(file = %path.display(), "metrics written"),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot write the metrics file")
        }
    }
}

/// `run --config FILE`: every group of the file (or those --group names) in parallel, one line
/// of JSON for the job with one entry per group.
async fn run_config(
    args: &RunArgs,
    file: &std::path::Path,
    display: Display,
) -> Result<Exit, Error> {
    let env = |name: &str| std::env::var(name).ok();
    let plans = args.resolve_groups(file, &env)?;
    let ConfigJobs { jobs, settled } = config_jobs(args, file, plans)?;
    if args.dry_run {
        let plans: Vec<_> = jobs
            .iter()
            .map(|j| {
                eprintln!("group {}:", j.config.group);
                print_plan(&j.config, &j.target, &j.credentials)
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "dry_run": true, "groups": plans })
        );
        return Ok(Exit::Ok);
    }
    let started = std::time::Instant::now();
    let names: Vec<String> = jobs.iter().map(|j| j.config.group.clone()).collect();
    let mut results = if jobs.is_empty() {
        Vec::new()
    } else {
        sweep(jobs, display).await?
    };
    results.extend(settled.into_iter().map(Ok));
    Ok(print_job(args, &names, results, started))
}

/// The groups of a `--config` job.
struct ConfigJobs {
    /// To sweep, each checked before anything is sent.
    jobs: Vec<GroupJob>,
    /// The summaries of resumed groups that had nothing left to do.
    settled: Vec<SweepSummary>,
}

fn config_jobs(
    args: &RunArgs,
    file: &std::path::Path,
    plans: Vec<GroupPlan>,
) -> Result<ConfigJobs, Error> {
    if args.resume.is_some() {
        // The file still gives each group its key and settings; which accounts to finish is
        // the recorded run's to say, not what the file names today.
        tracing::info!(
            config = %file.display(),
            "--resume: the groups' `accounts`, `exclude` and `exclude_file` are not read; each group finishes its recorded run's own accounts"
        );
    }
    let resume_group = resume_group(args, file, &plans)?;
    let mut jobs = Vec::new();
    let mut settled = Vec::new();
    for plan in plans {
        if resume_group
            .as_ref()
            .is_some_and(|g| *g != plan.config.group)
        {
            continue;
        }
        let job = match config_job(args, file, plan)? {
            ResumePlan::Sweep(job) => job,
            ResumePlan::NothingToDo(summary) => {
                settled.push(summary);
                continue;
            }
        };
        check_sweep_outputs(&job.config, &job.credentials)?;
        engine::plan(&job.credentials, &job.target, &job.config).map_err(|e| Error::InGroup {
            group: job.config.group.clone(),
            source: Box::new(e),
        })?;
        jobs.push(job);
    }
    Ok(ConfigJobs { jobs, settled })
}

/// With `--resume ID`, the group of the file that run belongs to: the job finishes that one run.
fn resume_group(
    args: &RunArgs,
    file: &std::path::Path,
    plans: &[GroupPlan],
) -> Result<Option<String>, Error> {
    let run = match args.resume.as_deref() {
        Some(run) if run != "latest" => run,
        _ => return Ok(None),
    };
    let db = &args.exchange.db;
    let conn = store::open_read_only(db)?;
    let group = store::run_group(&conn, run).map_err(|e| store_error(db, e))?;
    let Some(group) = group else {
        return Err(Error::NoSuchRun {
            db: db.clone(),
            run: run.to_owned(),
            group: None,
            to_resume: true,
        });
    };
    if !plans.iter().any(|p| p.config.group == group) {
        return Err(Error::Usage(format!(
            "run {run} belongs to group {group:?}, which {} does not name (or --group leaves out)",
            file.display()
        )));
    }
    Ok(Some(group))
}

/// One group's job in a `--config` job: a new run over its accounts (always a `Sweep`), or
/// with `--resume`, its recorded run's unfinished accounts.
fn config_job(
    args: &RunArgs,
    file: &std::path::Path,
    plan: GroupPlan,
) -> Result<ResumePlan, Error> {
    let Some(run) = &args.resume else {
        let target = match &plan.accounts {
            GroupAccounts::All { excluded } => Target::Discover {
                excluded: excluded.clone(),
            },
            GroupAccounts::Csv(path) => Target::New(accounts::load(path).map_err(|e| {
                ConfigError::from(ConfigFileError::group_accounts(file, &plan.config.group, e))
            })?),
        };
        return Ok(ResumePlan::Sweep(GroupJob {
            config: plan.config,
            credentials: plan.credentials,
            target,
        }));
    };
    let group = plan.config.group.clone();
    let credentials = plan.credentials;
    let over = |base: SweepConfig| {
        let config = args.flags_over(base)?;
        Ok((config, credentials))
    };
    resume_target(&resume_request(args, run, Some(&group)), over)
}

/// Sweeps the jobs, with signals watched and progress shown.
async fn sweep(
    jobs: Vec<GroupJob>,
    display: Display,
) -> Result<Vec<Result<SweepSummary, Error>>, Error> {
    let stopping = StopTokens::default();
    let signal = watch_signals(stopping.clone());
    let progress = Arc::new(engine::Progress::default());
    let shown = display::show(progress.clone(), display);
    let results = engine::run_groups(
        jobs,
        Arc::new(client::SystemClock),
        stopping,
        progress,
        move || signal_seen(&signal),
    )
    .await?;
    shown.finish().await;
    Ok(results)
}

/// The job's line of JSON, one entry per group (`names` in the order of `results`), and its
/// metrics; returns the job's exit, the most urgent of its groups'.
fn print_job(
    args: &RunArgs,
    names: &[String],
    results: Vec<Result<SweepSummary, Error>>,
    started: std::time::Instant,
) -> Exit {
    let mut entries = Vec::new();
    let mut codes = Vec::new();
    let mut summaries = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(summary) => {
                codes.push(summary.exit_code);
                entries.push(serde_json::to_value(&summary).expect("a summary serializes"));
                summaries.push(Some(summary));
            }
            Err(e) => {
                let group = names.get(i).cloned().unwrap_or_default();
                eprintln!("error: group {group}: {}", display::escape(&e.to_string()));
                codes.push(e.exit());
                entries.push(serde_json::json!({
                    "group": group,
                    "error": e.to_string(),
                    "exit_code": e.exit(),
                }));
                summaries.push(None);
            }
        }
    }
    let exit_code = Exit::combine(codes.iter().copied());
    let outcomes: Vec<report::metrics::GroupOutcome> = entries
        .iter()
        .zip(&codes)
        .zip(&summaries)
        .map(|((entry, code), summary)| report::metrics::GroupOutcome {
            group: entry["group"].as_str().unwrap_or_default(),
            exit_code: *code,
            summary: summary.as_ref(),
        })
        .collect();
    let line = serde_json::json!({
        "groups": entries,
        "wall_ms": started.elapsed().as_millis() as u64,
        "db": args.exchange.db.display().to_string(),
        "exit_code": exit_code,
    });
    println!("{}", display::json_safe(&line.to_string()));
    let _ = std::io::stdout().flush();
    write_metrics(args, &outcomes);
    exit_code
}

/// What `run --resume RUN` asks of the engine, `group` restricting it to that group's runs.
fn resume_request<'a>(
    args: &'a RunArgs,
    run: &'a str,
    group: Option<&'a str>,
) -> ResumeRequest<'a> {
    ResumeRequest {
        db: &args.exchange.db,
        run,
        group,
        retry_permanent: args.retry_permanent,
        within_hours: args.resume_within,
    }
}

/// `gemini-sweep accounts`: the group's accounts, printed and optionally written as a CSV.
async fn list_accounts(args: AccountsArgs) -> Result<Exit, Error> {
    let env = |name: &str| std::env::var(name).ok();
    let (config, credentials) = args.resolve(&env)?;
    let excluded = accounts::excludes(&args.exclude, args.exclude_file.as_deref())?;
    // Refused before the listing is sent, so that exit 2 keeps its promise.
    let csv = match &args.csv {
        Some(path) => Some(output_file::output("--csv", path)?),
        None => None,
    };
    check_sweep_outputs(&config, &credentials)?;
    let stopping = StopTokens::default();
    let _signal = watch_signals(stopping.clone());
    let engine::GroupListing {
        accounts: listed,
        doubt,
    } = engine::list_accounts(config, credentials, Arc::new(client::SystemClock), stopping).await?;
    // A partial list printed or written would pass for the group: a later `run --accounts` over
    // it would end clean with accounts never swept.
    if let Some(doubt) = doubt {
        let not_written = match &csv {
            Some(Output::File(path)) => format!("; {} not written", path.display()),
            Some(Output::Stdout) | None => String::new(),
        };
        return Err(Error::Unavailable(format!(
            "the group's listing may be incomplete ({} accounts listed, none printed{not_written}): {doubt}",
            listed.len()
        )));
    }
    let invalid = listed.iter().filter(|a| a.unusable.is_some()).count();
    if invalid > 0 {
        eprintln!(
            "warning: the exchange listed {invalid} accounts whose nickname breaks the nickname rule (letters, digits, '-', '_' and '.', at most 128 bytes): shown escaped, never swept{}",
            if args.csv.is_some() {
                ", left out of the CSV"
            } else {
                ""
            }
        );
    }
    let to_sweep = listed
        .iter()
        .filter(|a| accounts::skip_reason(a, &excluded).is_none())
        .count();
    let written = listed.len() - invalid;
    // Standard output is the CSV with `--csv -`, and only the CSV: the table would corrupt it.
    if let Some(Output::Stdout) = &csv {
        let bytes = accounts::csv_bytes(&listed, &excluded)
            .map_err(|e| Error::internal("format the accounts CSV", e))?;
        print_bytes(&bytes)?;
        eprintln!("wrote {written} accounts to standard output ({to_sweep} to sweep)");
        return Ok(Exit::Ok);
    }
    if let Some(Output::File(path)) = &csv {
        accounts::write_csv(path, &listed, &excluded).map_err(|source| Error::Unwritable {
            path: path.clone(),
            what: "the accounts CSV",
            source,
        })?;
        eprintln!(
            "wrote {written} accounts to {} ({to_sweep} to sweep)",
            path.display()
        );
    }
    print!("{}", report::accounts(&listed, &excluded, args.format));
    Ok(Exit::Ok)
}

/// The last stdout line, one JSON object: what schedulers (Airflow's XCom among them) pick up.
fn print_summary(summary: &SweepSummary) {
    let line = serde_json::to_string(summary).unwrap_or_else(|e| {
        format!(
            r#"{{"error":"the summary could not be written ({e})","exit_code":{}}}"#,
            summary.exit_code
        )
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", display::json_safe(&line));
    let _ = out.flush();
}

async fn run_demo(args: DemoArgs) -> Result<Exit, Error> {
    store::check_outputs(&args.db)?;
    let hold = args.hold.unwrap_or_default();
    let summary = demo::run(&args.db, args.accounts, hold).await?;
    let conn = store::open_read_only(&args.db)?;
    let table = report::render(
        &conn,
        summary.totals.run_id,
        report::Format::Table,
        report::Only::All,
    )
    .map_err(|e| store_error(&args.db, e))?;
    println!("{table}");
    println!(
        "Run {} against the simulated exchange: {} accounts, {} orders cancelled, {} refused cancellation, {} attempts ({} rate-limited), {} ms.",
        summary.totals.run_id,
        summary.totals.accounts_total,
        summary.totals.orders_cancelled,
        summary.totals.orders_rejected,
        summary.totals.attempts,
        summary.totals.rate_limited,
        summary.wall_ms
    );
    println!(
        "A real run would exit {} here. Audit trail: sqlite3 {} 'SELECT * FROM account_reconciliation WHERE run_id = {}'",
        summary.exit_code,
        args.db.display(),
        summary.totals.run_id
    );
    print_summary(&summary);
    // The demo did its job whatever the simulated exchange refused; only our own errors fail it.
    Ok(Exit::Ok)
}

fn run_report(args: ReportArgs) -> Result<Exit, Error> {
    if args.format == report::Format::Html && args.out.is_none() {
        return Err(Error::Usage(
            "--format html writes a file: give --out FILE (or --out - for standard output)".into(),
        ));
    }
    let out = match &args.out {
        Some(path) => output_file::output("--out", path)?,
        None => Output::Stdout,
    };
    let conn = store::open_read_only(&args.db)?;
    let db_error = |e: rusqlite::Error| store_error(&args.db, e);
    let runs = report_runs(&conn, &args).map_err(db_error)?;
    let Some(shown) = runs.last() else {
        return Err(Error::NoSuchRun {
            db: args.db.clone(),
            run: args.run.clone(),
            group: args.group.clone(),
            to_resume: false,
        });
    };
    let text = if args.format == report::Format::Table {
        let ids: Vec<i64> = runs.iter().map(|r| r.run_id).collect();
        report::tables(&conn, &ids, args.only)
    } else {
        // A CSV, JSON document or page is of one run: the job's others are named on stderr.
        if runs.len() > 1 {
            let others: Vec<String> = runs[..runs.len() - 1]
                .iter()
                .map(|r| format!("--run {} (group {})", r.run_id, display::escape(&r.group)))
                .collect();
            eprintln!(
                "note: the latest job swept {} groups; this report is run {} (group {}); the others: {}",
                runs.len(),
                shown.run_id,
                display::escape(&shown.group),
                others.join(", ")
            );
        }
        report::render(&conn, shown.run_id, args.format, args.only)
    }
    .map_err(db_error)?;
    match &out {
        Output::Stdout => {
            print_bytes(text.as_bytes())?;
        }
        Output::File(out) => {
            atomic_file::write(out, text.as_bytes(), 0o600).map_err(|source| Error::Report {
                path: out.clone(),
                source,
            })?;
            let bytes = text.len();
            tracing::info!(run_id = shown.run_id, out = %out.display(), bytes, "report written");
        }
    }
    Ok(Exit::Ok)
}

/// The runs `report` covers, oldest first: the one `--run ID` or `--group` names, or every run
/// of the latest job (several after `run --config`). Empty when there is no such run.
fn report_runs(
    conn: &rusqlite::Connection,
    args: &ReportArgs,
) -> rusqlite::Result<Vec<store::JobRun>> {
    if args.run == "latest" && args.group.is_none() {
        let job = store::latest_job(conn)?;
        if !job.is_empty() {
            return Ok(job);
        }
    }
    let Some(run_id) = store::resolve_run(conn, &args.run, args.group.as_deref())? else {
        return Ok(Vec::new());
    };
    let group = store::run_group(conn, &run_id.to_string())?.unwrap_or_default();
    Ok(vec![store::JobRun { run_id, group }])
}

fn list_runs(args: RunsArgs) -> Result<Exit, Error> {
    let conn = store::open_read_only(&args.db)?;
    let text = report::runs(&conn, args.format, args.limit, args.group.as_deref())
        .map_err(|e| store_error(&args.db, e))?;
    print!("{text}");
    Ok(Exit::Ok)
}
