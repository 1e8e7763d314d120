//! Socket.IO v5 over Engine.IO v4, websocket transport only, default namespace `/`.
//!
//! Engine.IO packets are one text frame each: `0` open (sent by us first, with the
//! `sid`, `upgrades: []`, `pingInterval`, `pingTimeout`, `maxPayload`), `2`/`3`
//! ping/pong (we ping; a client that does not pong within `pingTimeout` is
//! dropped), `1` close, `4` message. A message carries a Socket.IO packet: `0`
//! CONNECT (with the auth payload `{"token", "since"?}`), `1` DISCONNECT, `2` EVENT
//! (`42["name",args...]`), `3` ACK, `4` CONNECT_ERROR.
//!
//! Clients may emit `subscribe` / `unsubscribe` with a room name (acknowledged when
//! they ask for an ack) to follow `post:{id}` rooms, as on `/ws`.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use super::native::{room_allowed, MAX_ROOMS};
use super::{
    accept, close, not_replayed, preflight, replay, subscribe_user, token_user, Ctx, Out, Session,
    Timing,
};
use crate::domain::new_token;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::hub::{Delivery, FrameFormat, Publication, Transport};

/// A publication as a Socket.IO EVENT packet on the default namespace,
/// `42["E",args...]`; the hub renders it once per publication.
static EVENT_PACKET: FrameFormat = FrameFormat::new("socket.io event", event_packet);

fn event_packet(p: &Publication) -> Bytes {
    let e = p.as_event();
    let mut list = Vec::with_capacity(e.args.len() + 1);
    list.push(Value::String(e.name.clone()));
    list.extend(e.args.iter().cloned());
    Bytes::from(format!("42{}", Value::Array(list)))
}

/// `GET /socket.io/?EIO=4&transport=websocket`.
pub(crate) async fn upgrade(State(state): State<AppState>, parts: Parts) -> Response {
    let query = match preflight(&parts, &state) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    if query.eio.as_deref() != Some("4") {
        return ApiError::BadRequest(
            "only Engine.IO protocol 4 (Socket.IO v3+ clients) is supported: EIO=4".into(),
        )
        .into_response();
    }
    if query.transport.as_deref() != Some("websocket") {
        return ApiError::BadRequest(
            "only the websocket transport is supported: connect with transports: ['websocket']"
                .into(),
        )
        .into_response();
    }
    // A token in the query is checked before the upgrade; otherwise it comes in the
    // CONNECT packet's auth payload.
    let user = match token_user(&parts, &query, &state.social) {
        Ok(u) => u.map(|u| u.id),
        Err(e) => return e.into_response(),
    };
    let timing = Timing::from_state(&state);
    let session = SocketIoSession::new(
        user,
        query.since,
        timing,
        state.settings.limits.max_ws_message_bytes,
    );
    accept(parts, &state, session).await
}

/// One Socket.IO connection's protocol state.
pub(crate) struct SocketIoSession {
    sid: String,
    query_user: Option<u64>,
    query_since: Option<u64>,
    user: Option<u64>,
    replayed_up_to: u64,
    timing: Timing,
    max_payload: usize,
    ping_sent: Option<Instant>,
    last_ping: Instant,
}

fn text(s: String) -> Out {
    Out::Text(Bytes::from(s))
}

/// A Socket.IO packet inside an Engine.IO message.
#[derive(Debug, PartialEq)]
pub(crate) struct Packet {
    /// Packet type digit.
    pub kind: u8,
    /// Namespace (`/` when absent).
    pub nsp: String,
    /// Ack id.
    pub ack: Option<u64>,
    /// JSON payload.
    pub data: Option<Value>,
}

/// Parses a Socket.IO packet (the part after the Engine.IO `4`).
pub(crate) fn parse_packet(s: &str) -> Result<Packet, String> {
    let mut chars = s.char_indices().peekable();
    let kind = match chars.next() {
        Some((_, c)) if c.is_ascii_digit() => c as u8 - b'0',
        _ => return Err("a packet starts with its type digit".into()),
    };
    if kind > 6 {
        return Err(format!("unknown packet type {kind}"));
    }
    if kind == 5 || kind == 6 {
        return Err("binary packets are not supported".into());
    }
    let mut rest = &s[1..];
    let mut nsp = "/".to_owned();
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        nsp = rest[..end].to_owned();
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits > 0 {
        let id = rest[..digits]
            .parse::<u64>()
            .map_err(|_| "the ack id is too large".to_owned())?;
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };
    let data = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_str(rest).map_err(|e| format!("the payload is not JSON: {e}"))?)
    };
    Ok(Packet {
        kind,
        nsp,
        ack,
        data,
    })
}

