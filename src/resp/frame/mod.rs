//! RESP on the wire: requests in, replies out.
//!
//! A request is what a Redis server accepts and nothing more: a flat array of
//! bulk strings (`*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n`), or an inline command line
//! (`PING hi\r\n`, what telnet users and `redis-cli` in a pipe send). Anything else
//! where a request starts (another RESP type, a nested aggregate, a null) is an
//! [`Error`], never a panic; the caller answers `-ERR Protocol error: ...` and
//! closes that one connection.
//!
//! - [`decode`]: a [`Decoder`] that keeps its place across reads, so a request
//!   arriving in many TCP segments costs CPU in proportion to its bytes, and
//!   checks every count and length against [`RequestLimits`] before it allocates
//!   anything for it. Bulk strings are slices of the input, never copies.
//! - [`inline`]: splitting an inline command line with Redis's quoting rules.
//! - [`encode`]: [`Reply`], which writes replies into the connection's output
//!   buffer in the protocol version the connection negotiated.
//!
//! This module knows bytes only: never commands, sockets or the hub.

pub mod decode;
pub mod encode;
pub mod inline;

pub use decode::Decoder;
pub use encode::Reply;

/// Protocol version a connection speaks (changed by `HELLO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// RESP2, every connection's start.
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl Proto {
    /// The number `HELLO` uses for it.
    pub fn number(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

/// Bounds on one request, all checked before anything is allocated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most arguments (array elements), the command name included.
    pub max_args: usize,
    /// Largest bulk string, in bytes.
    pub max_bulk: usize,
    /// Most bytes one request may take on the wire, headers included.
    pub max_request: usize,
    /// Longest inline command line, in bytes.
    pub max_inline: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_args: 1024 * 1024,
            max_bulk: 8 * 1024 * 1024,
            max_request: 64 * 1024 * 1024,
            max_inline: 64 * 1024,
        }
    }
}

/// A malformed or oversized request. The text follows `Protocol error: `, in
/// Redis's words where Redis has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A request starting with a RESP type other than `*`.
    #[error("expected '*', got '{0}'")]
    NotAnArray(char),
    /// An array element that is not a bulk string.
    #[error("expected '$', got '{0}'")]
    NotABulk(char),
    /// The array length is not a number.
    #[error("invalid multibulk length")]
    InvalidArrayLength,
    /// More arguments than the limit.
    #[error("invalid multibulk length (over the {0} argument limit)")]
    TooManyArgs(usize),
    /// A bulk length that is not a number, or negative.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// A bulk string longer than the limit.
    #[error("invalid bulk length (over the {0} byte limit)")]
    BulkTooLong(usize),
    /// A request longer than the limit.
    #[error("request over the {0} byte limit")]
    RequestTooLong(usize),
    /// A length line that does not end where a number would.
    #[error("too big {0} count string")]
    HeaderTooLong(&'static str),
    /// An inline line longer than the limit.
    #[error("too big inline request (over {0} bytes)")]
    InlineTooLong(usize),
    /// An inline line with an unterminated quote.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// Bulk data not followed by CRLF.
    #[error("expected CRLF after bulk data")]
    MissingCrlf,
}

/// A decimal, optionally signed integer: the whole of `text`.
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    let (neg, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        n = if neg {
            n.checked_mul(10)?.checked_sub(d)?
        } else {
            n.checked_mul(10)?.checked_add(d)?
        };
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::parse_i64;

    #[test]
    fn integers_parse_in_full_or_not_at_all() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-42"), Some(-42));
        assert_eq!(parse_i64(b"+7"), Some(7));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"12a"), None);
    }
}
