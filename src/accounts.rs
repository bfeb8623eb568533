//! The accounts CSV: which subaccounts a run sweeps.
//!
//! Format (see `accounts.example.csv`): a header row with a required `account` column and optional
//! `enabled` and `note` columns; `name`, `type` and `status` (which `accounts --csv` writes) are
//! read past; a column of the user's own starts with `x-`; any other column is refused, so that
//! a misspelled `enabled` never lets the accounts it protects be swept. `#` comment lines and
//! blank lines are skipped; a UTF-8 byte-order mark is accepted. Every error names the file and
//! the line.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::atomic_file;
use crate::client::{AccountState, AccountType, ListedAccount};
use crate::input_file::{InputError, InputFile};

/// Longest nickname we accept; Gemini's are short, and a longer cell is a sign of a broken file.
const MAX_NICKNAME_LEN: usize = 128;
/// The most accounts one file may list, and the most bytes it may hold: far beyond any group,
/// small enough that `--accounts /dev/zero` (or a mistyped path to a huge file) is refused after
/// a fraction of a second instead of filling memory.
pub const MAX_ACCOUNTS: usize = 1_000_000;
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

const ACCOUNTS_FILE: InputFile = InputFile {
    what: "accounts file",
    max_bytes: MAX_FILE_BYTES,
    hint: "an accounts file is a CSV of at most a million short lines: is this the right file?",
    text_hint: "",
};

/// An exclude file lists nicknames (at most 128 bytes each) one per line: a million of them fit.
pub const MAX_EXCLUDE_FILE_BYTES: u64 = 128 * 1024 * 1024;

const EXCLUDE_FILE: InputFile = InputFile {
    what: "exclude file",
    max_bytes: MAX_EXCLUDE_FILE_BYTES,
    hint: "an exclude file lists account nicknames, one per line: is this the right file?",
    text_hint: "; one account nickname per line",
};

/// A problem in a file of account nicknames (the accounts CSV, an exclude file): the file,
/// the line when there is one, and what to fix.
#[derive(Debug, thiserror::Error)]
pub struct AccountsError {
    pub path: PathBuf,
    pub line: Option<u64>,
    #[source]
    pub problem: Problem,
}

impl fmt::Display for AccountsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.problem),
            None => write!(f, "{}: {}", self.path.display(), self.problem),
        }
    }
}

