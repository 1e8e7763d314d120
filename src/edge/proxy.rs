//! The edge's reverse proxy to the primary: one pooled HTTP/1.1 client, bodies
//! streamed both ways, never buffered whole.
//!
//! Per request: a declared `Content-Length` over `max_body_bytes` is refused at
//! once with 413; an undeclared (chunked) body is counted while it streams and cut
//! off at the same limit (413 as well), so the edge holds no more than a few
//! buffers of any body. Hop-by-hop headers (`Connection` and every header it
//! names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`,
//! `Upgrade`) belong to one connection and are removed both ways; `Host` becomes
//! the primary's; the address of the peer is appended to `X-Forwarded-For`
//! (what a client sent there itself is kept to its left, where the primary, which
//! takes the right-most untrusted entry, ignores it).
//!
//! Deadlines: connecting to the primary (`connect_timeout_ms`) and the start of
//! its answer (`answer_timeout_ms`). Past either, or when the primary refuses the
//! connection, the edge answers 503 `unavailable` in the API's error shape; it
//! never hangs on a dead primary. The answer deadline runs from the start of
//! forwarding, so it also bounds a client that uploads its body too slowly. The
//! answer's body then streams without a deadline (the admin event stream is a
//! long-lived answer).
//!
//! The pool closes idle connections after `pool_idle_ms`, before the primary's own
//! idle limit does; a request sent on a connection the primary closed at that very
//! moment is retried on a new one by the client (it was never received).

use std::error::Error as _;
use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{Request, Uri, Version};
use axum::response::Response;
use http_body_util::{LengthLimitError, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::EdgeSettings;
use crate::http::error::ApiError;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1, plus
/// the non-standard `Proxy-Connection` some clients still send).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Forwards requests to the primary.
pub struct Proxy {
    client: Client<HttpConnector, Body>,
    primary: Authority,
    max_body: usize,
    answer_timeout: Duration,
}

impl Proxy {
    /// A proxy to `settings.primary` with its deadlines, pool and body limit.
    pub fn new(settings: &EdgeSettings) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout()));
        // Small API answers must not wait for delayed ACKs.
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_millis(settings.pool_idle_ms))
            .pool_max_idle_per_host(settings.pool_max_idle)
            .build(connector);
        Proxy {
            client,
            primary: settings.primary.clone(),
            max_body: settings.limits.max_body_bytes,
            answer_timeout: settings.answer_timeout(),
        }
    }

    /// Sends `req`, which arrived from `peer`, to the primary and returns the
    /// primary's answer with its body streaming.
    pub async fn forward(&self, peer: IpAddr, req: Request<Body>) -> Result<Response, ApiError> {
        let (mut parts, body) = req.into_parts();
        if declared_length(&parts.headers).is_some_and(|n| n > self.max_body as u64) {
            return Err(self.too_large());
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.primary.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| ApiError::BadRequest(format!("cannot forward this URL: {e}")))?;
        parts.version = Version::HTTP_11;
        remove_hop_by_hop(&mut parts.headers);
        // The client sets the primary's.
        parts.headers.remove(header::HOST);
        append_forwarded_for(&mut parts.headers, peer);
        let body = Body::new(Limited::new(body, self.max_body));
        let upstream = Request::from_parts(parts, body);

        let answer = tokio::time::timeout(self.answer_timeout, self.client.request(upstream)).await;
        let response = match answer {
            Ok(Ok(response)) => response,
            Ok(Err(e)) if over_limit(&e) => return Err(self.too_large()),
            Ok(Err(e)) => {
                tracing::warn!(primary = %self.primary, error = %chain(&e), "cannot reach the primary");
                return Err(ApiError::Unavailable(
                    "the primary is unreachable; retry later".into(),
                ));
            }
            Err(_) => {
                tracing::warn!(primary = %self.primary, "the primary did not answer in time");
                return Err(ApiError::Unavailable(format!(
                    "the primary did not answer within {} ms; retry later",
                    self.answer_timeout.as_millis()
                )));
            }
        };
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    fn too_large(&self) -> ApiError {
        ApiError::TooLarge(format!(
            "the request body is larger than {} bytes",
            self.max_body
        ))
    }
}

/// The `Content-Length` a request declares, if it declares one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Removes the hop-by-hop headers and those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Appends `peer` to `X-Forwarded-For`, joining what came before into one line.
pub fn append_forwarded_for(headers: &mut HeaderMap, peer: IpAddr) {
    let mut chain: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    chain.push(peer.to_string());
    // Only what was already a valid header value, plus an address, is joined.
    if let Ok(value) = HeaderValue::from_str(&chain.join(", ")) {
        headers.insert("x-forwarded-for", value);
    }
}

/// Whether the request failed because its body went over the limit while streaming.
fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// An error with its causes, for the log.
fn chain(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        remove_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "content-type"]);
    }

    #[test]
    fn the_peer_is_appended_after_what_the_client_sent() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("2.2.2.2, 3.3.3.3"),
        );
        append_forwarded_for(&mut h, "10.0.0.1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1");
        let mut empty = HeaderMap::new();
        append_forwarded_for(&mut empty, "::1".parse().unwrap());
        assert_eq!(empty["x-forwarded-for"], "::1");
    }
}
