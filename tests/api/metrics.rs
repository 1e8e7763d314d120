//! `/metrics` as Prometheus reads it: `# HELP` and `# TYPE` for every family, the
//! types and label names of the catalogue, counters only where names end in
//! `_total`; and the README and the bundled Grafana dashboard name exactly the
//! catalogue's metrics.

use std::collections::{BTreeMap, BTreeSet};

use likewise::telemetry::{Kind, METRICS};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app;

fn catalogue(name: &str) -> Option<&'static likewise::telemetry::Metric> {
    METRICS.iter().find(|m| m.name == name)
}

/// The family a sample line belongs to (histograms expose three series per family).
fn family(sample: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix) {
            if catalogue(base).is_some_and(|m| m.kind == Kind::Histogram) {
                return base;
            }
        }
    }
    sample
}

/// The label names and the value of a sample line after its metric name.
fn split_sample(rest: &str) -> (Vec<&str>, &str) {
    let Some(body) = rest.strip_prefix('{') else {
        return (Vec::new(), rest.trim());
    };
    let mut names = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '=' if !quoted => names.push(body[start..i].trim_start_matches(',')),
            ',' if !quoted => start = i,
            '}' if !quoted => return (names, body[i + 1..].trim()),
            _ => {}
        }
    }
    panic!("unterminated labels: {rest}")
}

#[tokio::test]
async fn the_exposition_has_help_and_type_for_every_family_and_follows_the_catalogue() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "measured").await;
    let (status, _) = app
        .put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    app.post(
        "/api/notifications/read",
        &alice.token,
        json!({"all": true}),
    )
    .await;

    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();

    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    let mut sampled = BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("HELP name text");
            assert!(!text.trim().is_empty(), "{line}");
            help.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            types.insert(name.to_owned(), kind.to_owned());
        } else {
            assert!(!line.starts_with('#'), "unknown comment line: {line}");
            let name_end = line.find(['{', ' ']).expect("a sample");
            let name = &line[..name_end];
            let fam = family(name);
            let metric = catalogue(fam)
                .unwrap_or_else(|| panic!("{fam} is exported but not in the catalogue"));
            // Label names are the catalogue's (plus `le` on histogram buckets).
            let (labels, value) = split_sample(&line[name_end..]);
            let labels: BTreeSet<&str> = labels.into_iter().filter(|k| *k != "le").collect();
            let expected: BTreeSet<&str> = metric.labels.iter().copied().collect();
            assert_eq!(labels, expected, "labels of {line}");
            assert!(
                value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
                "{line}"
            );
            sampled.insert(fam.to_owned());
        }
    }
    for fam in &sampled {
        let metric = catalogue(fam).unwrap();
        assert_eq!(
            types.get(fam).map(String::as_str),
            Some(metric.kind.as_str()),
            "TYPE of {fam}"
        );
        assert!(help.contains(fam), "{fam} has no # HELP line");
    }
    // What this test did is visible.
    for expected in [
        "likewise_build_info",
        "likewise_http_requests_total",
        "likewise_http_request_duration_seconds",
        "likewise_store_key_writes_total",
        "likewise_store_flushes_total",
        "likewise_store_batch_size",
        "likewise_queue_depth",
        "likewise_workers",
        "likewise_hub_published_total",
    ] {
        assert!(sampled.contains(expected), "{expected} missing:\n{text}");
    }
    assert!(
        text.contains(
            "likewise_http_requests_total{route=\"/api/posts/{id}/like\",method=\"PUT\",status=\"200\"}"
        ),
        "requests are counted by route template:\n{text}"
    );
}

/// Metric names in `text`, histogram series folded into their family.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("likewise_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(family(&tail[..end]).to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_grafana_dashboard_charts_every_catalogued_metric_and_nothing_else() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana/likewise.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            used.extend(names_in(target["expr"].as_str().expect("expr")));
        }
    }
    let catalogued: BTreeSet<String> = METRICS.iter().map(|m| m.name.to_owned()).collect();
    assert_eq!(used, catalogued);
}

#[test]
fn the_readme_documents_every_catalogued_metric_and_nothing_else() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("### Metrics").expect("a Metrics section")..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |i| i + 4)];
    let catalogued: BTreeSet<String> = METRICS.iter().map(|m| m.name.to_owned()).collect();
    assert_eq!(names_in(section), catalogued);
}
