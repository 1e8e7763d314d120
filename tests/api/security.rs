//! SECURITY.md states every limit with its default: a test reads the defaults from the
//! settings types themselves, so the document cannot drift from the code.

use likewise::config::Limits;
use likewise::domain::AccountSettings;
use serde_json::Value;

fn documented(doc: &str, section: &str, settings: Value) {
    let Value::Object(fields) = settings else {
        panic!("settings serialize to a map")
    };
    for (name, default) in fields {
        let row = format!("| `{name}` | {default}");
        let found = doc.lines().any(|line| {
            line.starts_with(&row) && !line[row.len()..].starts_with(|c: char| c.is_ascii_digit())
        });
        assert!(found, "SECURITY.md has no {section} row starting {row:?}");
    }
}

#[test]
fn security_md_lists_every_limit_with_its_default() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/SECURITY.md"))
        .expect("SECURITY.md");
    documented(
        &doc,
        "[limits]",
        serde_json::to_value(Limits::default()).unwrap(),
    );
    documented(
        &doc,
        "[accounts]",
        serde_json::to_value(AccountSettings::default()).unwrap(),
    );
}