/// What is wrong at one place of an accounts file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error(transparent)]
    File(#[from] InputError),
    #[error("cannot read the header row: {0}")]
    Header(#[source] csv::Error),
    #[error("malformed CSV: {0}")]
    Malformed(#[source] csv::Error),
    /// The file breaks a rule of the format; nothing underneath failed.
    #[error("{0}")]
    Rule(String),
}

/// Where [`parse`] stopped, and why.
#[derive(Debug)]
pub struct ParseError {
    /// 1-based, when the problem is on a line.
    pub line: Option<u64>,
    pub problem: Problem,
}

impl ParseError {
    fn rule(line: Option<u64>, text: impl Into<String>) -> ParseError {
        let problem = Problem::Rule(text.into());
        ParseError { line, problem }
    }

    fn at(self, path: &Path) -> AccountsError {
        let ParseError { line, problem } = self;
        let path = path.to_path_buf();
        AccountsError {
            path,
            line,
            problem,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountEntry {
    pub account: String,
    pub enabled: bool,
    pub note: Option<String>,
    /// 1-based line of the file the entry came from, for messages.
    pub line: u64,
}

/// Reads and validates the whole file before anything is sent.
pub fn load(path: &Path) -> Result<Vec<AccountEntry>, AccountsError> {
    let (bytes, _) = ACCOUNTS_FILE.read(path).map_err(|e| {
        ParseError {
            line: None,
            problem: e.into(),
        }
        .at(path)
    })?;
    parse(&bytes).map_err(|e| e.at(path))
}

/// Parses CSV bytes; errors carry the 1-based line and the problem.
pub fn parse(bytes: &[u8]) -> Result<Vec<AccountEntry>, ParseError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        let empty = "the file is empty; it needs a header row with an `account` column";
        return Err(ParseError::rule(None, empty));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(bytes);
    let mut lines = Lines::new(bytes);
    let columns = Columns::read(&mut reader, &mut lines)?;
    // Sized from the line count so that a large file is not held twice while the vector grows.
    let count = bytes.iter().filter(|&&b| b == b'\n').count();
    let mut entries: Vec<AccountEntry> = Vec::with_capacity(count.min(MAX_ACCOUNTS));
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(lines.csv_error(e, Problem::Malformed)),
        }
        let line = record.position().map_or(0, |p| lines.line_of(p.byte()));
        let Some(entry) = columns.entry(&record, line)? else {
            continue;
        };
        if entries.len() == MAX_ACCOUNTS {
            let split = format!(
                "more than {MAX_ACCOUNTS} accounts listed; split the file (one run per file)"
            );
            return Err(ParseError::rule(Some(line), split));
        }
        entries.push(entry);
    }
    if entries.is_empty() {
        let none = "no accounts listed; add one line per subaccount under the header";
        return Err(ParseError::rule(None, none));
    }
    if let Some((first, repeat)) = first_repeat(&entries) {
        let (account, line) = (&repeat.account, repeat.line);
        return Err(ParseError::rule(
            Some(line),
            format!(
                "account {account:?} is listed twice (lines {} and {line}); keep one line per account",
                first.line
            ),
        ));
    }
    Ok(entries)
}

/// The 1-based lines of byte offsets. csv's own line counter drifts over blank lines and CRLF;
/// byte offsets are exact. Records come in file order, so counting forward from the previous
/// position is linear.
struct Lines<'a> {
    bytes: &'a [u8],
    /// The last offset counted to, and its line.
    from: usize,
    line_at_from: u64,
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8]) -> Lines<'a> {
        Lines {
            bytes,
            from: 0,
            line_at_from: 1,
        }
    }

    /// "\r\n", a lone "\n" and a lone "\r" (old Mac files) each end one line.
    fn is_break(&self, i: usize) -> bool {
        match self.bytes[i] {
            b'\n' => true,
            b'\r' => self.bytes.get(i + 1) != Some(&b'\n'),
            _ => false,
        }
    }

    fn line_of(&mut self, byte: u64) -> u64 {
        let bytes = self.bytes;
        let end = (byte as usize).clamp(self.from, bytes.len());
        let breaks = (self.from..end).filter(|&i| self.is_break(i)).count();
        let line = self.line_at_from + breaks as u64;
        (self.from, self.line_at_from) = (end, line);
        // A record's position can point at the blank lines before it.
        let skipped_blank = (end..bytes.len())
            .take_while(|&i| bytes[i] == b'\r' || bytes[i] == b'\n')
            .filter(|&i| self.is_break(i))
            .count();
        line + skipped_blank as u64
    }

    /// The line of a header found at `at`, which can point at the comment lines before it (the
    /// reader skips them).
    fn header_line(&mut self, mut at: usize) -> u64 {
        let bytes = self.bytes;
        while bytes.get(at) == Some(&b'#')
            || bytes.get(at).is_some_and(|&b| b == b'\r' || b == b'\n')
        {
            match (at..bytes.len()).find(|&i| self.is_break(i)) {
                Some(end) => at = end + 1,
                None => break,
            }
        }
        self.line_of(at as u64)
    }

    /// csv's error `e`, as `problem` at the line it names.
    fn csv_error(&mut self, e: csv::Error, problem: fn(csv::Error) -> Problem) -> ParseError {
        let line = e.position().map(|p| self.line_of(p.byte()));
        let problem = problem(e);
        ParseError { line, problem }
    }
}

/// Where the columns the reader acts on stand in the header.
struct Columns {
    account: usize,
    enabled: Option<usize>,
    note: Option<usize>,
}

