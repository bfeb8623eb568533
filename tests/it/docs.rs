//! The documentation (README.md and every `docs/**/*.md`) names only commands and flags the
//! real command line has, every command and flag is documented somewhere, and every link between
//! the documents resolves. The CLI is read from its definition (`Cli` through clap's
//! `CommandFactory`, the simulator's flags included), not from a list kept here.
//!
//! How text is read:
//! - Code is fenced blocks and inline code spans. Code is cut into shell segments (at `&&`,
//!   `||`, `;`, ` | `, `{ }`, `( )`, `do`, `then`). A segment whose program is `gemini-sweep`
//!   (also `/usr/local/bin/gemini-sweep`, `ExecStart=...gemini-sweep`, the tokens after
//!   `cargo run ... --`, or a bare command name such as `report --only dirty`) must name a real
//!   command, and each `--flag` in it must be one of that command's own flags (or a global one).
//! - Other tools' flags: a segment whose program is one of [`OTHER_PROGRAMS`] (cargo,
//!   bench/run, git) is not checked, and [`OTHER_TOOLS_FLAGS`] lists the few other flags the
//!   docs name outside such a segment (node_exporter's, and Troubleshooting's `--dryrun`, the
//!   misspelling whose error it shows). Single-dash flags are not checked.
//! - Every other `--flag`, in code or in prose (comments in code blocks are prose), must be a
//!   flag of some gemini-sweep command.
//! - Commands are not looked for in prose: there `gemini-sweep` is the tool's name in a sentence
//!   ("gemini-sweep writes ..."), and the docs write every command as code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::CommandFactory;
use gemini_sweep::cli::args::Cli;

use crate::common::files_under;

/// Programs whose flags are their own, not gemini-sweep's.
const OTHER_PROGRAMS: &[&str] = &["cargo", "bench/run", "git"];
/// Programs that run the next word as the program.
const WRAPPERS: &[&str] = &["sudo", "env", "exec", "nice", "time", "command"];
/// Flags the docs name that are not gemini-sweep's: another tool's, outside a command of that
/// tool (node_exporter's), and the misspelling Troubleshooting shows clap's error for.
const OTHER_TOOLS_FLAGS: &[&str] = &["collector.textfile.directory", "dryrun"];
/// Tokens that end a shell segment.
const SEPARATORS: &[&str] = &["&&", "||", ";", "|", "{", "}", "(", ")", "do", "then"];
/// The README is the front door (issue 25): this long at most, a real command this early.
const README_MAX_LINES: usize = 250;
const README_FIRST_COMMAND_BY: usize = 40;

/// The command line as clap defines it: each command's long flags, and the tool's own.
struct CliModel {
    commands: BTreeMap<String, BTreeSet<String>>,
    top: BTreeSet<String>,
}

impl CliModel {
    fn read() -> CliModel {
        let mut command = Cli::command();
        command.build();
        let longs = |c: &clap::Command| -> BTreeSet<String> {
            c.get_arguments()
                .filter_map(|a| a.get_long_and_visible_aliases())
                .flatten()
                .map(str::to_owned)
                .collect()
        };
        let top = longs(&command);
        let commands = command
            .get_subcommands()
            .map(|s| (s.get_name().to_owned(), longs(s)))
            .collect();
        CliModel { commands, top }
    }

    fn any_flag(&self, flag: &str) -> bool {
        self.top.contains(flag) || self.commands.values().any(|f| f.contains(flag))
    }
}

/// Where a piece of text sits, for messages.
#[derive(Clone)]
struct At {
    file: String,
    line: usize,
}

