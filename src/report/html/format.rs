//! How values read on the page: numbers grouped, durations in words, and the table cells that
//! say unknown (`—`, with why on hover) rather than 0.

use maud::{Markup, Render, html};

/// An integer with thousands separators: 1234567 → "1,234,567".
pub(super) fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// "6.2 s", "4 min 05 s", "2 h 03 min 05 s": whole seconds from a minute on.
pub(super) fn human_ms(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        return format!("{s:.1} s");
    }
    let total = (ms / 1000).max(0);
    let (h, m, sec) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        format!("{h} h {m:02} min {sec:02} s")
    } else {
        format!("{m} min {sec:02} s")
    }
}

/// "1 account" or "2 accounts".
pub(super) fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{} {}", grouped(n), if n == 1 { one } else { many })
}

/// A count: right-aligned, its value for machines in `data-value`, `—` when unknown.
pub(super) fn count_cell(n: Option<i64>, unknown_why: &str) -> Markup {
    html! {
        @match n {
            Some(n) => td.n data-value=(n) { (grouped(n)) },
            None => td.n.unknown data-value="" title=(unknown_why) { "—" },
        }
    }
}

/// Text in a cell of `class`, `—` when there is none.
pub(super) fn text_cell(text: Option<impl Render>, class: &str) -> Markup {
    html! {
        @match text {
            Some(t) => td class=(class) { (t) },
            None => td class={ (class) " unknown" } { "—" },
        }
    }
}

pub(super) fn yes_no_cell(flag: Option<bool>, unknown_why: &str) -> Markup {
    html! {
        @match flag {
            Some(false) => td data-value="0" { "no" },
            Some(true) => td data-value="1" { "yes" },
            None => td.unknown data-value="" title=(unknown_why) { "—" },
        }
    }
}

/// A key-value row of the header or the totals; `id` lets tests and readers find it.
pub(super) fn kv(id: &str, label: &str, value: impl Render, data: Option<i64>) -> Markup {
    html! {
        tr id=(id) {
            th scope="row" { (label) }
            td data-value=[data] { (value) }
        }
    }
}
