//! The native websocket protocol of `GET /ws` (API.md "Native websocket").
//!
//! Server → client: `{"event": NAME, "data": ...}`; first `ready`, then (with
//! `?since=N`) every stored notification newer than N, oldest first, then live
//! events. Client → server: `subscribe`, `unsubscribe`, `ping` ops. The user is
//! always in `user:{id}` and in the `broadcast` room (events for everyone), and may
//! not join another user's room.
//!
//! Resuming without a gap or a duplicate: the subscription to `user:{id}` is made
//! BEFORE the store is read for the replay, so a notification committed during the
//! replay is either read by it or delivered live afterwards (its push follows its
//! commit). Live notifications whose id the replay already covered are skipped:
//! ids are assigned in commit order by the single writer, so every notification
//! with an id up to the highest replayed one was in the store when it was read.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    accept, close, not_replayed, preflight, replay, subscribe_user, token_user, Ctx, Out, Session,
    Timing,
};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::hub::{Delivery, Transport};

/// Longest room name a client may join.
pub(crate) const MAX_ROOM_BYTES: usize = 128;

/// Most rooms one connection may join besides its own.
pub(crate) const MAX_ROOMS: usize = 256;

/// `GET /ws`: checks the origin and the token, then upgrades.
pub(crate) async fn upgrade(State(state): State<AppState>, parts: Parts) -> Response {
    let query = match preflight(&parts, &state) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let user = match token_user(&parts, &query, &state.social) {
        Ok(Some(user)) => user,
        Ok(None) => return ApiError::no_token().into_response(),
        Err(e) => return e.into_response(),
    };
    let session = NativeSession::new(user.id, query.since, Timing::from_state(&state));
    accept(parts, &state, session).await
}

/// One `/ws` connection's protocol state.
pub(crate) struct NativeSession {
    user: u64,
    since: Option<u64>,
    replayed_up_to: u64,
    timing: Timing,
    ping_sent: Option<Instant>,
}

#[derive(Deserialize)]
struct Op {
    op: String,
    room: Option<String>,
}

fn event(name: &str, data: Value) -> Out {
    Out::Text(Bytes::from(
        json!({"event": name, "data": data}).to_string(),
    ))
}

fn error(code: &str, message: impl Into<String>) -> Out {
    event("error", json!({"code": code, "message": message.into()}))
}

/// Whether `user` may join `room`: never another user's room; `post:{id}` only for
/// an existing post; any other well-formed name is a public room.
pub(crate) fn room_allowed(ctx: &Ctx<'_>, user: u64, room: &str) -> Result<(), (String, String)> {
    let bad = |code: &str, m: String| Err((code.to_owned(), m));
    if room.is_empty() || room.len() > MAX_ROOM_BYTES {
        return bad(
            "invalid",
            format!("a room name is 1 to {MAX_ROOM_BYTES} bytes"),
        );
    }
    if room.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad(
            "invalid",
            "a room name has no spaces or control characters".into(),
        );
    }
    if let Some(rest) = room.strip_prefix("user:") {
        if rest != user.to_string() {
            return bad("forbidden", format!("room {room} belongs to another user"));
        }
    }
    if let Some(rest) = room.strip_prefix("post:") {
        let Ok(id) = rest.parse::<u64>() else {
            return bad("invalid", format!("{room} is not post:{{id}}"));
        };
        match ctx.social.post(id, false) {
            Ok(_) => {}
            Err(crate::domain::DomainError::NotFound(_)) => {
                return bad("not_found", format!("post {id} does not exist"));
            }
            Err(e) => return bad("unavailable", e.to_string()),
        }
    }
    Ok(())
}

impl NativeSession {
    pub(crate) fn new(user: u64, since: Option<u64>, timing: Timing) -> Self {
        NativeSession {
            user,
            since,
            replayed_up_to: 0,
            timing,
            ping_sent: None,
        }
    }