impl Columns {
    /// Reads the header row: it must name an `account` column, and no column the reader does
    /// not know.
    fn read(reader: &mut csv::Reader<&[u8]>, lines: &mut Lines) -> Result<Columns, ParseError> {
        let headers = match reader.byte_headers() {
            Ok(headers) => headers.clone(),
            Err(e) => return Err(lines.csv_error(e, Problem::Header)),
        };
        let header_line = lines.header_line(headers.position().map_or(0, |p| p.byte() as usize));
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h.eq_ignore_ascii_case(name.as_bytes()))
        };
        let Some(account) = column("account") else {
            return Err(ParseError::rule(
                Some(header_line),
                no_account_column(&headers),
            ));
        };
        check_columns(&headers).map_err(|problem| ParseError {
            line: Some(header_line),
            problem,
        })?;
        Ok(Columns {
            account,
            enabled: column("enabled"),
            note: column("note"),
        })
    }

    /// The entry on `line`, or `None` for a line of empty cells (`,,`), as blank as an empty
    /// line.
    fn entry(
        &self,
        record: &csv::ByteRecord,
        line: u64,
    ) -> Result<Option<AccountEntry>, ParseError> {
        let cell = |col: Option<usize>| -> Result<Option<&str>, ParseError> {
            match col.and_then(|c| record.get(c)) {
                None => Ok(None),
                Some(raw) => std::str::from_utf8(raw).map(Some).map_err(|_| {
                    let utf8 = "the line is not valid UTF-8; save the file as UTF-8";
                    ParseError::rule(Some(line), utf8)
                }),
            }
        };
        if record.iter().all(|c| c.is_empty()) {
            return Ok(None);
        }
        let account = unguarded(cell(Some(self.account))?.unwrap_or(""));
        validate_nickname(account).map_err(|problem| ParseError {
            line: Some(line),
            problem,
        })?;
        let enabled = match cell(self.enabled)? {
            None | Some("") => true,
            Some(v) => parse_bool(v).ok_or_else(|| {
                ParseError::rule(
                    Some(line),
                    format!("`enabled` is {v:?}; write true or false"),
                )
            })?,
        };
        let note = cell(self.note)?
            .map(unguarded)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        Ok(Some(AccountEntry {
            account: account.to_owned(),
            enabled,
            note,
            line,
        }))
    }
}

/// Why a header has no `account` column, with a hint at what went wrong when one is likely.
fn no_account_column(headers: &csv::ByteRecord) -> String {
    let found = String::from_utf8_lossy(headers.as_slice()).into_owned();
    let misspelled = headers.iter().find(|h| {
        edit_distance(&String::from_utf8_lossy(h).to_ascii_lowercase(), "account") <= SUGGEST_WITHIN
    });
    let hint = if found.contains(';') || found.contains('\t') || found.contains('|') {
        " (the file seems to use another delimiter; use commas)".to_string()
    } else if let Some(near) = misspelled {
        format!(" (did you mean `account` for `{}`?)", shown_column(near))
    } else {
        String::new()
    };
    format!(
        "the header row has no `account` column{hint}; the first line must name the columns, e.g. `account,enabled,note`"
    )
}

/// The columns the reader acts on.
const COLUMNS: &[&str] = &["account", "enabled", "note"];
/// The columns `accounts --csv` writes besides [`COLUMNS`], for the operator to read: accepted,
/// and not used.
const LISTING_COLUMNS: &[&str] = &["name", "type", "status"];
/// How a column of the user's own starts: anything else must be a known column.
const OWN_COLUMN_PREFIX: &str = "x-";
/// Farthest (in edits) an unknown column may be from a known one to be named as its likely
/// spelling.
const SUGGEST_WITHIN: usize = 2;

/// Refuses a header with a column the reader does not know, or a known one twice: a column the
/// reader skipped would be a safety rule (`enabeld`, `active`) the operator believes in and the
/// run ignores. An unnamed column (a trailing comma) carries no rule and is let through.
fn check_columns(headers: &csv::ByteRecord) -> Result<(), Problem> {
    let known = || COLUMNS.iter().chain(LISTING_COLUMNS);
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (i, raw) in headers.iter().enumerate() {
        let name = String::from_utf8_lossy(raw).to_ascii_lowercase();
        if name.is_empty() || name.starts_with(OWN_COLUMN_PREFIX) {
            continue;
        }
        let shown = shown_column(raw);
        if let Some(&(_, first)) = seen.iter().find(|(n, _)| *n == name) {
            return Err(Problem::Rule(format!(
                "column `{shown}` appears twice (columns {} and {}); keep one",
                first + 1,
                i + 1
            )));
        }
        if known().any(|k| *k == name) {
            seen.push((name, i));
            continue;
        }
        let nearest = known()
            .map(|k| (edit_distance(&name, k), *k))
            .min()
            .filter(|(d, _)| *d <= SUGGEST_WITHIN);
        let rule = format!(
            "a column the reader does not know is refused, not ignored; the columns are {}, and {} as `accounts --csv` writes them; a column of your own starts with `{OWN_COLUMN_PREFIX}`",
            COLUMNS.join(", "),
            LISTING_COLUMNS.join(", ")
        );
        return Err(Problem::Rule(match nearest {
            Some((_, likely)) => {
                format!("unknown column `{shown}`: did you mean `{likely}`? ({rule})")
            }
            None => format!("unknown column `{shown}`: {rule} (e.g. `{OWN_COLUMN_PREFIX}{shown}`)"),
        }));
    }
    Ok(())
}

