//! `gemini-sweep accounts`: the group's accounts as the exchange lists them, and whether a
//! sweep takes each, as a table, CSV or JSON. Every field is the exchange's text: escaped for
//! where it goes.

use serde_json::Value as Json;

use super::table::clip;
use crate::client::ListedAccount;
use crate::safe_text::{csv_cell, escape, json_safe};

/// Whether a sweep takes an account, and if not, why.
type Skip<'a> = &'a dyn Fn(&ListedAccount) -> Option<String>;

pub(super) fn json(listed: &[ListedAccount], skip: Skip) -> String {
    let rows: Vec<Json> = listed
        .iter()
        .map(|a| {
            serde_json::json!({
                "account": a.account,
                "name": a.name,
                "type": a.kind.as_str(),
                "status": a.status.as_str(),
                "created": a.created,
                "sweep": skip(a).is_none(),
                "note": skip(a),
            })
        })
        .collect();
    format!("{}\n", json_safe(&Json::Array(rows).to_string()))
}

pub(super) fn csv(listed: &[ListedAccount], skip: Skip) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(["account", "name", "type", "status", "sweep", "note"]);
    for a in listed {
        let note = skip(a);
        let _ = writer.write_record([
            csv_cell(&a.account),
            csv_cell(&a.name),
            csv_cell(a.kind.as_str()),
            csv_cell(a.status.as_str()),
            note.is_none().to_string(),
            csv_cell(&note.unwrap_or_default()),
        ]);
    }
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}

pub(super) fn table(listed: &[ListedAccount], skip: Skip) -> String {
    let line = |cells: [&str; 5]| {
        let [a, b, c, d, e] = cells;
        format!("{a:<20} {b:<20} {c:<9} {d:<7} {e}\n")
    };
    let mut out = line(["ACCOUNT", "NAME", "TYPE", "STATUS", "SWEEP"]);
    for a in listed {
        let note = skip(a).map_or_else(|| "yes".to_owned(), |why| format!("no: {why}"));
        out.push_str(&line([
            &clip(&escape(&a.account), 20),
            &clip(&escape(&a.name), 20),
            &escape(a.kind.as_str()),
            &escape(a.status.as_str()),
            &escape(&note),
        ]));
    }
    let sweep = listed.iter().filter(|a| skip(a).is_none()).count();
    out.push_str(&format!("{} accounts, {sweep} to sweep\n", listed.len()));
    out
}