impl SocketIoSession {
    pub(crate) fn new(
        query_user: Option<u64>,
        query_since: Option<u64>,
        timing: Timing,
        max_payload: usize,
    ) -> Self {
        SocketIoSession {
            sid: new_token()[..20].to_owned(),
            query_user,
            query_since,
            user: None,
            replayed_up_to: 0,
            timing,
            max_payload,
            ping_sent: None,
            last_ping: Instant::now(),
        }
    }

    fn connect_error(nsp: &str, message: &str) -> Out {
        let body = json!({"message": message});
        if nsp == "/" {
            text(format!("44{body}"))
        } else {
            text(format!("44{nsp},{body}"))
        }
    }

    fn connect(&mut self, ctx: &mut Ctx<'_>, p: Packet) -> Vec<Out> {
        if p.nsp != "/" {
            return vec![Self::connect_error(&p.nsp, "Invalid namespace")];
        }
        if self.user.is_some() {
            return vec![Self::connect_error("/", "already connected")];
        }
        let auth = p.data.unwrap_or(Value::Null);
        let user = match auth.get("token").and_then(Value::as_str) {
            Some(token) => match ctx.social.authenticate(token) {
                Ok(Some(u)) => u.id,
                Ok(None) => return vec![Self::connect_error("/", "unauthorized: bad token")],
                Err(e) => return vec![Self::connect_error("/", &format!("unavailable: {e}"))],
            },
            None => match self.query_user {
                Some(id) => id,
                None => {
                    return vec![Self::connect_error(
                        "/",
                        "unauthorized: send auth {\"token\": \"...\"}",
                    )]
                }
            },
        };
        let since = auth
            .get("since")
            .and_then(Value::as_u64)
            .or(self.query_since);
        self.user = Some(user);
        subscribe_user(ctx, Transport::SocketIo, user);
        let mut out = vec![text(format!("40{}", json!({"sid": self.sid})))];
        if let Some(since) = since {
            let (frames, last) = replay(ctx.social, user, since, |n| {
                Bytes::from(format!("42{}", json!(["new_notification", n])))
            });
            self.replayed_up_to = last;
            out.extend(frames);
        }
        out
    }

    fn event(&mut self, ctx: &mut Ctx<'_>, p: Packet) -> Vec<Out> {
        let Some(user) = self.user else {
            return Vec::new();
        };
        let args = match p.data {
            Some(Value::Array(a)) if !a.is_empty() => a,
            _ => {
                return vec![Out::Close(
                    close::POLICY,
                    "an EVENT needs [name, ...args]".into(),
                )]
            }
        };
        let name = args[0].as_str().unwrap_or_default().to_owned();
        let room = args.get(1).and_then(Value::as_str).map(str::to_owned);
        let reply = match (name.as_str(), room) {
            ("subscribe", Some(room)) => match room_allowed(ctx, user, &room) {
                Err((code, message)) => json!({"ok": false, "code": code, "message": message}),
                Ok(()) => match ctx.sub.as_ref() {
                    Some(sub) if sub.count() <= MAX_ROOMS => {
                        sub.join(&room);
                        json!({"ok": true, "room": room})
                    }
                    _ => json!({"ok": false, "code": "rate_limited", "message": "too many rooms"}),
                },
            },
            ("unsubscribe", Some(room)) => {
                if room == format!("user:{user}") {
                    json!({"ok": false, "code": "forbidden", "message": "you always stay in your own room"})
                } else {
                    if let Some(sub) = ctx.sub.as_ref() {
                        sub.leave(&room);
                    }
                    json!({"ok": true, "room": room})
                }
            }
            _ => {
                json!({"ok": false, "code": "bad_request", "message": format!("unknown event {name:?}; emit subscribe or unsubscribe with a room")})
            }
        };
        match p.ack {
            Some(id) => vec![text(format!("43{id}{}", json!([reply])))],
            None => Vec::new(),
        }
    }
}

