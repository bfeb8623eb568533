//! `run --config FILE`: several groups (master keys) swept in one job.
//!
//! The file is TOML. Settings apply in this order, each over the one before: the built-in
//! defaults, the file's `[defaults]`, the command-line flags, then the group's own settings (a
//! group's nonce mode or rate is a fact about its key, which a flag meant for every group must not
//! override). Paths in the file are relative to the file's directory, so a job's working
//! directory does not matter.
//!
//! ```toml
//! [defaults]
//! rate = 5
//!
//! [[group]]
//! name = "desk-a"
//! key_env = "DESK_A_KEY"          # the master key's id
//! secret_file = "desk-a.secret"   # or secret_env = "DESK_A_SECRET"
//! accounts = "all"                # every open exchange account, or a CSV path
//! exclude = ["market-maker-1"]
//! nonce_mode = "time"
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::fmt;

use crate::accounts::AccountsError;
use crate::client::{Credentials, NonceMode};
use crate::config::credentials::{KeyError, KeySource};
use crate::config::endpoint::{UrlError, validate_base_url, validate_proxy};
use crate::config::{ConfigError, DEFAULT_GROUP, HoldError, SANDBOX_URL, SweepConfig};
use crate::input_file::{InputError, InputFile};

/// Largest configuration file read: a group is a few lines, so this is thousands of groups.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

const CONFIG_FILE: InputFile = InputFile {
    what: "configuration file",
    max_bytes: MAX_FILE_BYTES,
    hint: "give the path of a TOML configuration file",
    text_hint: " (TOML is)",
};

/// A `--config` file that cannot be used: the file, where in it, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub struct ConfigFileError {
    pub path: PathBuf,
    /// `[defaults]`, or `[[group]] "name"` (`[[group]] #2` for one without a name); `None` for
    /// the file as a whole.
    pub place: Option<String>,
    #[source]
    pub problem: FileProblem,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        if let Some(place) = &self.place {
            write!(f, "{place}: ")?;
        }
        write!(f, "{}", self.problem)
    }
}

impl ConfigFileError {
    /// The accounts CSV of group `group` of the file at `path` cannot be used: its own message
    /// names the CSV; the file and the group say which of possibly many groups it is.
    pub fn group_accounts(path: &Path, group: &str, e: AccountsError) -> ConfigFileError {
        ConfigFileError {
            path: path.to_path_buf(),
            place: Some(format!("[[group]] {group:?}")),
            problem: FileProblem::Accounts(e),
        }
    }
}

