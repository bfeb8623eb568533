//! Two house rules a reviewer cannot hold in mind over 30,000 lines, held here instead: no
//! function of src/ or sim/src/ is over 120 lines, and no line that carries a comment is over
//! 100 characters (rustfmt wraps code, but not comments).

use std::path::Path;

use crate::common::files_under;

const MAX_FUNCTION_LINES: usize = 120;
const MAX_COMMENT_CHARS: usize = 100;

/// Where the code of one line lies: `code` with every comment and literal blanked to spaces,
/// and whether the line holds a comment.
struct Line {
    code: String,
    comment: bool,
}

/// Blanks comments and string and character literals, so that braces and `fn` are only ever
/// counted in code. Handles nested block comments, escapes and raw strings (`r#"..."#`).
fn lex(text: &str) -> Vec<Line> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Code,
        Block(u32),
        Str,
        Raw(usize),
    }
    let mut state = State::Code;
    let mut lines = Vec::new();
    for raw in text.lines() {
        let chars: Vec<char> = raw.chars().collect();
        let mut code = String::with_capacity(chars.len());
        let mut comment = matches!(state, State::Block(_));
        let mut i = 0;
        while i < chars.len() {
            let (c, next) = (chars[i], chars.get(i + 1).copied());
            match state {
                State::Code => match (c, next) {
                    ('/', Some('/')) => {
                        comment = true;
                        break;
                    }
                    ('/', Some('*')) => {
                        (state, comment) = (State::Block(1), true);
                        i += 1;
                    }
                    ('"', _) => state = State::Str,
                    ('r', Some('"' | '#')) if !ident_before(&chars, i) => {
                        let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
                        if chars.get(i + 1 + hashes) == Some(&'"') {
                            state = State::Raw(hashes);
                            i += 1 + hashes;
                        } else {
                            code.push(c);
                        }
                    }
                    ('\'', _) => match char_literal_len(&chars[i..]) {
                        Some(len) => i += len - 1,
                        None => code.push(c),
                    },
                    _ => code.push(c),
                },
                State::Block(depth) => match (c, next) {
                    ('*', Some('/')) => {
                        state = if depth == 1 {
                            State::Code
                        } else {
                            State::Block(depth - 1)
                        };
                        i += 1;
                    }
                    ('/', Some('*')) => {
                        state = State::Block(depth + 1);
                        i += 1;
                    }
                    _ => {}
                },
                State::Str => match c {
                    '\\' => i += 1,
                    '"' => state = State::Code,
                    _ => {}
                },
                State::Raw(hashes) => {
                    let closes = c == '"'
                        && chars[i + 1..].iter().take_while(|&&h| h == '#').count() >= hashes;
                    if closes {
                        state = State::Code;
                        i += hashes;
                    }
                }
            }
            i += 1;
        }
        lines.push(Line { code, comment });
    }
    lines
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// The length of a character literal starting at `chars[0]` (`'a'`, `'\n'`, `'\u{1F600}'`),
/// or `None` for a lifetime (`'a`).
fn char_literal_len(chars: &[char]) -> Option<usize> {
    match chars.get(1)? {
        '\\' => chars.iter().skip(2).position(|&c| c == '\'').map(|p| p + 3),
        _ => (chars.get(2) == Some(&'\'')).then_some(3),
    }
}

/// Every function with a body: its name, first line (1-based) and length in lines, from its
/// `fn` to its closing brace.
fn functions(lines: &[Line]) -> Vec<(String, usize, usize)> {
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let words: Vec<&str> = line
            .code
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            if pair[0] != "fn" {
                continue;
            }
            if let Some(end) = body_end(lines, start) {
                found.push((pair[1].to_string(), start + 1, end - start + 1));
            }
        }
    }
    found
}

/// The line of the brace that closes the body of the `fn` on line `start`; `None` for a
/// declaration without a body (a trait's `fn f();`).
fn body_end(lines: &[Line], start: usize) -> Option<usize> {
    let after_fn = lines[start].code.find("fn ")?;
    let mut depth = 0usize;
    let mut opened = false;
    for (n, line) in lines.iter().enumerate().skip(start) {
        let code = if n == start {
            &line.code[after_fn..]
        } else {
            &line.code[..]
        };
        for c in code.chars() {
            match c {
                ';' if !opened && depth == 0 => return None,
                '{' => {
                    opened = true;
                    depth += 1;
                }
                '}' if opened => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(n);
                    }
                }
                _ => {}
            }
        }
    }
    None
}

/// Each source file of src/ and sim/src/, as its path from the root and its text.
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    files_under(&root.join("src"), "rs", &mut files);
    files_under(&root.join("sim/src"), "rs", &mut files);
    files.sort();
    files
        .iter()
        .map(|file| {
            let relative = file.strip_prefix(root).unwrap().display().to_string();
            (relative, std::fs::read_to_string(file).unwrap())
        })
        .collect()
}

#[test]
fn no_function_is_over_120_lines() {
    let mut measured = 0;
    let mut long = Vec::new();
    for (file, text) in sources() {
        for (name, line, length) in functions(&lex(&text)) {
            measured += 1;
            if length > MAX_FUNCTION_LINES {
                long.push(format!("{file}:{line} {name}: {length} lines"));
            }
        }
    }
    assert!(
        measured > 500,
        "only {measured} functions found: the scan misreads the code"
    );
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines; split them into steps that say what they do:\n{}",
        long.join("\n")
    );
}

#[test]
fn no_comment_line_is_over_100_characters() {
    let mut comments = 0;
    let mut long = Vec::new();
    for (file, text) in sources() {
        let commented = text.lines().zip(lex(&text)).enumerate();
        for (n, raw) in commented
            .filter(|(_, (_, line))| line.comment)
            .map(|(n, (raw, _))| (n, raw))
        {
            comments += 1;
            let chars = raw.chars().count();
            if chars > MAX_COMMENT_CHARS {
                long.push(format!("{file}:{}: {chars} characters", n + 1));
            }
        }
    }
    assert!(comments > 1000, "only {comments} comment lines found");
    assert!(
        long.is_empty(),
        "comment lines over {MAX_COMMENT_CHARS} characters (say why in a sentence or two):\n{}",
        long.join("\n")
    );
}

/// The scanner itself: what it must not mistake for code, and what it must find.
#[test]
fn the_scanner_counts_code_and_nothing_else() {
    let text = r####"
fn one() {
    let s = "fn fake() { {";
    let r = r#"}" fn x() {"#;
    let c = '{';
    let e = '\'';
    // fn commented() {
    /* { nested /* } */ } */
}
fn two<'a>(x: &'a str) -> &'a str { x }
trait T { fn three(); }
"####;
    let found = functions(&lex(text));
    let names: Vec<(&str, usize, usize)> = found
        .iter()
        .map(|(n, line, len)| (n.as_str(), *line, *len))
        .collect();
    assert_eq!(names, [("one", 2, 8), ("two", 10, 1)]);
    let lines = lex(text);
    assert!(lines[6].comment && lines[7].comment && !lines[2].comment);
}