/// A header cell as a message shows it: control characters escaped, at most 64 characters.
fn shown_column(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let escaped = crate::safe_text::escape(&text);
    match escaped.char_indices().nth(64) {
        Some((cut, _)) => format!("{}...", &escaped[..cut]),
        None => escaped.into_owned(),
    }
}

/// Levenshtein distance over bytes (column names are short; a non-ASCII one is unknown anyway).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The earliest line that repeats an account of an earlier line, with that earlier line: what a
/// reader going down the file would trip over first. Found by sorting positions rather than by
/// a set of names, so that a large file's names are not held twice.
fn first_repeat(entries: &[AccountEntry]) -> Option<(&AccountEntry, &AccountEntry)> {
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    // Stable: equal names stay in file order.
    order.sort_by(|&a, &b| {
        entries[a as usize]
            .account
            .cmp(&entries[b as usize].account)
    });
    order
        .windows(2)
        .map(|w| (&entries[w[0] as usize], &entries[w[1] as usize]))
        .filter(|(a, b)| a.account == b.account)
        .min_by_key(|(_, repeat)| repeat.line)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" => Some(true),
        "false" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// What breaks the nickname rule, the one rule for the CSV, the exclude list and the nicknames
/// the exchange lists: letters, digits, `-`, `_` and `.`, at most [`MAX_NICKNAME_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicknameProblem {
    Empty,
    /// The length in bytes.
    TooLong(usize),
    /// The first character outside the rule.
    Char(char),
}

pub fn nickname_problem(account: &str) -> Option<NicknameProblem> {
    if account.is_empty() {
        return Some(NicknameProblem::Empty);
    }
    if account.len() > MAX_NICKNAME_LEN {
        return Some(NicknameProblem::TooLong(account.len()));
    }
    account
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .map(NicknameProblem::Char)
}

/// Gemini nicknames are short identifiers; anything else is a typo or a broken export, and
/// sending it would only earn an `InvalidAccountName` per account.
fn validate_nickname(account: &str) -> Result<(), Problem> {
    let problem = match nickname_problem(account) {
        None => return Ok(()),
        Some(NicknameProblem::Empty) => {
            "the `account` cell is empty; write the subaccount's nickname".to_owned()
        }
        Some(NicknameProblem::TooLong(len)) => format!(
            "the account nickname is {len} bytes long (at most {MAX_NICKNAME_LEN}); is a column missing its delimiter?"
        ),
        Some(NicknameProblem::Char(bad)) => format!(
            "account nickname {account:?} contains {bad:?}; nicknames use letters, digits, '-', '_' and '.' only"
        ),
    };
    Err(Problem::Rule(problem))
}

/// The most bytes of escaped text kept of a listed nickname that breaks the rule.
const ESCAPED_NICKNAME_LEN: usize = 96;

/// Outside text as printable ASCII, quoted: control characters, bidi overrides and every other
/// non-ASCII character become `\u{..}` escapes, and at most about [`ESCAPED_NICKNAME_LEN`] bytes
/// are kept, the length of the rest said. The quotes make it something no nickname can be (nor
/// the empty name the group's own listing requests record).
pub fn escaped_nickname(raw: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in raw.char_indices() {
        let escaped: String = c.escape_default().collect();
        if out.len() + escaped.len() > ESCAPED_NICKNAME_LEN {
            out.push_str(&format!("\"... ({} more bytes)", raw.len() - i));
            return out;
        }
        out.push_str(&escaped);
    }
    out.push('"');
    out
}

