//! The bundled web pages: the demo app at `/` and the ops dashboard at `/dashboard`,
//! with their scripts and styles under `/assets/{version}/...`.
//!
//! Everything comes from the `static/` folder, embedded in the binary at build time;
//! nothing is read from the working directory at run time. `{version}` is a hash of
//! all embedded files, so an asset URL never changes meaning while it is cached:
//! assets at the current version are cacheable for a year, pages are revalidated on
//! every load (`no-cache`) and name the current version. Every answer carries an
//! `ETag` and honours `If-None-Match`; text is compressed when the client asks.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;
use sha2::{Digest, Sha256};
use tower_http::compression::CompressionLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::extract::ApiPath;
use super::AppState;

/// The embedded `static/` folder.
#[derive(RustEmbed)]
#[folder = "static/"]
struct Static;

/// Cache policy of the pages themselves: always revalidate.
const PAGE_CACHE: &str = "no-cache";
/// Cache policy of assets at the current version.
const ASSET_CACHE: &str = "public, max-age=31536000, immutable";
/// The pages' content security policy: only this origin, no inline script.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";
/// Placeholder in the pages replaced by the versioned asset prefix.
const ASSETS_PLACEHOLDER: &str = "%ASSETS%";
/// Placeholder in the demo page replaced by the demo accounts as `name:password`
/// pairs (empty without `--demo`).
const DEMO_PLACEHOLDER: &str = "%DEMO_USERS%";

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(demo_page))
        .routes(routes!(dashboard_page))
        .routes(routes!(asset))
        .layer(CompressionLayer::new())
}

/// A hash of every embedded file's name and content: the asset version.
fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut names: Vec<_> = Static::iter().collect();
        names.sort();
        let mut hasher = Sha256::new();
        for name in names {
            if let Some(file) = Static::get(&name) {
                hasher.update(name.as_bytes());
                hasher.update([0]);
                hasher.update(file.metadata.sha256_hash());
            }
        }
        hex::encode(&hasher.finalize()[..6])
    })
}

fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(&Sha256::digest(bytes)[..12]))
}

/// Whether the client already holds this exact representation.
fn fresh(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        })
}

/// The content type to send for an embedded file.
fn content_type(guessed: &str) -> String {
    match guessed {
        "application/javascript" | "text/javascript" => "text/javascript; charset=utf-8".into(),
        t if t.starts_with("text/") || t == "application/json" || t == "image/svg+xml" => {
            format!("{t}; charset=utf-8")
        }
        t => t.into(),
    }
}

fn respond(
    headers: &HeaderMap,
    body: Vec<u8>,
    content_type: &str,
    cache: &'static str,
    page: bool,
) -> Response {
    let etag = etag_of(&body);
    let mut response = if fresh(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if page {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    response
}

/// Renders an embedded page: the asset prefix and the demo accounts filled in.
fn page(name: &str, state: &AppState, headers: &HeaderMap) -> Result<Response, ApiError> {
    let file = Static::get(name)
        .ok_or_else(|| ApiError::Internal(format!("page {name} is not embedded")))?;
    let text = String::from_utf8_lossy(&file.data);
    let demo = state
        .demo_accounts
        .iter()
        .map(|u| format!("{}:{}", u.name, u.password))
        .collect::<Vec<_>>()
        .join(",");
    let html = text
        .replace(ASSETS_PLACEHOLDER, &format!("/assets/{}", version()))
        .replace(DEMO_PLACEHOLDER, &demo);
    Ok(respond(
        headers,
        html.into_bytes(),
        "text/html; charset=utf-8",
        PAGE_CACHE,
        true,
    ))
}

/// The demo app.
#[utoipa::path(
    get,
    path = "/",
    tag = "pages",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 304, description = "Not modified (If-None-Match)"),
    )
)]
async fn demo_page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    page("index.html", &state, &headers)
}

/// The ops dashboard.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "pages",
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html"),
        (status = 304, description = "Not modified (If-None-Match)"),
    )
)]
async fn dashboard_page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    page("dashboard.html", &state, &headers)
}

/// A script, style or icon of the pages; cacheable for a year at the current version.
#[utoipa::path(
    get,
    path = "/assets/{version}/{*path}",
    tag = "pages",
    params(("version" = String, Path, description = "The asset version the pages name"), ("path" = String, Path, description = "File path, may contain slashes")),
    responses(
        (status = 200, description = "The file", body = String, content_type = "application/octet-stream"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 404, description = "No such asset", body = super::openapi::Error),
    )
)]
async fn asset(
    headers: HeaderMap,
    ApiPath((requested, path)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let file = Static::get(&path)
        .filter(|_| !path.ends_with(".html"))
        .ok_or_else(|| ApiError::NotFound(format!("no asset named {path:?}")))?;
    // A page loaded before an upgrade may still ask for its old version: it gets
    // today's file, but not for keeps.
    let cache = if requested == version() {
        ASSET_CACHE
    } else {
        PAGE_CACHE
    };
    let content_type = content_type(file.metadata.mimetype());
    Ok(respond(
        &headers,
        file.data.into_owned(),
        &content_type,
        cache,
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_stable_and_short() {
        assert_eq!(version(), version());
        assert_eq!(version().len(), 12);
    }

    #[test]
    fn if_none_match_accepts_lists_and_weak_tags() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(fresh(&h, "\"abc\""));
        assert!(!fresh(&h, "\"abd\""));
        assert!(!fresh(&HeaderMap::new(), "\"abc\""));
    }

    #[test]
    fn scripts_and_text_carry_a_charset() {
        assert_eq!(
            content_type("application/javascript"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("text/css"), "text/css; charset=utf-8");
        assert_eq!(content_type("image/png"), "image/png");
    }

    #[test]
    fn every_page_and_script_is_embedded() {
        for name in [
            "index.html",
            "dashboard.html",
            "api.js",
            "app.js",
            "chart.js",
            "dashboard.js",
            "app.css",
            "icon.svg",
        ] {
            assert!(Static::get(name).is_some(), "{name} is embedded");
        }
    }
}