impl At {
    /// The place `offset` bytes into the piece `text` that starts here.
    fn within(&self, text: &str, offset: usize) -> At {
        At {
            file: self.file.clone(),
            line: self.line + text[..offset].matches('\n').count(),
        }
    }
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One document, cut into code and prose.
#[derive(Default)]
struct Pieces {
    code: Vec<(At, String)>,
    prose: Vec<(At, String)>,
    /// Lines of fenced code, for the README's first command.
    block_lines: Vec<(usize, String)>,
    headings: Vec<String>,
}

fn read_docs(root: &Path) -> Vec<(String, String)> {
    let mut files = vec![root.join("README.md")];
    files_under(&root.join("docs"), "md", &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            (name, text)
        })
        .collect()
}

/// Cuts a document into fenced code lines, inline code spans, prose and headings.
fn pieces(file: &str, text: &str) -> Pieces {
    let mut out = Pieces::default();
    let mut fence: Option<String> = None;
    let mut paragraph: Vec<(usize, &str)> = Vec::new();
    let mut continued: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let trimmed = line.trim_start();
        if let Some(marker) = &fence {
            if trimmed.trim_end() == marker.as_str() {
                fence = None;
                continue;
            }
            // A line ending in `\` goes on on the next one.
            let (start, mut joined) = continued.take().unwrap_or((number, String::new()));
            joined.push_str(line);
            if let Some(head) = joined.strip_suffix('\\') {
                continued = Some((start, format!("{head} ")));
                continue;
            }
            out.block_lines.push((start, joined.clone()));
            let at = At {
                file: file.to_owned(),
                line: start,
            };
            let (code, comment) = split_comment(&joined);
            out.code.push((at.clone(), code.to_owned()));
            out.prose.push((at, comment.to_owned()));
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            take_paragraph(file, &mut paragraph, &mut out);
            let marker: String = trimmed
                .chars()
                .take_while(|c| *c == '`' || *c == '~')
                .collect();
            fence = Some(marker);
        } else if trimmed.is_empty() {
            take_paragraph(file, &mut paragraph, &mut out);
        } else {
            if let Some(title) = trimmed.strip_prefix('#') {
                out.headings
                    .push(title.trim_start_matches('#').trim().to_owned());
            }
            paragraph.push((number, line));
        }
    }
    take_paragraph(file, &mut paragraph, &mut out);
    assert!(fence.is_none(), "{file}: a code block is never closed");
    out
}

/// A code line's code, and its `#` comment (prose). A `#` counts only at the start or after a
/// space, so `KEY:SECRET#time` and `/etc/x#y` stay code.
fn split_comment(line: &str) -> (&str, &str) {
    let at = line
        .match_indices('#')
        .map(|(i, _)| i)
        .find(|&i| i == 0 || line[..i].ends_with(char::is_whitespace));
    match at {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    }
}

/// A paragraph (consecutive lines) cut at its code spans: a span may run across lines.
fn take_paragraph(file: &str, lines: &mut Vec<(usize, &str)>, out: &mut Pieces) {
    if lines.is_empty() {
        return;
    }
    let mut text = String::new();
    let mut line_of = Vec::new();
    for (number, line) in lines.drain(..) {
        text.push_str(line);
        text.push('\n');
        line_of.resize(text.len(), number);
    }
    let at = |offset: usize| At {
        file: file.to_owned(),
        line: line_of[offset.min(line_of.len() - 1)],
    };
    let mut rest = 0;
    while let Some(open) = text[rest..].find('`').map(|i| i + rest) {
        let ticks = text[open..].chars().take_while(|c| *c == '`').count();
        let fence = "`".repeat(ticks);
        let inner = open + ticks;
        let close = text[inner..]
            .match_indices(&fence)
            .map(|(i, _)| i + inner)
            .find(|&i| !text[i + ticks..].starts_with('`') && !text[..i].ends_with('`'));
        let Some(close) = close else {
            break;
        };
        out.prose.push((at(rest), text[rest..open].to_owned()));
        out.code
            .push((at(inner), text[inner..close].replace('\n', " ")));
        rest = close + ticks;
    }
    out.prose.push((at(rest), text[rest..].to_owned()));
}

