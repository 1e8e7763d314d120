//! Extractors whose rejections speak the API's error shape, authentication, and the
//! client's address.
//!
//! The client's address is the connection's peer, unless that peer is one of the
//! configured `trusted_proxies` (the edges, or a reverse proxy in front): then it is
//! the right-most address of `X-Forwarded-For` that is not itself a trusted proxy.
//! Everything to the left of that address was written by the client and could be
//! forged; a header from an untrusted peer is ignored entirely. The listener
//! resolves the address once per request ([`ClientIp`]); the sign-in and
//! registration throttles read it through [`ClientAddr`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::listener::canonical;
use super::AppState;
use crate::domain::{SignedIn, User};

/// `axum::Json` with rejections in the API's shape (400, or 413 over the limit), and
/// a deadline: the whole body must arrive within `http_body_timeout_ms` of the
/// handler starting to read it, or 408 and the connection is closed. The header
/// timeout ends with the request head; without this, a client could trickle a
/// body of `max_body_bytes` for as long as it liked.
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let ms = state.settings.limits.http_body_timeout_ms;
        match tokio::time::timeout(
            Duration::from_millis(ms),
            axum::Json::<T>::from_request(req, state),
        )
        .await
        {
            Ok(Ok(axum::Json(value))) => Ok(ApiJson(value)),
            Ok(Err(rejection)) => Err(rejection.into()),
            Err(_) => Err(ApiError::BodyTimeout(format!(
                "the request body did not arrive within {ms} ms"
            ))),
        }
    }
}

/// `axum::extract::Path` with rejections in the API's shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` with rejections in the API's shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The bearer token of a request, from `Authorization: Bearer` (websocket upgrades
/// and the admin stream also read `?token=` and `?ticket=` themselves).
pub fn bearer_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    None
}

/// Most `X-Forwarded-For` entries examined, right to left: a chain of proxies is
/// short, and the header's length is bounded by the request-head limit anyway.
const MAX_FORWARDED_HOPS: usize = 32;

/// The peers whose `X-Forwarded-For` is believed (`[limits] trusted_proxies`):
/// addresses or CIDR blocks, IPv4 or IPv6. Empty (the default) believes nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.7`, `::1`) and blocks (`10.0.0.0/8`); a block
    /// covering every address (`/0`) is refused, since it would let any client
    /// choose its own address.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::with_capacity(entries.len());
        for entry in entries {
            let text = entry.as_ref().trim();
            let net = match text.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => match text.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "trusted_proxies: {text:?} is neither an address (10.0.0.7) \
                             nor a CIDR block (10.0.0.0/8)"
                        ))
                    }
                },
            };
            if net.prefix_len() == 0 {
                return Err(format!(
                    "trusted_proxies: {text:?} would trust every address; name the proxies"
                ));
            }
            nets.push(net.trunc());
        }
        Ok(TrustedProxies(nets))
    }

    /// Whether nobody is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` (IPv4-mapped IPv6 counted as the IPv4 address) is trusted.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request that arrived from `peer` with `headers`:
    /// `peer` itself unless it is trusted; otherwise the right-most untrusted
    /// `X-Forwarded-For` entry. If every entry is trusted, the left-most one; if an
    /// entry is not an address, the last trusted hop before it (what comes further
    /// left cannot be vouched for).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.contains(client) {
            return client;
        }
        let entries = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|value| {
                // A value that is not text ends the chain like an unparseable entry.
                let text = value.to_str().unwrap_or("?");
                text.rsplit(',')
            })
            .take(MAX_FORWARDED_HOPS);
        for entry in entries {
            let Some(ip) = forwarded_entry(entry.trim()) else {
                return client;
            };
            client = canonical(ip);
            if !self.contains(client) {
                return client;
            }
        }
        client
    }
}

impl TryFrom<Vec<String>> for TrustedProxies {
    type Error = String;

    fn try_from(entries: Vec<String>) -> Result<Self, String> {
        TrustedProxies::parse(&entries)
    }
}