    fn handle(&mut self, ctx: &mut Ctx<'_>, op: Op) -> Vec<Out> {
        let Some(sub) = ctx.sub.as_ref() else {
            return vec![error("unavailable", "not subscribed yet")];
        };
        match op.op.as_str() {
            "ping" => vec![event("pong", Value::Null)],
            "subscribe" | "unsubscribe" => {
                let Some(room) = op.room else {
                    return vec![error("bad_request", format!("{} needs a room", op.op))];
                };
                if op.op == "unsubscribe" {
                    if room == format!("user:{}", self.user) {
                        return vec![error("forbidden", "you always stay in your own room")];
                    }
                    sub.leave(&room);
                    return vec![event("unsubscribed", json!({"room": room}))];
                }
                if let Err((code, message)) = room_allowed(ctx, self.user, &room) {
                    return vec![error(&code, message)];
                }
                if sub.count() > MAX_ROOMS {
                    return vec![error(
                        "rate_limited",
                        format!("at most {MAX_ROOMS} rooms per connection"),
                    )];
                }
                sub.join(&room);
                vec![event("subscribed", json!({"room": room}))]
            }
            other => vec![error(
                "bad_request",
                format!("unknown op {other:?}; use subscribe, unsubscribe or ping"),
            )],
        }
    }
}

impl Session for NativeSession {
    fn start(&mut self, ctx: &mut Ctx<'_>) -> Vec<Out> {
        subscribe_user(ctx, Transport::Ws, self.user);
        let mut out = vec![event("ready", json!({"user_id": self.user}))];
        if let Some(since) = self.since {
            let (frames, last) = replay(ctx.social, self.user, since, |n| {
                Bytes::from(json!({"event": "new_notification", "data": n}).to_string())
            });
            self.replayed_up_to = last;
            out.extend(frames);
        }
        out
    }

    fn on_text(&mut self, ctx: &mut Ctx<'_>, text: &str) -> Vec<Out> {
        match serde_json::from_str::<Op>(text) {
            Ok(op) => self.handle(ctx, op),
            Err(e) => vec![error(
                "bad_request",
                format!("expected {{\"op\": ...}} JSON: {e}"),
            )],
        }
    }

    fn on_delivery(&mut self, d: &Delivery) -> Option<Bytes> {
        not_replayed(d, self.replayed_up_to).then(|| d.publication.envelope().clone())
    }

    fn on_tick(&mut self, now: Instant, last_seen: Instant) -> Vec<Out> {
        if let Some(sent) = self.ping_sent {
            if last_seen < sent && now.duration_since(sent) >= self.timing.ping_timeout {
                return vec![Out::Close(close::POLICY, "no answer to ping".into())];
            }
            if last_seen >= sent {
                self.ping_sent = None;
            }
        }
        if self.ping_sent.is_none() && now.duration_since(last_seen) >= self.timing.ping_interval {
            self.ping_sent = Some(now);
            return vec![Out::Ping];
        }
        Vec::new()
    }

    fn tick_every(&self) -> Duration {
        (self.timing.ping_interval.min(self.timing.ping_timeout) / 2).max(Duration::from_millis(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_silent_peer_is_pinged_then_dropped() {
        let mut s = NativeSession::new(1, None, timing());
        let t0 = Instant::now();
        assert!(s.on_tick(t0 + Duration::from_secs(1), t0).is_empty());
        assert_eq!(s.on_tick(t0 + Duration::from_secs(10), t0), vec![Out::Ping]);
        assert!(s.on_tick(t0 + Duration::from_secs(12), t0).is_empty());
        let out = s.on_tick(t0 + Duration::from_secs(15), t0);
        assert!(matches!(out.as_slice(), [Out::Close(close::POLICY, _)]));
    }

    #[test]
    fn an_answering_peer_stays() {
        let mut s = NativeSession::new(1, None, timing());
        let t0 = Instant::now();
        assert_eq!(s.on_tick(t0 + Duration::from_secs(10), t0), vec![Out::Ping]);
        let answered = t0 + Duration::from_secs(11);
        assert!(s.on_tick(t0 + Duration::from_secs(16), answered).is_empty());
        assert_eq!(
            s.on_tick(t0 + Duration::from_secs(21), answered),
            vec![Out::Ping]
        );
    }
}