/// The `--flags` in `text`, with their offsets: `--` at the start of a word, then a lower-case
/// letter or a digit.
fn flags_in(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("--") {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '.') {
            continue;
        }
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')
            .collect();
        let name = name.trim_end_matches(['-', '.']);
        if name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            found.push((i, name.to_owned()));
        }
    }
    found
}

/// The flags' names alone.
fn flag_names(text: &str) -> impl Iterator<Item = String> {
    flags_in(text).into_iter().map(|(_, name)| name)
}

/// A token without the quotes and brackets around it.
fn bare(token: &str) -> &str {
    token
        .trim_start_matches(['"', '\'', '[', '('])
        .trim_end_matches(['"', '\'', ']', ')', ',', ';'])
}

/// A line of code cut into shell segments (tokens).
fn segments(code: &str) -> Vec<Vec<&str>> {
    let mut all = vec![Vec::new()];
    for token in code.split_whitespace() {
        if SEPARATORS.contains(&token) {
            all.push(Vec::new());
            continue;
        }
        let token = token
            .strip_prefix("$(")
            .or_else(|| token.strip_prefix('('))
            .map_or(token, |rest| {
                all.push(Vec::new());
                rest
            });
        if !token.is_empty() {
            all.last_mut().unwrap().push(token);
        }
        if token.ends_with(';') {
            all.push(Vec::new());
        }
    }
    all.retain(|s| !s.is_empty());
    all
}

/// What a segment runs.
enum Program<'a> {
    /// gemini-sweep, with the tokens after the program's name; `named`: by its name (or
    /// `cargo run --`), not a bare command word such as `report --only dirty`.
    Ours {
        args: &'a [&'a str],
        named: bool,
    },
    Other,
    /// Not a command: a table cell, a config line, flags named on their own.
    None,
}

fn program<'a>(segment: &'a [&'a str], cli: &CliModel) -> Program<'a> {
    let mut rest = segment;
    while let Some((first, tail)) = rest.split_first() {
        let word = bare(first);
        if *first == "$" || WRAPPERS.contains(&word) {
            rest = tail;
            continue;
        }
        if let Some((name, value)) = word.split_once('=')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            // `ExecStart=/usr/local/bin/gemini-sweep run`, or an assignment before the program.
            if value.rsplit('/').next() == Some("gemini-sweep") {
                return Program::Ours {
                    args: tail,
                    named: true,
                };
            }
            rest = tail;
            continue;
        }
        if word.rsplit('/').next() == Some("gemini-sweep") && !word.starts_with("--") {
            return Program::Ours {
                args: tail,
                named: true,
            };
        }
        if word == "cargo" {
            let run = tail.first().is_some_and(|t| *t == "run");
            return match tail.iter().position(|t| *t == "--") {
                Some(dashes) if run => Program::Ours {
                    args: &tail[dashes + 1..],
                    named: true,
                },
                _ => Program::Other,
            };
        }
        if OTHER_PROGRAMS.contains(&word) {
            return Program::Other;
        }
        if cli.commands.contains_key(word) && word != "help" {
            return Program::Ours {
                args: rest,
                named: false,
            };
        }
        return Program::None;
    }
    Program::None
}

/// Problems with one invocation of gemini-sweep: its command, then each of its flags.
fn check_invocation(args: &[&str], cli: &CliModel, at: &At, problems: &mut Vec<String>) {
    let mut command: Option<&str> = None;
    for token in args {
        let word = bare(token);
        if word.starts_with("--") {
            for flag in flag_names(word) {
                let known = match command {
                    Some(c) => cli.commands[c].contains(&flag) || cli.top.contains(&flag),
                    None => cli.top.contains(&flag),
                };
                if !known {
                    let of = command.map_or("gemini-sweep".to_owned(), |c| format!("`{c}`"));
                    problems.push(format!("{at}: --{flag} is not a flag of {of}"));
                }
            }
        } else if command.is_none() {
            let is_word = !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase());
            if !is_word {
                return;
            }
            if !cli.commands.contains_key(word) {
                problems.push(format!("{at}: `gemini-sweep {word}`: no such command"));
                return;
            }
            command = Some(cli.commands.get_key_value(word).unwrap().0);
        }
    }
}

