//! The native websocket protocol of `GET /ws` (API.md "Native websocket").
//!
//! Server → client: `{"event": NAME, "data": ...}`; first `ready`, then (with
//! `?since=N`) every stored notification newer than N, oldest first, then live
//! events. Client → server: [`Command`]s, `{"op": "subscribe" | "unsubscribe" |
//! "ping", "room"?}`. The user is always in `user:{id}` and in `broadcast`, and
//! joins other rooms under the policy of [`crate::rooms`]. The replay's gap-free
//! guarantee is explained in [`super::session`].

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::session::{self, not_replayed, subscribe_user, Replay};
use super::upgrade::{accept, preflight, token_user};
use super::{close, Ctx, Out, RealtimeState, Session, Timing};
use crate::http::error::ApiError;
use crate::hub::{Delivery, Transport};

/// `GET /ws`: checks the origin and the token or ticket, then upgrades.
#[utoipa::path(get, path = "/ws", tag = "realtime", operation_id = "ws_upgrade", description = "The native websocket (API.md \"Native websocket\"): a websocket upgrade request, signed in with `?token=`, `?ticket=` (from POST /api/realtime/tickets) or `Authorization: Bearer`; `?since=N` replays notifications after id N.", params(("token" = Option<String>, Query, description = "A session token"), ("ticket" = Option<String>, Query, description = "A one-use ticket"), ("since" = Option<u64>, Query, description = "Replay notifications with ids above this")), responses((status = 101, description = "Switched to the websocket protocol"), (status = 401, description = "No valid token or ticket", body = crate::http::openapi::Error), (status = 403, description = "Origin not allowed, or the ticket is spent", body = crate::http::openapi::Error)))]
pub(crate) async fn upgrade(State(state): State<RealtimeState>, parts: Parts) -> Response {
    let query = match preflight(&parts, &state) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let user = match token_user(&parts, &query, &state).await {
        Ok(Some(user)) => user,
        Ok(None) => return ApiError::no_token().into_response(),
        Err(e) => return e.into_response(),
    };
    let session = NativeSession::new(user, query.since, Timing::from_state(&state));
    accept(parts, &state, session).await
}

/// A client command on `/ws`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `{"op":"subscribe","room":R}`: join room R.
    Subscribe(String),
    /// `{"op":"unsubscribe","room":R}`: leave room R.
    Unsubscribe(String),
    /// `{"op":"ping"}`: answered with a `pong` event.
    Ping,
}

/// Why a message is not a [`Command`]; answered with an `error` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandError(pub String);

#[derive(Deserialize)]
struct Op {
    op: String,
    room: Option<String>,
}

impl Command {
    /// Reads a command; unknown fields are ignored.
    pub(crate) fn parse(text: &str) -> Result<Command, CommandError> {
        let op: Op = serde_json::from_str(text)
            .map_err(|e| CommandError(format!("expected {{\"op\": ...}} JSON: {e}")))?;
        let room = |op: &Op| {
            op.room
                .clone()
                .ok_or_else(|| CommandError(format!("{} needs a room", op.op)))
        };
        match op.op.as_str() {
            "ping" => Ok(Command::Ping),
            "subscribe" => Ok(Command::Subscribe(room(&op)?)),
            "unsubscribe" => Ok(Command::Unsubscribe(room(&op)?)),
            other => Err(CommandError(format!(
                "unknown op {other:?}; use subscribe, unsubscribe or ping"
            ))),
        }
    }

    /// The command as a client sends it (the server only reads commands).
    #[cfg(test)]
    pub(crate) fn encode(&self) -> String {
        match self {
            Command::Ping => json!({"op": "ping"}),
            Command::Subscribe(room) => json!({"op": "subscribe", "room": room}),
            Command::Unsubscribe(room) => json!({"op": "unsubscribe", "room": room}),
        }
        .to_string()
    }
}

/// One `/ws` connection's protocol state.
pub(crate) struct NativeSession {
    user: u64,
    since: Option<u64>,
    replay: Option<Replay>,
    replayed_up_to: u64,
    /// The highest notification id this connection has sent.
    sent_up_to: u64,
    timing: Timing,
    ping_sent: Option<Instant>,
}