impl Session for SocketIoSession {
    fn start(&mut self, _ctx: &mut Ctx<'_>) -> Vec<Out> {
        self.last_ping = Instant::now();
        let open = json!({
            "sid": self.sid,
            "upgrades": [],
            "pingInterval": self.timing.ping_interval.as_millis() as u64,
            "pingTimeout": self.timing.ping_timeout.as_millis() as u64,
            "maxPayload": self.max_payload,
        });
        vec![text(format!("0{open}"))]
    }

    fn on_text(&mut self, ctx: &mut Ctx<'_>, msg: &str) -> Vec<Out> {
        let Some(kind) = msg.chars().next() else {
            return vec![Out::Close(
                close::POLICY,
                "an empty Engine.IO packet".into(),
            )];
        };
        match kind {
            '3' => {
                self.ping_sent = None;
                Vec::new()
            }
            // A client-initiated ping (probe or heartbeat): answer it.
            '2' => vec![text(format!("3{}", &msg[1..]))],
            '1' => vec![Out::Close(close::NORMAL, "client closed".into())],
            '6' => Vec::new(),
            '4' => match parse_packet(&msg[1..]) {
                Ok(p) => match p.kind {
                    0 => self.connect(ctx, p),
                    1 => vec![Out::Close(close::NORMAL, "client disconnected".into())],
                    2 => self.event(ctx, p),
                    3 => Vec::new(),
                    _ => vec![Out::Close(
                        close::POLICY,
                        "unexpected packet from a client".into(),
                    )],
                },
                Err(e) => vec![Out::Close(
                    close::POLICY,
                    format!("bad Socket.IO packet: {e}"),
                )],
            },
            _ => vec![Out::Close(
                close::POLICY,
                format!("unknown Engine.IO packet type {kind:?}"),
            )],
        }
    }

    fn on_delivery(&mut self, d: &Delivery) -> Option<Bytes> {
        not_replayed(d, self.replayed_up_to).then(|| d.publication.frame(&EVENT_PACKET))
    }

    fn on_tick(&mut self, now: Instant, _last_seen: Instant) -> Vec<Out> {
        if let Some(sent) = self.ping_sent {
            if now.duration_since(sent) >= self.timing.ping_timeout {
                return vec![Out::Close(close::POLICY, "ping timeout".into())];
            }
            return Vec::new();
        }
        if now.duration_since(self.last_ping) >= self.timing.ping_interval {
            self.last_ping = now;
            self.ping_sent = Some(now);
            return vec![text("2".to_owned())];
        }
        Vec::new()
    }

    fn tick_every(&self) -> Duration {
        (self.timing.ping_interval.min(self.timing.ping_timeout) / 4).max(Duration::from_millis(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_parse_with_namespaces_acks_and_payloads() {
        assert_eq!(
            parse_packet("0{\"token\":\"t\"}").unwrap(),
            Packet {
                kind: 0,
                nsp: "/".into(),
                ack: None,
                data: Some(json!({"token": "t"}))
            }
        );
        assert_eq!(
            parse_packet("0/admin,{\"a\":1}").unwrap(),
            Packet {
                kind: 0,
                nsp: "/admin".into(),
                ack: None,
                data: Some(json!({"a": 1}))
            }
        );
        assert_eq!(
            parse_packet("212[\"subscribe\",\"post:1\"]").unwrap(),
            Packet {
                kind: 2,
                nsp: "/".into(),
                ack: Some(12),
                data: Some(json!(["subscribe", "post:1"]))
            }
        );
        assert_eq!(parse_packet("1").unwrap().kind, 1);
        for bad in [
            "",
            "x",
            "9",
            "2[",
            "51-[\"a\",{}]",
            "299999999999999999999999[]",
        ] {
            assert!(parse_packet(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_client_that_stops_ponging_is_dropped() {
        let timing = Timing {
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(5),
        };
        let mut s = SocketIoSession::new(None, None, timing, 1000);
        let t0 = s.last_ping;
        assert!(s.on_tick(t0 + Duration::from_secs(5), t0).is_empty());
        assert_eq!(
            s.on_tick(t0 + Duration::from_secs(10), t0),
            vec![text("2".into())]
        );
        assert!(s.on_tick(t0 + Duration::from_secs(12), t0).is_empty());
        let out = s.on_tick(t0 + Duration::from_secs(15), t0);
        assert!(matches!(out.as_slice(), [Out::Close(close::POLICY, _)]));
    }
}