/// What the docs name: checked against the CLI, and collected for the other direction.
#[derive(Default)]
struct Named {
    problems: Vec<String>,
    commands: BTreeSet<String>,
    flags: BTreeSet<String>,
}

fn check_code(at: &At, code: &str, cli: &CliModel, named: &mut Named) {
    for segment in segments(code) {
        match program(&segment, cli) {
            Program::Ours {
                args,
                named: by_name,
            } => {
                if let Some(first) = args.first().map(|t| bare(t))
                    && cli.commands.contains_key(first)
                    && by_name
                {
                    named.commands.insert(first.to_owned());
                }
                named.flags.extend(args.iter().flat_map(|t| flag_names(t)));
                check_invocation(args, cli, at, &mut named.problems);
            }
            Program::Other => {}
            Program::None => check_loose_flags(at, &segment.join(" "), cli, named),
        }
    }
}

/// Flags named outside an invocation: some gemini-sweep command must have them.
fn check_loose_flags(at: &At, text: &str, cli: &CliModel, named: &mut Named) {
    for (offset, flag) in flags_in(text) {
        if OTHER_TOOLS_FLAGS.contains(&flag.as_str()) {
            continue;
        }
        if !cli.any_flag(&flag) {
            let at = at.within(text, offset);
            named.problems.push(format!(
                "{at}: --{flag} is not a flag of any gemini-sweep command"
            ));
        }
        named.flags.insert(flag);
    }
}

/// Everything the documents name, checked against `cli`.
fn check_docs(docs: &[(String, String)], cli: &CliModel) -> Named {
    let mut named = Named::default();
    for (file, text) in docs {
        let pieces = pieces(file, text);
        for (at, code) in &pieces.code {
            check_code(at, code, cli, &mut named);
        }
        for (at, prose) in &pieces.prose {
            check_loose_flags(at, prose, cli, &mut named);
        }
    }
    named
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, other punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect::<String>()
        .to_lowercase()
}

fn anchors(text: &str, file: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for heading in pieces(file, text).headings {
        let base = slug(&heading);
        let n = seen.entry(base.clone()).or_default();
        anchors.insert(if *n == 0 { base } else { format!("{base}-{n}") });
        *n += 1;
    }
    anchors
}

/// Relative links (in prose, outside code) that name no file, or no heading of it.
fn broken_links(root: &Path, docs: &[(String, String)]) -> Vec<String> {
    let mut broken = Vec::new();
    for (file, text) in docs {
        let dir = Path::new(file).parent().unwrap_or(Path::new(""));
        for (at, prose) in pieces(file, text).prose {
            for (i, _) in prose.match_indices("](") {
                let Some(end) = prose[i + 2..].find(')') else {
                    continue;
                };
                let target = &prose[i + 2..i + 2 + end];
                let at = at.within(&prose, i);
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let (name, linked) = if path.is_empty() {
                    (file.clone(), text.clone())
                } else {
                    let name = normalize(&dir.join(path));
                    let Ok(linked) = std::fs::read_to_string(root.join(&name))
                        .or_else(|_| std::fs::metadata(root.join(&name)).map(|_| String::new()))
                    else {
                        broken.push(format!("{at}: {target}: no such file"));
                        continue;
                    };
                    (name, linked)
                };
                if !anchor.is_empty() && !anchors(&linked, &name).contains(anchor) {
                    broken.push(format!("{at}: {target}: {name} has no heading #{anchor}"));
                }
            }
        }
    }
    broken
}

