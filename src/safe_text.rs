//! Outside text (an exchange's message, an account's name, a stored reply) made safe for where
//! it is shown: a terminal or a human log line ([`escape`]), JSON printed to a terminal
//! ([`json_safe`]), a CSV cell a spreadsheet opens ([`csv_cell`]). The HTML report escapes for
//! its own markup.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every character that would act on a terminal or a reader instead of showing
/// written as a visible escape: `\n`, `\r`, `\t`, `\0`, and `\u{1b}` for the other C0 and C1
/// controls and DEL, the bidirectional overrides, embeddings, isolates and marks (which reorder
/// what follows them on screen), and the Unicode line and paragraph separators (which some
/// viewers break lines at). Everything else, backslashes included, is left as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// JSON text (serde_json's) with the characters [`escape`] shows that JSON itself leaves raw
/// (DEL, the C1 controls, the bidi controls, the line separators) written as `\uXXXX` escapes:
/// the same document to any JSON reader, nothing a terminal acts on when it is printed. They
/// can only stand inside strings; C0 controls are left, serde_json has escaped those inside
/// strings already, and any outside them is the document's own whitespace.
pub fn json_safe(json: &str) -> Cow<'_, str> {
    let escaped = |c: char| needs_escape(c) && u32::from(c) >= 0x7f;
    if !json.chars().any(escaped) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if escaped(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A cell of a CSV written from what the database or the exchange holds: its control
/// characters shown (see [`escape`]), and made safe from spreadsheets.
pub fn csv_cell(text: &str) -> String {
    spreadsheet_safe(escape(text).into_owned())
}

/// A cell a spreadsheet would run as a formula gets a leading apostrophe.
fn spreadsheet_safe(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_like_cells_are_neutralised() {
        assert_eq!(
            spreadsheet_safe("=HYPERLINK(\"x\")".into()),
            "'=HYPERLINK(\"x\")"
        );
        assert_eq!(spreadsheet_safe("+1".into()), "'+1");
        assert_eq!(spreadsheet_safe("-1".into()), "'-1");
        assert_eq!(spreadsheet_safe("@SUM(A1)".into()), "'@SUM(A1)");
        assert_eq!(spreadsheet_safe("acct-0001".into()), "acct-0001");
    }

    #[test]
    fn outside_text_cannot_act_on_the_terminal() {
        assert!(matches!(
            escape("acct-1 refused: Trader role"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape("a\u{1b}]0;pwned\u{7}\u{1b}[2J\0b\r\nFAKE\tc\u{7f}\u{85}\u{9b}"),
            "a\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\0b\\r\\nFAKE\\tc\\u{7f}\\u{85}\\u{9b}"
        );
        assert_eq!(
            escape("\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}\u{2066}\u{2067}\u{2068}\u{2069}"),
            "\\u{202a}\\u{202b}\\u{202c}\\u{202d}\\u{202e}\\u{2066}\\u{2067}\\u{2068}\\u{2069}"
        );
        assert_eq!(
            escape("\u{200e}\u{200f}\u{61c}\u{2028}\u{2029}"),
            "\\u{200e}\\u{200f}\\u{61c}\\u{2028}\\u{2029}"
        );
        // Letters of every script, and backslashes, are left as they are.
        assert_eq!(escape("Zürich 東京 ‎a\\b"), "Zürich 東京 \\u{200e}a\\b");
    }

    #[test]
    fn json_keeps_its_meaning_and_loses_what_a_terminal_obeys() {
        let value = serde_json::json!({"m": "a\u{1b}[2J\r\n\u{9b}31m\u{202e}b\u{2028}", "n": 1});
        let text = value.to_string();
        let safe = json_safe(&text);
        assert!(
            !safe.contains(['\u{9b}', '\u{202e}', '\u{2028}', '\u{1b}', '\r']),
            "{safe}"
        );
        assert!(safe.contains("\\u009b31m\\u202eb\\u2028"), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json_safe(&pretty)).unwrap(),
            value
        );
        assert!(matches!(json_safe("{\"a\":\"b\"}"), Cow::Borrowed(_)));
    }
}
