//! Room names and who may join them: the one place that spells `user:{id}`,
//! `post:{id}`, `presence:{id}`, `feed`, `public:…` and `broadcast`, and decides
//! which rooms a websocket or Socket.IO client may join.
//!
//! Rooms live in explicit namespaces. A client may join only
//! - its own `user:{id}` (it is always in it),
//! - `post:{id}` of an existing post,
//! - `presence:{id}` of any user id (whether that user exists is not checked: the
//!   room says nothing until a user with that id connects),
//! - `feed`, where every new post is announced,
//! - `broadcast`, the room of everyone (it is always in it),
//! - any room under the public prefix `public:` (chat rooms, lobbies…).
//!
//! Every other name is refused with `forbidden`. That includes the RESP channels
//! the Flask-SocketIO bridge listens on (`flask-socketio`, `socketio`) and any
//! channel a RESP client invents: a room is public only because its name says so,
//! never because nobody thought of protecting it.
//!
//! This module knows no transport and no storage: whether a post exists is asked
//! of the caller.

use std::fmt;

/// The prefix of rooms any signed-in client may join.
pub const PUBLIC_PREFIX: &str = "public:";

/// The room for events addressed to everyone (a Flask-SocketIO emit without a
/// room); every websocket and Socket.IO connection is in it.
pub const BROADCAST: &str = crate::hub::BROADCAST_ROOM;

/// The room where every new post is announced (`new_post`).
pub const FEED: &str = "feed";

/// Longest room name, in bytes: for joining (`/ws`, Socket.IO) and for the admin
/// publish route alike.
pub const MAX_ROOM_BYTES: usize = 128;

/// Most rooms one websocket or Socket.IO connection may join, not counting the two
/// it is always in (its own `user:{id}` and `broadcast`).
pub const MAX_ROOMS_PER_CONNECTION: usize = 256;

/// Rooms every connection is in from the start: its own and `broadcast`.
pub const ALWAYS_JOINED: usize = 2;

/// The room of user `id`: their notifications and direct events.
pub fn user(id: u64) -> String {
    format!("user:{id}")
}

/// The room of post `id`: its counters and comments as they change.
pub fn post(id: u64) -> String {
    format!("post:{id}")
}

/// The room announcing user `id`'s presence changes (`presence` events).
pub fn presence(id: u64) -> String {
    crate::hub::presence_room(id)
}

/// What a room name means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room<'a> {
    /// `user:{id}`.
    User(u64),
    /// `post:{id}`.
    Post(u64),
    /// `presence:{id}`.
    Presence(u64),
    /// `feed`.
    Feed,
    /// `public:{name}`; holds the whole name.
    Public(&'a str),
    /// `broadcast`.
    Broadcast,
    /// Any other well-formed name: RESP channels, the bridge's channels. Never
    /// joinable by websocket or Socket.IO clients.
    Other(&'a str),
}

/// Why a name is not a room name at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRoom(pub String);

impl fmt::Display for InvalidRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidRoom {}

/// An id in a room name: decimal digits only, no sign, no leading zero (so that
/// every id has exactly one room name).
fn id(digits: &str) -> Option<u64> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// Reads a room name. Names are 1 to [`MAX_ROOM_BYTES`] bytes without spaces or
/// control characters; `user:`, `post:` and `presence:` must be followed by a
/// canonical id and
/// `public:` by at least one character.
pub fn parse(name: &str) -> Result<Room<'_>, InvalidRoom> {
    if name.is_empty() || name.len() > MAX_ROOM_BYTES {
        return Err(InvalidRoom(format!(
            "a room name is 1 to {MAX_ROOM_BYTES} bytes"
        )));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(InvalidRoom(
            "a room name has no spaces or control characters".into(),
        ));
    }
    if let Some(rest) = name.strip_prefix("user:") {
        return id(rest)
            .map(Room::User)
            .ok_or_else(|| InvalidRoom(format!("{name} is not user:{{id}}")));
    }
    if let Some(rest) = name.strip_prefix("post:") {
        return id(rest)
            .map(Room::Post)
            .ok_or_else(|| InvalidRoom(format!("{name} is not post:{{id}}")));
    }
    if let Some(rest) = name.strip_prefix(crate::hub::PRESENCE_ROOM_PREFIX) {
        return id(rest)
            .map(Room::Presence)
            .ok_or_else(|| InvalidRoom(format!("{name} is not presence:{{id}}")));
    }
    if name == FEED {
        return Ok(Room::Feed);
    }
    if let Some(rest) = name.strip_prefix(PUBLIC_PREFIX) {
        if rest.is_empty() {
            return Err(InvalidRoom(format!(
                "a public room needs a name after {PUBLIC_PREFIX}"
            )));
        }
        return Ok(Room::Public(name));
    }
    if name == BROADCAST {
        return Ok(Room::Broadcast);
    }
    Ok(Room::Other(name))
}