/// Screens the nicknames of a listing: an entry whose nickname breaks the rule keeps its raw
/// text only escaped (unique within the listing, so every entry keeps its own row) and the
/// reason it is never sent. Returns how many entries broke the rule.
pub fn screen_listing(listed: &mut [ListedAccount]) -> usize {
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut broken = 0;
    for (i, a) in listed.iter_mut().enumerate() {
        let Some(problem) = nickname_problem(&a.account) else {
            continue;
        };
        broken += 1;
        let why = match problem {
            NicknameProblem::Empty => "it is empty".to_owned(),
            NicknameProblem::TooLong(len) => {
                format!("it is {len} bytes long (at most {MAX_NICKNAME_LEN})")
            }
            NicknameProblem::Char(c) => format!(
                "it contains '{}' (nicknames use letters, digits, '-', '_' and '.' only)",
                c.escape_default()
            ),
        };
        let mut escaped = escaped_nickname(&a.account);
        if !taken.insert(escaped.clone()) {
            escaped = format!("{escaped} (entry {})", i + 1);
            taken.insert(escaped.clone());
        }
        a.account = escaped;
        a.unusable = Some(format!("invalid nickname, never sent: {why}"));
    }
    broken
}

/// Why an account the exchange listed is not swept, or `None` when it is: only open exchange
/// accounts hold orders, and the operator may exclude any by name.
pub fn skip_reason(listed: &ListedAccount, excluded: &BTreeSet<String>) -> Option<String> {
    if let Some(why) = &listed.unusable {
        return Some(why.clone());
    }
    if excluded.contains(&listed.account) {
        return Some("excluded (--exclude)".into());
    }
    if listed.kind != AccountType::Exchange {
        let kind = match &listed.kind {
            AccountType::Unknown => "unknown type",
            kind => kind.as_str(),
        };
        return Some(format!("{kind} account: holds no orders"));
    }
    if listed.status != AccountState::Open {
        let status = match &listed.status {
            AccountState::Unknown => "unknown status",
            status => status.as_str(),
        };
        return Some(format!("{status} account: holds no orders"));
    }
    None
}

/// The accounts a discovery found, as a run records them: in the exchange's order, the ones not
/// to sweep disabled with the reason as their note.
pub fn from_listing(listed: &[ListedAccount], excluded: &BTreeSet<String>) -> Vec<AccountEntry> {
    listed
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let reason = skip_reason(a, excluded);
            AccountEntry {
                account: a.account.clone(),
                enabled: reason.is_none(),
                note: reason,
                line: i as u64 + 1,
            }
        })
        .collect()
}

/// Nicknames to exclude, from `--exclude` values and an `--exclude-file` (one per line; `#`
/// comments and blank lines skipped).
pub fn excludes(names: &[String], file: Option<&Path>) -> Result<BTreeSet<String>, AccountsError> {
    let mut set: BTreeSet<String> = names
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    if let Some(path) = file {
        let fail = |line: Option<u64>, problem: Problem| ParseError { line, problem }.at(path);
        let (text, _) = EXCLUDE_FILE
            .read_text(path)
            .map_err(|e| fail(None, e.into()))?;
        for (i, line) in text.lines().enumerate() {
            let name = line.split('#').next().unwrap_or("").trim();
            if name.is_empty() {
                continue;
            }
            validate_nickname(name).map_err(|p| fail(Some(i as u64 + 1), p))?;
            set.insert(name.to_owned());
        }
    }
    Ok(set)
}

/// Writes the listing as an accounts CSV that `run --accounts` reads: custody and closed
/// accounts (and excluded ones) written `enabled=false`, with the reason in `note`; entries whose
/// nickname breaks the rule left out. Every cell that holds what the exchange wrote is made safe
/// for a spreadsheet ([`crate::report`]'s CSV rule: control characters shown, a leading `=`, `+`,
/// `-` or `@` behind an apostrophe, which [`parse`] drops again). Written like the reports: whole
/// or not at all, mode 0600 ([`crate::atomic_file`]).
pub fn write_csv(
    path: &Path,
    listed: &[ListedAccount],
    excluded: &BTreeSet<String>,
) -> std::io::Result<()> {
    atomic_file::write(path, &csv_bytes(listed, excluded)?, 0o600)
}

/// The accounts CSV [`write_csv`] writes, as bytes (`accounts --csv -` prints them).
pub fn csv_bytes(
    listed: &[ListedAccount],
    excluded: &BTreeSet<String>,
) -> std::io::Result<Vec<u8>> {
    use crate::safe_text::csv_cell;
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["account", "enabled", "note", "name", "type", "status"])?;
    // A nickname that breaks the rule could not be read back, and can never be swept.
    for a in listed.iter().filter(|a| a.unusable.is_none()) {
        let reason = skip_reason(a, excluded);
        writer.write_record([
            csv_cell(&a.account),
            if reason.is_none() { "true" } else { "false" }.to_owned(),
            csv_cell(reason.as_deref().unwrap_or("")),
            csv_cell(&a.name),
            csv_cell(a.kind.as_str()),
            csv_cell(a.status.as_str()),
        ])?;
    }
    writer
        .into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// A cell as a spreadsheet (or [`write_csv`]) wrote it to keep it from being read as a