impl From<TrustedProxies> for Vec<String> {
    fn from(t: TrustedProxies) -> Vec<String> {
        t.0.iter().map(ToString::to_string).collect()
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`,
/// `[::1]:5`), as some proxies write it.
fn forwarded_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    entry.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// The client's address as the listener resolved it for one request (see
/// [`TrustedProxies::client_ip`]); a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The address of the client: the connection's, or the one a trusted proxy
/// forwarded (never a header from anyone else, which a client could forge).
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        if let Some(ClientIp(ip)) = parts.extensions.get::<ClientIp>() {
            return Ok(ClientAddr(*ip));
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| ClientAddr(c.0.ip()))
            .ok_or_else(|| ApiError::Internal("the connection's address is unknown".into()))
    }
}

/// The signed-in user; 401 without a valid token (saying whether it is unknown,
/// expired or revoked).
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(ApiError::no_token)?;
        not_admin(state, &token)?;
        Ok(CurrentUser(state.social.authenticate(&token)?))
    }
}

/// Refuses the admin token on routes that act as a user: it is valid, but it is
/// nobody's session, so the answer is 403 rather than "sign in again".
pub(crate) fn not_admin(state: &AppState, token: &str) -> Result<(), ApiError> {
    if state.admin.matches(token) {
        return Err(admin_is_no_user());
    }
    Ok(())
}

/// The refusal of the admin token where a user's session is needed.
pub(crate) fn admin_is_no_user() -> ApiError {
    ApiError::Forbidden(
        "the admin token is not a user's session: this route needs a user's token".into(),
    )
}

/// The signed-in user and the session the request's token names (for signing out
/// and password changes).
pub struct CurrentSession(pub SignedIn);

impl FromRequestParts<AppState> for CurrentSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(ApiError::no_token)?;
        not_admin(state, &token)?;
        Ok(CurrentSession(state.social.signed_in(&token)?))
    }
}

/// Either a signed-in session or the admin.
pub enum Caller {
    /// A user's token.
    User(User),
    /// The admin token.
    Admin,
}

/// As [`Caller`], keeping the user's session.
pub enum SessionOrAdmin {
    /// A user's session.
    User(SignedIn),
    /// The admin token.
    Admin,
}

impl FromRequestParts<AppState> for SessionOrAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(ApiError::no_token)?;
        if state.admin.matches(&token) {
            return Ok(SessionOrAdmin::Admin);
        }
        Ok(SessionOrAdmin::User(state.social.signed_in(&token)?))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(
            match SessionOrAdmin::from_request_parts(parts, state).await? {
                SessionOrAdmin::User(s) => Caller::User(s.user),
                SessionOrAdmin::Admin => Caller::Admin,
            },
        )
    }
}

/// The admin; 401 without a token, 403 with a user's token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(ApiError::no_token)?;
        admin_only(state, &token)
    }
}

/// Whether `token` is the admin token: 403 for a user's valid token, 401 for
/// anything else.
pub fn admin_only(state: &AppState, token: &str) -> Result<Admin, ApiError> {
    if state.admin.matches(token) {
        return Ok(Admin);
    }
    state.social.authenticate(token)?;
    Err(ApiError::Forbidden("this needs the admin token".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn addresses_and_blocks_parse_and_nonsense_is_refused() {
        let t = TrustedProxies::parse(&["127.0.0.1", "10.1.2.3/8", "fd00::/8", " ::1 "]).unwrap();
        assert!(t.contains(ip("127.0.0.1")));
        assert!(!t.contains(ip("127.0.0.2")));
        assert!(t.contains(ip("10.200.0.1")));
        assert!(
            t.contains(ip("::ffff:10.0.0.1")),
            "mapped IPv4 counts as IPv4"
        );
        assert!(t.contains(ip("fd12::1")));
        assert!(t.contains(ip("::1")));
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["edge-1"]).is_err());
        assert!(TrustedProxies::parse(&["0.0.0.0/0"]).is_err());
        assert!(TrustedProxies::parse(&["::/0"]).is_err());
        assert!(TrustedProxies::parse::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let t = TrustedProxies::parse(&["10.0.0.1"]).unwrap();
        let h = xff(&["203.0.113.9"]);
        assert_eq!(t.client_ip(ip("198.51.100.7"), &h), ip("198.51.100.7"));
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_right_most_untrusted_entry_is_the_client() {
        let t = TrustedProxies::parse(&["10.0.0.0/24"]).unwrap();
        let peer = ip("10.0.0.1");
        // The client forged the first entry; the edge appended the real one.
        let h = xff(&["1.1.1.1, 203.0.113.9"]);
        assert_eq!(t.client_ip(peer, &h), ip("203.0.113.9"));
        // A chain of trusted proxies is walked through, across header lines too.
        let h = xff(&["1.1.1.1, 203.0.113.9", "10.0.0.2", "10.0.0.3:4000"]);
        assert_eq!(t.client_ip(peer, &h), ip("203.0.113.9"));
        let h = xff(&["[2001:db8::7]:443"]);
        assert_eq!(t.client_ip(peer, &h), ip("2001:db8::7"));
    }

    #[test]
    fn garbage_and_missing_headers_stop_at_the_last_trusted_hop() {
        let t = TrustedProxies::parse(&["10.0.0.0/24"]).unwrap();
        let peer = ip("10.0.0.1");
        assert_eq!(t.client_ip(peer, &HeaderMap::new()), peer);
        assert_eq!(t.client_ip(peer, &xff(&["unknown"])), peer);
        assert_eq!(
            t.client_ip(peer, &xff(&["203.0.113.9, nonsense, 10.0.0.5"])),
            ip("10.0.0.5")
        );
        assert_eq!(
            t.client_ip(peer, &xff(&["10.0.0.9, 10.0.0.5"])),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn the_setting_round_trips_through_toml() {
        #[derive(Deserialize)]
        struct File {
            trusted_proxies: TrustedProxies,
        }
        let f: File = toml::from_str(r#"trusted_proxies = ["10.0.0.7", "fd00::/8"]"#).unwrap();
        assert!(f.trusted_proxies.contains(ip("10.0.0.7")));
        let err = toml::from_str::<File>(r#"trusted_proxies = ["nope"]"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("neither an address"), "{err}");
    }
}