/// `docs/../README.md` as `README.md`.
fn normalize(path: &Path) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.iter().map(|p| p.to_str().unwrap()) {
        match part {
            "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[test]
fn the_docs_name_only_real_commands_and_flags() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = read_docs(root);
    let cli = CliModel::read();
    // What the docs are read against is the real CLI: these are in it.
    assert!(cli.commands["run"].contains("hold") && cli.commands["sim"].contains("requote"));
    assert!(
        cli.commands["demo"].contains("log-format"),
        "globals reach commands"
    );

    let named = check_docs(&docs, &cli);
    assert!(
        named.problems.is_empty(),
        "the docs name what the CLI does not have:\n{}",
        named.problems.join("\n")
    );
    // And the other way: every command shown in use, every flag named somewhere.
    let mut missing = Vec::new();
    for (command, flags) in &cli.commands {
        if command != "help" && !named.commands.contains(command) {
            missing.push(format!("command `gemini-sweep {command}`"));
        }
        for flag in flags {
            if !["help", "version"].contains(&flag.as_str()) && !named.flags.contains(flag) {
                missing.push(format!("`gemini-sweep {command} --{flag}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in README.md or docs/: {}",
        missing.join(", ")
    );
    // Enough was read for the checks to mean something.
    assert!(named.commands.len() >= 8, "{:?}", named.commands);
}

#[test]
fn links_between_the_docs_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = read_docs(root);
    assert!(docs.len() >= 7, "README.md and docs/: {} files", docs.len());
    let broken = broken_links(root, &docs);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_a_front_door() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("README.md")).unwrap();
    let lines = text.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines (at most {README_MAX_LINES}); the manual goes in docs/"
    );
    let cli = CliModel::read();
    let first = pieces("README.md", &text)
        .block_lines
        .into_iter()
        .find(|(_, line)| {
            let (code, _) = split_comment(line);
            segments(code)
                .iter()
                .any(|s| matches!(program(s, &cli), Program::Ours { args, .. } if !args.is_empty()))
        });
    let (line, _) = first.expect("README.md shows no command");
    assert!(
        line <= README_FIRST_COMMAND_BY,
        "README.md's first command is on line {line} (by {README_FIRST_COMMAND_BY})"
    );
}

/// The checks above can fail: a document with each kind of mistake is caught, and other tools'
/// flags are not.
#[test]
fn the_checker_catches_what_it_is_for() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cli = CliModel::read();
    let bad = "# Title\n\n\
        ```sh\n\
        gemini-sweep run --accounts a.csv --dry-runn   # --hold is fine here\n\
        gemini-sweep frobnicate\n\
        cargo build --release --locked && gemini-sweep report --hold 10m\n\
        ```\n\n\
        Use `--no-such-flag`, or run `accounts --csv x.csv`; node_exporter's\n\
        `--collector.textfile.directory` and `cargo test --locked` are not ours. See\n\
        [nowhere](missing.md), [the title](#title) and [no heading](#nope).\n";
    let docs = vec![("docs/bad.md".to_owned(), bad.to_owned())];
    let named = check_docs(&docs, &cli);
    let expected = [
        "docs/bad.md:4: --dry-runn is not a flag of `run`",
        "docs/bad.md:5: `gemini-sweep frobnicate`: no such command",
        "docs/bad.md:6: --hold is not a flag of `report`",
        "docs/bad.md:9: --no-such-flag is not a flag of any gemini-sweep command",
    ];
    assert_eq!(named.problems, expected);
    let broken = broken_links(root, &docs);
    assert_eq!(
        broken,
        [
            "docs/bad.md:11: missing.md: no such file",
            "docs/bad.md:11: #nope: docs/bad.md has no heading #nope",
        ]
    );
    assert_eq!(
        slug("Several groups in one job (`--config`)"),
        "several-groups-in-one-job---config"
    );
    assert_eq!(slug("Bird's eye view"), "birds-eye-view");
}