fn event(name: &str, data: Value) -> Out {
    Out::Text(Bytes::from(
        json!({"event": name, "data": data}).to_string(),
    ))
}

fn error(code: &str, message: impl Into<String>) -> Out {
    event("error", json!({"code": code, "message": message.into()}))
}

impl NativeSession {
    pub(crate) fn new(user: u64, since: Option<u64>, timing: Timing) -> Self {
        NativeSession {
            user,
            since,
            replay: None,
            replayed_up_to: 0,
            sent_up_to: 0,
            timing,
            ping_sent: None,
        }
    }

    async fn handle(&mut self, ctx: &mut Ctx<'_>, command: Command) -> Vec<Out> {
        if ctx.sub.is_none() {
            return vec![error("unavailable", "not subscribed yet")];
        }
        match command {
            Command::Ping => vec![event("pong", Value::Null)],
            Command::Subscribe(room) => match session::join(ctx, self.user, &room).await {
                Ok(()) => vec![event("subscribed", json!({"room": room}))],
                Err(r) => vec![error(r.code, r.message)],
            },
            Command::Unsubscribe(room) => match session::leave(ctx, self.user, &room) {
                Ok(()) => vec![event("unsubscribed", json!({"room": room}))],
                Err(r) => vec![error(r.code, r.message)],
            },
        }
    }
}

impl Session for NativeSession {
    async fn start(&mut self, ctx: &mut Ctx<'_>) -> Vec<Out> {
        subscribe_user(ctx, Transport::Ws, self.user).await;
        self.replay = self.since.map(|since| Replay::new(self.user, since));
        vec![event("ready", json!({"user_id": self.user}))]
    }

    async fn on_text(&mut self, ctx: &mut Ctx<'_>, text: &str) -> Vec<Out> {
        match Command::parse(text) {
            Ok(command) => self.handle(ctx, command).await,
            Err(CommandError(message)) => vec![error("bad_request", message)],
        }
    }

    fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    async fn next_page(&mut self, ctx: &mut Ctx<'_>) -> Vec<Out> {
        let Some(replay) = self.replay.as_mut() else {
            return Vec::new();
        };
        let out = replay
            .next_page(ctx.backend, |n| {
                Bytes::from(json!({"event": "new_notification", "data": n}).to_string())
            })
            .await;
        self.replayed_up_to = replay.replayed_up_to();
        self.sent_up_to = self.sent_up_to.max(self.replayed_up_to);
        if replay.done() {
            self.replay = None;
        }
        out
    }

    fn on_delivery(&mut self, d: &Delivery) -> Option<Bytes> {
        let frame = not_replayed(d, self.replayed_up_to).then(|| d.publication.envelope().clone());
        self.sent_up_to = session::sent_up_to(self.sent_up_to, d, frame.is_some());
        frame
    }

    fn resync(&mut self, after: u64) {
        if self.replay.is_none() {
            let from = after.max(self.sent_up_to);
            self.replay = Some(Replay::new(self.user, from));
        }
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

    use proptest::prelude::*;

    fn timing() -> Timing {
        Timing {
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn commands_parse_with_clear_errors() {
        assert_eq!(
            Command::parse(r#"{"op":"ping","pad":"x"}"#),
            Ok(Command::Ping)
        );
        assert_eq!(
            Command::parse(r#"{"op":"subscribe","room":"public:a"}"#),
            Ok(Command::Subscribe("public:a".into()))
        );
        for bad in [
            "",
            "null",
            "[]",
            r#"{"op":"subscribe"}"#,
            r#"{"op":"dance"}"#,
            r#"{"op":1}"#,
        ] {
            assert!(Command::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            Just(Command::Ping),
            any::<String>().prop_map(Command::Subscribe),
            any::<String>().prop_map(Command::Unsubscribe),
        ]
    }

    proptest! {
        #[test]
        fn commands_round_trip(c in command()) {
            prop_assert_eq!(Command::parse(&c.encode()), Ok(c));
        }

        #[test]
        fn arbitrary_text_never_panics_the_command_parser(s in any::<String>()) {
            let _ = Command::parse(&s);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_command_parser(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Command::parse(&String::from_utf8_lossy(&b));
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