impl Room<'_> {
    /// Whether events may be published to this room from outside the server's own
    /// code (the admin publish route): any room a client can be in.
    pub fn is_client_room(&self) -> bool {
        !matches!(self, Room::Other(_))
    }
}

/// Why a join was refused; `code` is the API error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `invalid`, `forbidden`, `not_found` or `unavailable`.
    pub code: &'static str,
    /// A sentence for the client.
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// Whether a post exists, as the caller's store says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostLookup {
    /// It exists.
    Exists,
    /// It does not.
    Missing,
    /// The store could not say (the cause, for the log only).
    Failed(String),
}

/// The join policy: may user `caller` join the room `name`? `post_exists` is asked
/// only for `post:{id}` rooms.
pub fn may_join<'a>(
    name: &'a str,
    caller: u64,
    post_exists: impl FnOnce(u64) -> PostLookup,
) -> Result<Room<'a>, Refusal> {
    let room = parse(name).map_err(|e| Refusal::new("invalid", e.0))?;
    match room {
        Room::User(id) if id == caller => Ok(room),
        Room::User(_) => Err(Refusal::new(
            "forbidden",
            format!("room {name} belongs to another user"),
        )),
        Room::Post(id) => match post_exists(id) {
            PostLookup::Exists => Ok(room),
            PostLookup::Missing => Err(Refusal::new(
                "not_found",
                format!("post {id} does not exist"),
            )),
            // The cause stays in the server's log (the caller logs it): a store
            // error's text is not for clients.
            PostLookup::Failed(_) => Err(Refusal::new(
                "unavailable",
                "the server cannot check this room right now; try again",
            )),
        },
        Room::Public(_) | Room::Broadcast | Room::Presence(_) | Room::Feed => Ok(room),
        Room::Other(_) => Err(Refusal::new(
            "forbidden",
            format!(
                "room {name} is not public: clients may join rooms named {PUBLIC_PREFIX}…, \
                 post:{{id}}, presence:{{id}}, {FEED}, their own user:{{id}} and {BROADCAST}"
            ),
        )),
    }
}

/// Whether a connection that is in `rooms_in` rooms (those it is always in
/// included) may join one more; a room it is already in is not counted again.
pub fn may_join_another(rooms_in: usize, already_in: bool) -> Result<(), Refusal> {
    let joined = rooms_in.saturating_sub(ALWAYS_JOINED);
    if already_in || joined < MAX_ROOMS_PER_CONNECTION {
        Ok(())
    } else {
        Err(Refusal::new(
            "rate_limited",
            format!(
                "at most {MAX_ROOMS_PER_CONNECTION} rooms per connection besides your own and \
                 {BROADCAST}"
            ),
        ))
    }
}

