//! The OpenAPI document against the two other descriptions of the routes: API.md's
//! route tables and the router itself. A route registered without its document
//! entry, an entry without a route, or a method documented but not served (or
//! served but not documented) fails here, naming it.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::spawn_app;
use crate::matrix::{documented_routes, normalize};

/// The methods API.md's route tables name.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];
/// The methods the router is checked for (CORS preflights answer `OPTIONS`).
const ALL_METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// `METHOD /path` of every operation in the document with one of `methods`,
/// parameters normalized.
fn operations(doc: &Value, methods: &[&str]) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for &method in methods {
            if item.get(method.to_lowercase()).is_some() {
                ops.insert(format!("{method} {}", normalize(path)));
            }
        }
    }
    ops
}

/// `METHOD /path` of every route registered with plain axum `.route("...", ...)`
/// under `src/http` (routes registered with `routes!` are documented by
/// construction: the macro reads the path and methods from the handler's
/// `#[utoipa::path]`).
fn plain_routes() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/http") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                found.extend(routes_in(&text));
            }
        }
    }
    found
}

/// The `.route("PATH", get(..).post(..))` registrations in `text`.
fn routes_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let Some(open) = rest.find('"') else { break };
        let Some(close) = rest[open + 1..].find('"') else {
            break;
        };
        let path = &rest[open + 1..open + 1 + close];
        // The method router runs to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let methods = &rest[open + close + 2..end];
        for m in ALL_METHODS {
            let call = format!("{}(", m.to_lowercase());
            if methods
                .match_indices(&call)
                .any(|(i, _)| i == 0 || !methods.as_bytes()[i - 1].is_ascii_alphanumeric())
            {
                out.push(format!("{m} {}", normalize(path)));
            }
        }
    }
    out
}

#[test]
fn the_route_scanner_reads_method_routers() {
    let text = r#"Router::new()
        .route("/ws", get(native::upgrade))
        .route(
            "/api/x/{id}",
            post(add).get(list_things),
        )"#;
    assert_eq!(
        routes_in(text),
        vec!["GET /ws", "GET /api/x/{}", "POST /api/x/{}"]
    );
}

#[test]
fn the_document_lists_every_route_api_md_documents_and_no_other() {
    let doc = serde_json::to_value(likewise::http::openapi()).unwrap();
    let documented = documented_routes();
    let ops = operations(&doc, &METHODS);
    let undocumented: Vec<_> = documented.difference(&ops).collect();
    assert!(
        undocumented.is_empty(),
        "API.md lists routes the OpenAPI document lacks (add #[utoipa::path] to the \
         handler and register it with routes!): {undocumented:?}"
    );
    let unlisted: Vec<_> = ops.difference(&documented).collect();
    assert!(
        unlisted.is_empty(),
        "the OpenAPI document has routes API.md does not list: {unlisted:?}"
    );
}

#[test]
fn every_plainly_registered_route_is_in_the_document() {
    let doc = serde_json::to_value(likewise::http::openapi()).unwrap();
    let ops = operations(&doc, &ALL_METHODS);
    let plain = plain_routes();
    assert!(plain.contains("GET /ws"), "the scan found {plain:?}");
    let missing: Vec<_> = plain.difference(&ops).collect();
    assert!(
        missing.is_empty(),
        "routes registered with .route() but not documented: put #[utoipa::path] on \
         the handler and register it with utoipa_axum's routes! (or list it in \
         http::openapi::ApiDoc's paths): {missing:?}"
    );
}

/// Every path of the document answers each documented method (anything but the
/// router's own 404 and 405) and refuses every other method with 405: the router
/// serves exactly the methods documented.
#[tokio::test]
async fn the_server_serves_exactly_the_documented_methods_of_every_path() {
    let app = spawn_app().await;
    let (status, doc) = app.get("/api/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc,
        serde_json::to_value(likewise::http::openapi()).unwrap(),
        "the served document is the generated one"
    );
    let mut wrong = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = normalize(path).replace("{}", "1");
        for m in ALL_METHODS {
            let documented = item.get(m.to_lowercase()).is_some();
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            let response = app
                .client
                .request(method, app.url(&concrete))
                .send()
                .await
                .expect("request");
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route");
            if documented == unrouted {
                wrong.push(format!(
                    "{m} {path}: documented {documented}, answered {status}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_operation_has_an_error_answer_in_the_api_shape_and_a_unique_id() {
    let doc = serde_json::to_value(likewise::http::openapi()).unwrap();
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(
        error["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorDetail"
    );
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in ALL_METHODS {
            let Some(op) = item.get(m.to_lowercase()) else {
                continue;
            };
            assert_eq!(
                op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Error",
                "{m} {path}"
            );
            let id = op["operationId"].as_str().expect("an operation id");
            assert!(ids.insert(id.to_owned()), "operation id {id} repeats");
        }
    }
}