/// What is wrong at one place of a `--config` file.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error(transparent)]
    Unreadable(#[from] InputError),
    /// toml's message names the line and column; it is kept on one line.
    #[error("{}", one_line(.0))]
    Toml(#[source] toml::de::Error),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("hold {0}")]
    Hold(#[source] HoldError),
    #[error(transparent)]
    Excludes(#[from] AccountsError),
    /// The group's accounts CSV, read once the file is.
    #[error("accounts: {0}")]
    Accounts(#[source] AccountsError),
    /// A table or a setting that breaks the file's rules; nothing underneath failed.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(text: impl Into<String>) -> FileProblem {
    FileProblem::Invalid(text.into())
}

/// What one group sweeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupAccounts {
    /// Every open exchange account `/v1/account/list` gives, but these nicknames.
    All { excluded: BTreeSet<String> },
    /// The accounts of this CSV.
    Csv(PathBuf),
}

/// One group of the file, validated, with its key loaded.
pub struct GroupPlan {
    pub config: SweepConfig,
    pub credentials: Credentials,
    pub accounts: GroupAccounts,
}

/// Settings a group may take from `[defaults]` or set itself.
const SETTINGS: &[&str] = &[
    "base_url",
    "sandbox",
    "proxy",
    "rate",
    "burst",
    "concurrency",
    "timeout",
    "max_attempts",
    "reject_retries",
    "verify",
    "snapshot",
    "nonce_mode",
    "grace",
    "hold",
];

/// Keys of a `[[group]]` beyond the settings.
const GROUP_KEYS: &[&str] = &[
    "name",
    "key_env",
    "secret_env",
    "secret_file",
    "accounts",
    "exclude",
    "exclude_file",
];

/// Reads and validates the file; `over_defaults` applies the command line's flags (they sit
/// between the file's `[defaults]` and each group's own settings); `only` keeps the named groups.
/// Every group is checked and every key loaded before anything is sent.
pub fn load(
    path: &Path,
    db: &Path,
    lock_dir: Option<&Path>,
    only: &[String],
    over_defaults: &dyn Fn(&mut SweepConfig) -> Result<(), ConfigError>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<GroupPlan>, ConfigError> {
    let at = |place: Option<String>, problem: FileProblem| ConfigFileError {
        path: path.to_path_buf(),
        place,
        problem,
    };
    let fail = |text: String| ConfigError::from(at(None, invalid(text)));
    let (text, _) = CONFIG_FILE
        .read_text(path)
        .map_err(|e| at(None, e.into()))?;
    let doc: toml::Table = text.parse().map_err(|e| at(None, FileProblem::Toml(e)))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));

    for key in doc.keys() {
        if key != "defaults" && key != "group" {
            return Err(fail(format!(
                "unknown top-level key `{key}`{}; the file has a [defaults] table and [[group]] tables (the database and lock directory come from --db and --lock-dir)",
                likely(key, &["defaults", "group"])
            )));
        }
    }
    let mut defaults = SweepConfig::defaults(PathBuf::new(), db.to_path_buf());
    defaults.lock_dir = lock_dir.map(Path::to_path_buf);
    if let Some(table) = doc.get("defaults") {
        let defaults_at = |problem| at(Some("[defaults]".into()), problem);
        let table = table
            .as_table()
            .ok_or_else(|| fail("`defaults` must be a table: [defaults]".into()))?;
        for key in table.keys() {
            if !SETTINGS.contains(&key.as_str()) {
                let hint = if GROUP_KEYS.contains(&key.as_str()) {
                    format!(
                        "`{key}` belongs to each [[group]] (a default for it would silently apply to, or be ignored by, every group); move it there"
                    )
                } else {
                    format!("unknown setting `{key}`{}", likely(key, SETTINGS))
                };
                return Err(defaults_at(invalid(format!(
                    "{hint}; [defaults] takes only the settings {}",
                    SETTINGS.join(", ")
                )))
                .into());
            }
        }
        apply_settings(table, &mut defaults).map_err(defaults_at)?;
    }
    over_defaults(&mut defaults)?;

    let groups = match doc.get("group") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items.clone(),
        Some(_) => return Err(fail("`group` must be an array of tables: [[group]]".into())),
    };
    if groups.is_empty() {
        return Err(fail(
            "names no group; add a [[group]] table with name, key_env and accounts".into(),
        ));
    }

    let mut plans = Vec::new();
    let mut names = BTreeSet::new();
    let mut keys: HashMap<String, String> = HashMap::new();
    for (i, item) in groups.iter().enumerate() {
        let label = match item.get("name").and_then(toml::Value::as_str) {
            Some(name) => format!("[[group]] {name:?}"),
            None => format!("[[group]] #{}", i + 1),
        };
        let group_fail = |problem| at(Some(label.clone()), problem);
        let table = item
            .as_table()
            .ok_or_else(|| group_fail(invalid("must be a table")))?;
        let plan = group(table, &defaults, base_dir, env).map_err(group_fail)?;
        let name = plan.config.group.clone();
        if !names.insert(name.clone()) {
            return Err(fail(format!(
                "two groups are named {name:?}; give each group its own name"
            )));
        }
        if let Some(other) = keys.insert(plan.credentials.key.clone(), name.clone()) {
            return Err(fail(format!(
                "groups {other:?} and {name:?} use the same API key ({}); one key is one group (two sweeps on one key would race each other's nonces)",
                plan.credentials.fingerprint()
            )));
        }
        plans.push(plan);
    }
    for wanted in only {
        if !names.contains(wanted) {
            return Err(fail(format!(
                "--group {wanted:?}: no such group; the file names {}",
                names.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    if !only.is_empty() {
        plans.retain(|p| only.contains(&p.config.group));
    }
    Ok(plans)
}

fn one_line(text: &impl fmt::Display) -> String {
    text.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `exclude` must be.
const EXCLUDE_LIST: &str = "exclude: a list of nicknames, e.g. [\"mm-1\", \"mm-2\"]";

fn group(
    table: &toml::Table,
    defaults: &SweepConfig,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GroupPlan, FileProblem> {
    for key in table.keys() {
        if !GROUP_KEYS.contains(&key.as_str()) && !SETTINGS.contains(&key.as_str()) {
            let known: Vec<&str> = GROUP_KEYS.iter().chain(SETTINGS).copied().collect();
            return Err(invalid(format!(
                "unknown key `{key}`{}; a group has {} and the settings {}",
                likely(key, &known),
                GROUP_KEYS.join(", "),
                SETTINGS.join(", ")
            )));
        }
    }
    let name = required_str(table, "name")?;
    if name.eq_ignore_ascii_case(DEFAULT_GROUP) {
        return Err(invalid(format!(
            "name {name:?} is reserved: runs made without --config are stored as group {DEFAULT_GROUP:?}, and `runs`/`report --group` would mix the two; give the group its own name"
        )));
    }
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(format!(
            "name {name:?}: use 1-64 letters, digits, '-', '_' or '.' (it names the group in the database, logs and metrics)"
        )));
    }
    let key_env = required_str(table, "key_env")?;
    let secret_env = optional_str(table, "secret_env")?;
    let secret_file = optional_str(table, "secret_file")?.map(|p| base_dir.join(p));
    let secret_env = match (secret_env, &secret_file) {
        (Some(_), Some(_)) => {
            return Err(invalid("give secret_env or secret_file, not both"));
        }
        (None, None) => {
            return Err(invalid(
                "give the key's secret: secret_env = \"VARIABLE\" or secret_file = \"PATH\"",
            ));
        }
        (env_name, _) => env_name.unwrap_or_default(),
    };
    let credentials = KeySource {
        key_env: &key_env,
        secret_env: &secret_env,
        secret_file: secret_file.as_deref(),
        secret_file_setting: "secret_file = \"PATH\"",
    }
    .load(env)?;

    let mut config = defaults.clone();
    config.group = name.clone();
    apply_settings(table, &mut config)?;

    let accounts_value = required_str(table, "accounts")?;
    if accounts_value.is_empty() {
        return Err(invalid(
            "`accounts` is empty; give \"all\" (every open exchange account) or the path of an accounts CSV",
        ));
    }
    let exclude = match table.get("exclude") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(EXCLUDE_LIST))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid(EXCLUDE_LIST)),
    };
    let exclude_file = optional_str(table, "exclude_file")?.map(|p| base_dir.join(p));
    let accounts = if accounts_value == "all" {
        let excluded = crate::accounts::excludes(&exclude, exclude_file.as_deref())?;
        config.accounts_file = PathBuf::from("(--all-accounts)");
        GroupAccounts::All { excluded }
    } else {
        if !exclude.is_empty() || exclude_file.is_some() {
            return Err(invalid(
                "exclude and exclude_file go with accounts = \"all\"; with a CSV, set enabled=false on the account's line",
            ));
        }
        let csv = base_dir.join(&accounts_value);
        config.accounts_file = csv.clone();
        GroupAccounts::Csv(csv)
    };
    Ok(GroupPlan {
        config,
        credentials,
        accounts,
    })
}

/// ` (did you mean `rate`?)` when `key` is a likely misspelling of one of `known`.
fn likely(key: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| {
            (
                crate::accounts::edit_distance(&key.to_ascii_lowercase(), k),
                *k,
            )
        })
        .min()
        .filter(|(d, _)| *d <= 2)
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

fn required_str(table: &toml::Table, key: &str) -> Result<String, FileProblem> {
    optional_str(table, key)?.ok_or_else(|| invalid(format!("`{key}` is missing")))
}

fn optional_str(table: &toml::Table, key: &str) -> Result<Option<String>, FileProblem> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(_) => Err(invalid(format!("`{key}` must be a string"))),
    }
}

/// Applies the settings a table gives, with the same bounds as the flags of the same names.
fn apply_settings(table: &toml::Table, config: &mut SweepConfig) -> Result<(), FileProblem> {
    for key in table.keys() {
        if !SETTINGS.contains(&key.as_str()) && !GROUP_KEYS.contains(&key.as_str()) {
            return Err(invalid(format!(
                "unknown setting `{key}`; the settings are {}",
                SETTINGS.join(", ")
            )));
        }
    }
    let number = |key: &str, min: f64, max: f64| -> Result<Option<f64>, FileProblem> {
        let Some(value) = table.get(key) else {
            return Ok(None);
        };
        let v = match value {
            toml::Value::Integer(i) => *i as f64,
            toml::Value::Float(f) => *f,
            _ => return Err(invalid(format!("`{key}` must be a number"))),
        };
        if !(v.is_finite() && (min..=max).contains(&v)) {
            return Err(invalid(format!(
                "`{key}` = {v}: must be from {min} to {max}"
            )));
        }
        Ok(Some(v))
    };
    let whole = |key: &str, min: u32, max: u32| -> Result<Option<u32>, FileProblem> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if (min as i64..=max as i64).contains(i) => {
                Ok(Some(*i as u32))
            }
            Some(_) => Err(invalid(format!(
                "`{key}` must be a whole number from {min} to {max}"
            ))),
        }
    };
    let flag = |key: &str| -> Result<Option<bool>, FileProblem> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(invalid(format!("`{key}` must be true or false"))),
        }
    };

    if let Some(url) = optional_str(table, "base_url")? {
        if flag("sandbox")? == Some(true) {
            return Err(invalid("give base_url or sandbox = true, not both"));
        }
        config.base_url = validate_base_url("base_url", &url)?.to_string();
    } else if flag("sandbox")? == Some(true) {
        config.base_url = SANDBOX_URL.to_string();
    }
    if let Some(proxy) = optional_str(table, "proxy")? {
        config.proxy = Some(validate_proxy("proxy", &proxy)?.to_string());
    }
    if let Some(v) = number("rate", 0.1, 100_000.0)? {
        config.rate = v;
    }
    if let Some(v) = whole("burst", 1, 100)? {
        config.burst = v;
    }
    if let Some(v) = whole("concurrency", 1, 1024)? {
        config.concurrency = v;
    }
    if let Some(v) = number("timeout", 0.1, 600.0)? {
        config.timeout = Duration::from_secs_f64(v);
    }
    if let Some(v) = whole("max_attempts", 1, 100)? {
        config.max_attempts = v;
    }
    if let Some(v) = whole("reject_retries", 0, 10)? {
        config.reject_retries = v;
    }
    if let Some(v) = flag("verify")? {
        config.verify = v;
    }
    if let Some(v) = flag("snapshot")? {
        config.snapshot = v;
    }
    if let Some(v) = number("grace", 0.0, 600.0)? {
        config.grace = Duration::from_secs_f64(v);
    }
    if let Some(text) = optional_str(table, "hold")? {
        config.hold = super::parse_hold(&text).map_err(FileProblem::Hold)?;
    }
    match optional_str(table, "nonce_mode")?.as_deref() {
        None => {}
        Some("increasing") => config.nonce_mode = NonceMode::Increasing,
        Some("time") => config.nonce_mode = NonceMode::Time,
        Some(other) => {
            return Err(invalid(format!(
                "nonce_mode {other:?}: \"increasing\" or \"time\", as the key was created on Gemini"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env(name: &str) -> Option<String> {
        match name {
            "A_KEY" => Some("master-aaa".into()),
            "A_SECRET" => Some("secret-a".into()),
            "B_KEY" => Some("master-bbb".into()),
            "B_SECRET" => Some("secret-b".into()),
            "SAME_AS_A" => Some("master-aaa".into()),
            _ => None,
        }
    }

    fn load_text(text: &str, only: &[String]) -> Result<Vec<GroupPlan>, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("groups.toml");
        std::fs::write(&path, text).unwrap();
        let flags = |c: &mut SweepConfig| {
            c.concurrency = 4;
            Ok(())
        };
        load(&path, Path::new("sweep.db"), None, only, &flags, &env)
    }

    const TWO: &str = r#"
[defaults]
rate = 3
concurrency = 16
nonce_mode = "time"

[[group]]
name = "desk-a"
key_env = "A_KEY"
secret_env = "A_SECRET"
accounts = "all"
exclude = ["mm-1"]

[[group]]
name = "desk-b"
key_env = "B_KEY"
secret_env = "B_SECRET"
accounts = "b.csv"
rate = 7.5
concurrency = 2
nonce_mode = "increasing"
"#;

    #[test]
    fn defaults_then_flags_then_the_group_s_own_settings() {
        let plans = load_text(TWO, &[]).unwrap();
        assert_eq!(plans.len(), 2);
        let (a, b) = (&plans[0], &plans[1]);
        assert_eq!(a.config.group, "desk-a");
        assert_eq!(a.config.rate, 3.0, "from [defaults]");
        assert_eq!(a.config.concurrency, 4, "the flag beats [defaults]");
        assert_eq!(a.config.nonce_mode, NonceMode::Time);
        assert_eq!(
            a.accounts,
            GroupAccounts::All {
                excluded: ["mm-1".to_string()].into()
            }
        );
        assert_eq!(a.credentials.secret.expose_secret(), "secret-a");
        assert_eq!(b.config.rate, 7.5);
        assert_eq!(b.config.concurrency, 2, "the group beats the flag");
        assert_eq!(b.config.nonce_mode, NonceMode::Increasing);
        match &b.accounts {
            GroupAccounts::Csv(p) => assert!(p.ends_with("b.csv") && p.is_absolute(), "{p:?}"),
            other => panic!("{other:?}"),
        }
        let only = load_text(TWO, &["desk-b".into()]).unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].config.group, "desk-b");
    }

    #[test]
    fn mistakes_are_named_with_the_group_and_what_to_do() {
        let cases: &[(&str, &str)] = &[
            (
                &TWO.replace("rate = 7.5", "rat = 7.5"),
                "\"desk-b\": unknown key `rat` (did you mean `rate`?)",
            ),
            (
                &TWO.replace("rate = 7.5", "rate = 0"),
                "`rate` = 0: must be from 0.1",
            ),
            (&TWO.replace("B_KEY", "SAME_AS_A"), "use the same API key"),
            (
                &TWO.replace("desk-b", "desk-a"),
                "two groups are named \"desk-a\"",
            ),
            (&TWO.replace("B_SECRET", "NOPE"), "NOPE is not set"),
            (&TWO.replace("\"B_KEY\"", "\"NO_KEY\""), "NO_KEY is not set"),
            (
                &TWO.replace("accounts = \"all\"", ""),
                "`accounts` is missing",
            ),
            (
                &TWO.replace(
                    "accounts = \"b.csv\"",
                    "accounts = \"b.csv\"\nexclude = [\"x\"]",
                ),
                "go with accounts = \"all\"",
            ),
            (
                &TWO.replace("nonce_mode = \"time\"", "nonce_mode = \"fast\""),
                "[defaults]: nonce_mode \"fast\"",
            ),
            (
                &TWO.replace("[defaults]", "db = \"x\"\n[defaults]"),
                "unknown top-level key `db`",
            ),
            (&TWO.replace("rate = 3", "rate = = 3"), "line"),
            ("[defaults]\nrate = 2\n", "names no group"),
            (
                &TWO.replace("rate = 3", "rate = 3\nexclude = [\"mm-2\"]"),
                "[defaults]: `exclude` belongs to each [[group]]",
            ),
            (
                &TWO.replace("rate = 3", "rate = 3\nratee = 3"),
                "[defaults]: unknown setting `ratee` (did you mean `rate`?)",
            ),
            (
                &TWO.replace("name = \"desk-a\"", "name = \"default\""),
                "name \"default\" is reserved",
            ),
            (
                &TWO.replace("accounts = \"b.csv\"", "accounts = \"\""),
                "\"desk-b\": `accounts` is empty",
            ),
            (
                &TWO.replace("name = \"desk-a\"", "name = \"desk a\""),
                "use 1-64 letters",
            ),
        ];
        for (text, expected) in cases {
            let err = load_text(text, &[]).err().expect(expected).to_string();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
            assert!(err.contains("groups.toml"), "{err}");
            assert!(!err.contains('\n'), "{err}");
            assert!(
                !err.contains("secret-a") && !err.contains("secret-b"),
                "{err}"
            );
        }
        let err = load_text(TWO, &["desk-c".into()])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("--group \"desk-c\": no such group; the file names desk-a, desk-b"),
            "{err}"
        );
    }
}