/// formula, `'=...`, `'+...`, `'-...`, `'@...`, means the text after the apostrophe. No
/// nickname has an apostrophe, so this cannot change what a valid cell names.
fn unguarded(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => cell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<AccountEntry> {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?} refused: {e:?}"))
    }

    fn err(text: &[u8]) -> (Option<u64>, String) {
        let e = parse(text).expect_err("should be refused");
        (e.line, e.problem.to_string())
    }

    #[test]
    fn reads_the_documented_format() {
        let entries = ok(
            "# desk A\naccount,enabled,note,x-owner\nprimary,true,main book,ops\n\nalpha-2,false,,x\n  beta_3 , , spaced ,\n",
        );
        let names: Vec<_> = entries.iter().map(|e| e.account.as_str()).collect();
        assert_eq!(names, ["primary", "alpha-2", "beta_3"]);
        assert_eq!(
            entries.iter().map(|e| e.enabled).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert_eq!(entries[0].note.as_deref(), Some("main book"));
        assert_eq!(entries[1].note, None);
        assert_eq!(entries[2].note.as_deref(), Some("spaced"));
        assert_eq!(
            entries.iter().map(|e| e.line).collect::<Vec<_>>(),
            [3, 5, 6]
        );
    }

    #[test]
    fn a_column_the_reader_does_not_know_is_refused_and_a_near_miss_named() {
        let (line, msg) = err(b"account,enabeld,note\nacct-0001,false,\n");
        assert_eq!(line, Some(1));
        assert!(
            msg.contains("unknown column `enabeld`: did you mean `enabled`?"),
            "{msg}"
        );
        let (line, msg) = err(b"# a comment\naccount,Active\nacct-0001,no\n");
        assert_eq!(line, Some(2));
        assert!(msg.contains("unknown column `Active`: a column"), "{msg}");
        assert!(msg.contains("starts with `x-` (e.g. `x-Active`)"), "{msg}");
        assert!(
            msg.contains("account, enabled, note, and name, type, status"),
            "{msg}"
        );
        assert!(!msg.contains("did you mean"), "{msg}");
        let (_, msg) = err(b"account,enabled,ENABLED\nacct-0001,true,false\n");
        assert!(
            msg.contains("column `ENABLED` appears twice (columns 2 and 3)"),
            "{msg}"
        );
        let (_, msg) = err(b"acount,enabled\nacct-0001,true\n");
        assert!(
            msg.contains("did you mean `account` for `acount`?"),
            "{msg}"
        );
        // Outside text in the message is escaped and bounded.
        let mut hostile = b"account,\x1b[2J".to_vec();
        hostile.extend([b'z'; 500]);
        hostile.extend(b"\nacct-1,x\n");
        let (_, msg) = err(&hostile);
        assert!(
            msg.contains("`\\u{1b}[2Jzz") && !msg.contains('\x1b'),
            "{msg}"
        );
        assert!(msg.len() < 600, "{msg}");
    }

    #[test]
    fn known_own_and_unnamed_columns_are_accepted() {
        let entries = ok(
            "Account,Enabled,NOTE,name,type,status,x-desk,X-Owner,\nacct-1,false,n,N,exchange,open,a,b,\n",
        );
        assert!(!entries[0].enabled);
        assert_eq!(entries[0].note.as_deref(), Some("n"));
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("enabeld", "enabled"), 2);
        assert_eq!(edit_distance("enable", "enabled"), 1);
        assert_eq!(edit_distance("", "note"), 4);
        assert_eq!(edit_distance("active", "enabled"), 6);
    }

    #[test]
    fn accepts_bom_and_windows_line_endings() {
        let entries = ok("\u{feff}account\r\nacct-1\r\nacct-2\r\n");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].account, "acct-2");
        assert_eq!(entries[1].line, 3);
    }

    #[test]
    fn counts_lines_ended_by_a_lone_carriage_return() {
        let entries = ok("account\racct-1\r\racct-2\r");
        assert_eq!(entries.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 4]);
    }

    #[test]
    fn names_both_lines_of_a_duplicate() {
        let (line, msg) = err(b"account\na\nb\na\n");
        assert_eq!(line, Some(4));
        assert!(msg.contains("lines 2 and 4"), "{msg}");
    }

    #[test]
    fn names_the_first_repeat_in_file_order_whatever_the_names_sort_to() {
        let (line, msg) = err(b"account\nz\nb\nb\nz\nz\n");
        assert_eq!(line, Some(4));
        assert!(
            msg.contains("\"b\" is listed twice (lines 3 and 4)"),
            "{msg}"
        );
        let (line, msg) = err(b"account\nz\na\nz\na\n");
        assert_eq!(line, Some(4));
        assert!(
            msg.contains("\"z\" is listed twice (lines 2 and 4)"),
            "{msg}"
        );
    }

    #[test]
    fn refuses_missing_account_column_and_hints_at_delimiters() {
        let (line, msg) = err(b"name,enabled\nx,true\n");
        assert_eq!(line, Some(1));
        assert!(msg.contains("no `account` column"), "{msg}");
        let (_, msg) = err(b"account;enabled\nx;true\n");
        assert!(msg.contains("another delimiter"), "{msg}");
    }

    #[test]
    fn refuses_bad_cells_with_their_line() {
        assert_eq!(err(b"account,enabled\n,true\n").0, Some(2));
        let (line, msg) = err(b"account\nhas space\n");
        assert_eq!(line, Some(2));
        assert!(msg.contains("' '"), "{msg}");
        let (line, msg) = err(b"account\nok\nctl\x07x\n");
        assert_eq!(line, Some(3));
        assert!(msg.contains("\\u{7}"), "{msg}");
        let (line, msg) = err(b"account,enabled\nx,maybe\n");
        assert_eq!(line, Some(2));
        assert!(msg.contains("true or false"), "{msg}");
        let (line, msg) = err(b"account\nok\n\xff\xfe\n");
        assert_eq!(line, Some(3));
        assert!(msg.contains("UTF-8"), "{msg}");
        let long = format!("account\n{}\n", "a".repeat(MAX_NICKNAME_LEN + 1));
        assert!(err(long.as_bytes()).1.contains("at most"));
    }

    #[test]
    fn refuses_empty_files_and_header_only_files() {
        assert!(err(b"").1.contains("empty"));
        assert!(err(b"  \n\n").1.contains("empty"));
        assert!(err(b"account\n# nobody\n").1.contains("no accounts"));
    }

    fn listed(account: &str, kind: &str, status: &str) -> ListedAccount {
        ListedAccount {
            name: account.to_uppercase(),
            account: account.into(),
            kind: kind.into(),
            status: status.into(),
            created: None,
            counterparty_id: None,
            unusable: None,
        }
    }

    #[test]
    fn a_listing_becomes_accounts_with_the_reason_for_each_one_skipped() {
        let listing = [
            listed("desk-1", "exchange", "open"),
            listed("vault", "custody", "open"),
            listed("old", "exchange", "closed"),
            listed("legacy", "exchange", "open"),
        ];
        let excluded = BTreeSet::from(["legacy".to_string()]);
        let entries = from_listing(&listing, &excluded);
        let enabled: Vec<_> = entries.iter().map(|e| e.enabled).collect();
        assert_eq!(enabled, [true, false, false, false]);
        assert_eq!(
            entries[1].note.as_deref(),
            Some("custody account: holds no orders")
        );
        assert_eq!(
            entries[2].note.as_deref(),
            Some("closed account: holds no orders")
        );
        assert_eq!(entries[3].note.as_deref(), Some("excluded (--exclude)"));

        // The CSV written from it reads back as the same accounts.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.csv");
        write_csv(&path, &listing, &excluded).unwrap();
        let read = load(&path).unwrap();
        assert_eq!(
            read.iter()
                .map(|e| (e.account.as_str(), e.enabled, e.note.as_deref()))
                .collect::<Vec<_>>(),
            entries
                .iter()
                .map(|e| (e.account.as_str(), e.enabled, e.note.as_deref()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_listed_nickname_that_breaks_the_rule_is_kept_escaped_unique_and_never_swept() {
        let long = "x".repeat(10 * 1024);
        let mut listing = [
            listed("desk-1", "exchange", "open"),
            listed("", "exchange", "open"),
            listed(&format!("{long}y"), "exchange", "open"),
            listed(&format!("{long}z"), "exchange", "open"),
            listed("a\u{1b}[2J\u{202e}<b>\n\0", "custody", "open"),
        ];
        assert_eq!(screen_listing(&mut listing), 4);
        let names: Vec<&str> = listing.iter().map(|a| a.account.as_str()).collect();
        assert_eq!(names[0], "desk-1");
        assert_eq!(names[1], "\"\"");
        assert_eq!(names[4], r#""a\u{1b}[2J\u{202e}<b>\n\u{0}""#);
        // Cut to a bounded length, saying how much is left, and still one row each.
        assert!(
            names[2].len() < 140 && names[2].ends_with("more bytes)"),
            "{}",
            names[2]
        );
        assert_eq!(names[3], format!("{} (entry 4)", names[2]));
        for a in &listing[1..] {
            assert!(
                a.account.bytes().all(|b| (0x20..0x7f).contains(&b)),
                "{}",
                a.account
            );
            assert!(nickname_problem(&a.account).is_some(), "{}", a.account);
        }
        let entries = from_listing(&listing, &BTreeSet::new());
        assert_eq!(
            entries.iter().map(|e| e.enabled).collect::<Vec<_>>(),
            [true, false, false, false, false]
        );
        assert_eq!(
            entries[1].note.as_deref(),
            Some("invalid nickname, never sent: it is empty")
        );
        assert!(
            entries[2]
                .note
                .as_deref()
                .unwrap()
                .contains("10241 bytes long")
        );
        assert!(entries[4].note.as_deref().unwrap().contains("'\\u{1b}'"));

        // The CSV written from it leaves them out and reads back.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.csv");
        write_csv(&path, &listing, &BTreeSet::new()).unwrap();
        let read = load(&path).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].account, "desk-1");
    }

    #[test]
    fn the_csv_written_is_safe_in_a_spreadsheet_and_reads_back_the_same() {
        let mut hostile = listed("-desk.1", "=HYPERLINK(\"http://x\")", "open");
        hostile.name = "@SUM(A1)\u{1b}[2J".into();
        let mut plain = listed("desk-2", "exchange", "+open");
        plain.name = "-1+1".into();
        let listing = [hostile, plain, listed("desk-3", "exchange", "open")];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group.csv");
        write_csv(&path, &listing, &BTreeSet::new()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        for record in reader.records() {
            for cell in record.unwrap().iter() {
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "{cell:?} in {text}"
                );
                assert!(!cell.contains('\u{1b}'), "{cell:?}");
            }
        }
        let read = load(&path).unwrap();
        let expected = from_listing(&listing, &BTreeSet::new());
        assert_eq!(
            read.iter()
                .map(|e| (e.account.as_str(), e.enabled, e.note.as_deref()))
                .collect::<Vec<_>>(),
            expected
                .iter()
                .map(|e| (e.account.as_str(), e.enabled, e.note.as_deref()))
                .collect::<Vec<_>>()
        );
        assert_eq!(read[0].account, "-desk.1");
        assert!(!read[0].enabled && !read[1].enabled && read[2].enabled);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn an_apostrophe_guarding_a_formula_is_dropped_on_reading() {
        let entries = ok("account,note\n'-desk,'=not a formula\nplain,'quoted\n");
        assert_eq!(entries[0].account, "-desk");
        assert_eq!(entries[0].note.as_deref(), Some("=not a formula"));
        assert_eq!(entries[1].note.as_deref(), Some("'quoted"));
        assert!(err(b"account\n'desk\n").1.contains("'\\''"));
    }

    #[test]
    fn excludes_come_from_the_flag_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("exclude.txt");
        std::fs::write(&file, "# paused desks\ndesk-9\n\n  desk-10  # migrating\n").unwrap();
        let set = excludes(&["desk-1".into(), " ".into()], Some(&file)).unwrap();
        assert_eq!(
            set.into_iter().collect::<Vec<_>>(),
            ["desk-1", "desk-10", "desk-9"]
        );
        std::fs::write(&file, "ok\nnot ok\n").unwrap();
        let err = excludes(&[], Some(&file)).unwrap_err().to_string();
        assert!(err.contains("exclude.txt:2:"), "{err}");
    }

    #[test]
    fn a_quoted_newline_in_a_nickname_is_refused() {
        let (line, msg) = err(b"account\n\"a\nb\"\n");
        assert_eq!(line, Some(2));
        assert!(msg.contains("'\\n'"), "{msg}");
    }
}