/// Whether user `caller` may leave `name`: never their own room (their
/// notifications must reach them).
pub fn may_leave(name: &str, caller: u64) -> Result<(), Refusal> {
    match parse(name) {
        Ok(Room::User(id)) if id == caller => Err(Refusal::new(
            "forbidden",
            "you always stay in your own room",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exists(_: u64) -> PostLookup {
        PostLookup::Exists
    }

    #[test]
    fn names_round_trip_through_parse() {
        assert_eq!(parse(&user(42)), Ok(Room::User(42)));
        assert_eq!(parse(&post(7)), Ok(Room::Post(7)));
        assert_eq!(parse("public:lobby"), Ok(Room::Public("public:lobby")));
        assert_eq!(parse("broadcast"), Ok(Room::Broadcast));
        assert_eq!(parse(&presence(5)), Ok(Room::Presence(5)));
        assert_eq!(parse("feed"), Ok(Room::Feed));
        assert_eq!(parse("news"), Ok(Room::Other("news")));
        for bad in [
            "",
            "user:",
            "user:x",
            "user:07",
            "user:-1",
            "post:1 ",
            "public:",
            "a b",
            "a\u{0}",
            "presence:",
            "presence:01",
            "presence:x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&"x".repeat(MAX_ROOM_BYTES + 1)).is_err());
    }

    #[test]
    fn the_bridge_channels_and_other_names_are_never_joinable() {
        for name in crate::resp::bridge::CHANNELS.iter().copied().chain([
            "lobby",
            "news",
            "User:1",
            "__keyspace@0__:x",
        ]) {
            let refusal = may_join(name, 1, exists).unwrap_err();
            assert_eq!(refusal.code, "forbidden", "{name}");
        }
    }

    #[test]
    fn a_store_failure_is_not_shown_to_the_client() {
        let cause = "sled: Io(Os { code: 28, message: \"No space left\" }) at /var/lib/likewise/db";
        let refusal = may_join("post:9", 3, |_| PostLookup::Failed(cause.into())).unwrap_err();
        assert_eq!(refusal.code, "unavailable");
        assert!(!refusal.message.contains("sled"), "{}", refusal.message);
        assert!(!refusal.message.contains("/var/lib"), "{}", refusal.message);
    }

    #[test]
    fn the_room_count_leaves_out_the_rooms_always_joined() {
        let full = ALWAYS_JOINED + MAX_ROOMS_PER_CONNECTION;
        assert!(may_join_another(ALWAYS_JOINED, false).is_ok());
        assert!(may_join_another(full - 1, false).is_ok());
        assert_eq!(
            may_join_another(full, false).unwrap_err().code,
            "rate_limited"
        );
        assert!(
            may_join_another(full, true).is_ok(),
            "joining again costs nothing"
        );
    }

    #[test]
    fn the_join_policy() {
        assert_eq!(may_join("user:3", 3, exists), Ok(Room::User(3)));
        assert_eq!(may_join("user:4", 3, exists).unwrap_err().code, "forbidden");
        assert_eq!(may_join("post:9", 3, exists), Ok(Room::Post(9)));
        assert_eq!(
            may_join("post:9", 3, |_| PostLookup::Missing)
                .unwrap_err()
                .code,
            "not_found"
        );
        assert_eq!(
            may_join("post:9", 3, |_| PostLookup::Failed("disk".into()))
                .unwrap_err()
                .code,
            "unavailable"
        );
        assert!(may_join("public:x", 3, exists).is_ok());
        assert!(may_join("broadcast", 3, exists).is_ok());
        assert_eq!(
            may_join("presence:4", 3, |_| panic!("no post lookup")),
            Ok(Room::Presence(4))
        );
        assert_eq!(may_join("presence:3", 3, exists), Ok(Room::Presence(3)));
        assert_eq!(may_join("feed", 3, exists), Ok(Room::Feed));
        assert_eq!(may_join("Feed", 3, exists).unwrap_err().code, "forbidden");
        assert_eq!(
            may_join("presence:4x", 3, exists).unwrap_err().code,
            "invalid"
        );
        assert!(may_leave("presence:4", 3).is_ok());
        assert!(may_leave("feed", 3).is_ok());
        assert_eq!(may_join("public:", 3, exists).unwrap_err().code, "invalid");
        assert!(may_leave("user:3", 3).is_err());
        assert!(may_leave("broadcast", 3).is_ok());
        assert!(may_leave("public:x", 3).is_ok());
        assert!(may_leave("user:4", 3).is_ok());
    }
}
