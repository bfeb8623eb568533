//! Text the database holds that came from outside the program (account names, the exchange's
//! messages, stop reasons, URLs, anything edited into the file), as a type that shows itself
//! only through the escaping of the format it goes to: a terminal, a CSV cell, HTML. It has no
//! `Display`, so writing it raw does not compile.

use std::borrow::Cow;

use rusqlite::types::{FromSql, FromSqlResult, ValueRef};

use crate::safe_text::{csv_cell, escape};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct OutsideText(String);

impl OutsideText {
    /// For a terminal: control characters and bidi overrides as visible escapes.
    pub fn shown(&self) -> Cow<'_, str> {
        escape(&self.0)
    }

    /// For a CSV cell: shown, and never a formula to a spreadsheet.
    pub fn csv(&self) -> String {
        csv_cell(&self.0)
    }
}

impl From<&str> for OutsideText {
    fn from(text: &str) -> Self {
        OutsideText(text.to_owned())
    }
}

impl FromSql for OutsideText {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        String::column_result(value).map(OutsideText)
    }
}

/// In HTML: shown (an override would otherwise turn the rest of its cell or row backwards),
/// then escaped for element content and quoted attribute values.
impl maud::Render for OutsideText {
    fn render_to(&self, buffer: &mut String) {
        escape(&self.0).as_ref().render_to(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maud::Render as _;

    #[test]
    fn each_format_gets_its_own_escaping() {
        let text = OutsideText::from("=<b>\"x\" & 'y'\u{202e}\n");
        assert_eq!(
            text.render().into_string(),
            "=&lt;b&gt;&quot;x&quot; &amp; 'y'\\u{202e}\\n"
        );
        assert_eq!(text.shown(), "=<b>\"x\" & 'y'\\u{202e}\\n");
        assert_eq!(text.csv(), "'=<b>\"x\" & 'y'\\u{202e}\\n");
        assert_eq!(
            serde_json::to_string(&text).unwrap(),
            "\"=<b>\\\"x\\\" & 'y'\u{202e}\\n\""
        );
    }
}
