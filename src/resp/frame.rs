//! RESP2 and RESP3 frames: bytes in, [`Frame`]s out, and replies back to bytes.
//!
//! Reading is two passes, so that a frame arriving in many TCP segments costs no
//! allocation until it is whole: [`check`] walks the buffered bytes and answers
//! [`Checked::Incomplete`] (an ordinary answer: read more) or the frame's length;
//! [`parse`] then builds the frame from exactly those bytes, sharing them (bulk
//! strings are slices of the input, never copies). Every length, nesting level and
//! inline line is bounded by [`FrameLimits`]; anything malformed or oversized is an
//! [`Error`], never a panic, and the caller answers `-ERR Protocol error: ...` and
//! closes that one connection.
//!
//! Requests that do not start with a RESP type byte are inline commands (what
//! `redis-cli` in a pipe and telnet users send): one line, split on blanks, with
//! Redis's quoting rules.
//!
//! Writing goes straight into the connection's output buffer through [`Reply`], in
//! the protocol version the connection negotiated: a RESP3 map, push or null is
//! written in its RESP2 form (flat array, array, null bulk) to a RESP2 client.
//!
//! This module knows bytes and frames only: never commands, sockets or the hub.

use bytes::{BufMut, Bytes, BytesMut};

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

/// One RESP value.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+text`
    Simple(Bytes),
    /// `-ERR text`
    Error(Bytes),
    /// `:n`, signed.
    Integer(i64),
    /// `$n` then n bytes.
    Bulk(Bytes),
    /// `_` (RESP3), `$-1` or `*-1` (RESP2).
    Null,
    /// `*n` then n frames.
    Array(Vec<Frame>),
    /// `,` (RESP3 double).
    Double(f64),
    /// `#t` / `#f` (RESP3).
    Boolean(bool),
    /// `(` (RESP3 big number), kept as its decimal text.
    BigNumber(Bytes),
    /// `!n` (RESP3 bulk error).
    BulkError(Bytes),
    /// `=n` (RESP3 verbatim string): a three-letter format and the text.
    Verbatim([u8; 3], Bytes),
    /// `%n` then n key/value pairs (RESP3).
    Map(Vec<(Frame, Frame)>),
    /// `~n` (RESP3 set).
    Set(Vec<Frame>),
    /// `>n` (RESP3 out-of-band push).
    Push(Vec<Frame>),
}

/// Bounds on what a peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest bulk string, in bytes.
    pub max_bulk: usize,
    /// Most elements in one aggregate (array, map pairs, set, push).
    pub max_array: usize,
    /// Deepest nesting of aggregates (a flat command array is depth 1).
    pub max_depth: usize,
    /// Longest inline command line, in bytes.
    pub max_inline: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_bulk: 8 * 1024 * 1024,
            max_array: 1024 * 1024,
            max_depth: 8,
            max_inline: 64 * 1024,
        }
    }
}

/// A malformed or oversized frame. The text follows `Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A length line is not a number, or out of range.
    #[error("invalid {0} length")]
    InvalidLength(&'static str),
    /// A bulk string longer than the limit.
    #[error("invalid bulk length (over the {0} byte limit)")]
    BulkTooLong(usize),
    /// An aggregate with more elements than the limit.
    #[error("invalid multibulk length (over the {0} element limit)")]
    ArrayTooLong(usize),
    /// Aggregates nested deeper than the limit.
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
    /// An inline line longer than the limit.
    #[error("too big inline request (over {0} bytes)")]
    InlineTooLong(usize),
    /// An inline line with an unterminated quote.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// Bulk data not followed by CRLF.
    #[error("expected CRLF after bulk data")]
    MissingCrlf,
    /// A number that is not one.
    #[error("invalid {0}")]
    InvalidNumber(&'static str),
    /// A type byte RESP does not define where a frame must start.
    #[error("unexpected byte {0:?} where a frame starts")]
    UnexpectedByte(char),
    /// A RESP3 attribute (`|`), which no client sends.
    #[error("attributes are not accepted")]
    Attribute,
}

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// The buffer holds a whole frame of this many bytes.
    Complete(usize),
    /// More bytes are needed; nothing is wrong so far.
    Incomplete,
}

fn is_type_byte(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b':'
            | b'$'
            | b'*'
            | b'_'
            | b','
            | b'#'
            | b'('
            | b'!'
            | b'='
            | b'%'
            | b'~'
            | b'>'
            | b'|'
    )
}

/// Confirms that `buf` starts with a whole frame (or inline command line) within
/// `limits`, without building it.
pub fn check(buf: &[u8], limits: &FrameLimits) -> Result<Checked, Error> {
    let Some(&first) = buf.first() else {
        return Ok(Checked::Incomplete);
    };
    if !is_type_byte(first) {
        return check_inline(buf, limits);
    }
    Ok(match check_at(buf, 0, 1, limits)? {
        Some(end) => Checked::Complete(end),
        None => Checked::Incomplete,
    })
}

fn check_inline(buf: &[u8], limits: &FrameLimits) -> Result<Checked, Error> {
    let window = &buf[..buf.len().min(limits.max_inline.saturating_add(1))];
    match memchr::memchr(b'\n', window) {
        Some(i) => Ok(Checked::Complete(i + 1)),
        None if buf.len() > limits.max_inline => Err(Error::InlineTooLong(limits.max_inline)),
        None => Ok(Checked::Incomplete),
    }
}

/// The line starting at `pos` (without its CRLF) and the position after the CRLF.
fn line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let mut from = 0;
    loop {
        let i = from + memchr::memchr(b'\r', &rest[from..])?;
        match rest.get(i + 1) {
            Some(b'\n') => return Some((&rest[..i], pos + i + 2)),
            Some(_) => from = i + 1,
            None => return None,
        }
    }
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

/// A length line: `-1` (null) or a count up to `max`.
fn length(text: &[u8], what: &'static str) -> Result<Option<usize>, Error> {
    let n = parse_i64(text).ok_or(Error::InvalidLength(what))?;
    match n {
        -1 => Ok(None),
        n if n < 0 => Err(Error::InvalidLength(what)),
        n => usize::try_from(n)
            .map(Some)
            .map_err(|_| Error::InvalidLength(what)),
    }
}

fn parse_double(text: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(text).ok()?;
    match s {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ if s.is_empty() || !s.bytes().all(|b| b"0123456789+-.eE".contains(&b)) => None,
        _ => s.parse().ok(),
    }
}

fn check_big_number(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let digits = digits.strip_prefix(b"+").unwrap_or(digits);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// Checks the frame at `pos`; `Ok(None)` when incomplete, else the end position.
fn check_at(
    buf: &[u8],
    pos: usize,
    depth: usize,
    limits: &FrameLimits,
) -> Result<Option<usize>, Error> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((text, after)) = line(buf, pos + 1) else {
        // A line that never ends must not grow the buffer forever.
        if buf.len() - pos > limits.max_inline {
            return Err(Error::InlineTooLong(limits.max_inline));
        }
        return Ok(None);
    };
    match kind {
        b'+' | b'-' => Ok(Some(after)),
        b':' => parse_i64(text)
            .map(|_| Some(after))
            .ok_or(Error::InvalidNumber("integer")),
        b'_' if text.is_empty() => Ok(Some(after)),
        b'_' => Err(Error::InvalidNumber("null")),
        b',' => parse_double(text)
            .map(|_| Some(after))
            .ok_or(Error::InvalidNumber("double")),
        b'#' if text == b"t" || text == b"f" => Ok(Some(after)),
        b'#' => Err(Error::InvalidNumber("boolean")),
        b'(' if check_big_number(text) => Ok(Some(after)),
        b'(' => Err(Error::InvalidNumber("big number")),
        b'$' | b'!' | b'=' => {
            let Some(len) = length(text, "bulk")? else {
                return if kind == b'$' {
                    Ok(Some(after))
                } else {
                    Err(Error::InvalidLength("bulk"))
                };
            };
            if len > limits.max_bulk {
                return Err(Error::BulkTooLong(limits.max_bulk));
            }
            if kind == b'=' && (len < 4 || buf.get(after + 3).is_some_and(|&b| b != b':')) {
                return Err(Error::InvalidLength("verbatim"));
            }
            let end = after + len;
            if buf.len() < end + 2 {
                // Check what is there of the terminator already.
                if buf.len() > end && buf[end] != b'\r' {
                    return Err(Error::MissingCrlf);
                }
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(Error::MissingCrlf);
            }
            Ok(Some(end + 2))
        }
        b'*' | b'%' | b'~' | b'>' => {
            let Some(len) = length(text, "multibulk")? else {
                return if kind == b'*' {
                    Ok(Some(after))
                } else {
                    Err(Error::InvalidLength("multibulk"))
                };
            };
            if len > limits.max_array {
                return Err(Error::ArrayTooLong(limits.max_array));
            }
            if len > 0 && depth > limits.max_depth {
                return Err(Error::TooDeep(limits.max_depth));
            }
            let count = if kind == b'%' { len * 2 } else { len };
            let mut at = after;
            for _ in 0..count {
                match check_at(buf, at, depth + 1, limits)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        b'|' => Err(Error::Attribute),
        other => Err(Error::UnexpectedByte(char::from(other))),
    }
}

/// Builds the frame that [`check`] confirmed: `frame` holds exactly its bytes.
/// Bulk strings share `frame`'s memory.
pub fn parse(frame: &Bytes) -> Result<Frame, Error> {
    match frame.first() {
        None => Ok(Frame::Array(Vec::new())),
        Some(&b) if !is_type_byte(b) => parse_inline(frame),
        Some(_) => parse_at(frame, 0).map(|(f, _)| f),
    }
}

fn parse_at(buf: &Bytes, pos: usize) -> Result<(Frame, usize), Error> {
    let kind = *buf.get(pos).ok_or(Error::InvalidLength("frame"))?;
    let (text, after) = line(buf, pos + 1).ok_or(Error::InvalidLength("frame"))?;
    let text_start = pos + 1;
    let text_bytes = || buf.slice(text_start..text_start + text.len());
    let frame = match kind {
        b'+' => Frame::Simple(text_bytes()),
        b'-' => Frame::Error(text_bytes()),
        b':' => Frame::Integer(parse_i64(text).ok_or(Error::InvalidNumber("integer"))?),
        b'_' => Frame::Null,
        b',' => Frame::Double(parse_double(text).ok_or(Error::InvalidNumber("double"))?),
        b'#' => Frame::Boolean(text == b"t"),
        b'(' => Frame::BigNumber(text_bytes()),
        b'$' | b'!' | b'=' => {
            let Some(len) = length(text, "bulk")? else {
                return Ok((Frame::Null, after));
            };
            let end = after + len;
            if buf.len() < end + 2 {
                return Err(Error::InvalidLength("bulk"));
            }
            let data = buf.slice(after..end);
            let frame = match kind {
                b'$' => Frame::Bulk(data),
                b'!' => Frame::BulkError(data),
                _ => match data.get(..4) {
                    Some(&[a, b, c, b':']) => Frame::Verbatim([a, b, c], data.slice(4..)),
                    _ => return Err(Error::InvalidLength("verbatim")),
                },
            };
            return Ok((frame, end + 2));
        }
        b'*' | b'%' | b'~' | b'>' => {
            let Some(len) = length(text, "multibulk")? else {
                return Ok((Frame::Null, after));
            };
            let mut at = after;
            if kind == b'%' {
                let mut pairs = Vec::with_capacity(len);
                for _ in 0..len {
                    let (k, next) = parse_at(buf, at)?;
                    let (v, next) = parse_at(buf, next)?;
                    pairs.push((k, v));
                    at = next;
                }
                return Ok((Frame::Map(pairs), at));
            }
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                let (f, next) = parse_at(buf, at)?;
                items.push(f);
                at = next;
            }
            let frame = match kind {
                b'*' => Frame::Array(items),
                b'~' => Frame::Set(items),
                _ => Frame::Push(items),
            };
            return Ok((frame, at));
        }
        b'|' => return Err(Error::Attribute),
        other => return Err(Error::UnexpectedByte(char::from(other))),
    };
    Ok((frame, after))
}

/// An inline command line as an array of bulk strings, split like Redis does:
/// blanks separate arguments; `"..."` understands `\n \r \t \b \a \\ \" \xHH`;
/// `'...'` understands `\'`; a closing quote must be followed by a blank.
fn parse_inline(frame: &Bytes) -> Result<Frame, Error> {
    let mut text: &[u8] = frame;
    if let Some(t) = text.strip_suffix(b"\n") {
        text = t;
    }
    if let Some(t) = text.strip_suffix(b"\r") {
        text = t;
    }
    let mut args = Vec::new();
    let mut i = 0;
    let blank = |b: u8| b == b' ' || b == b'\t' || b == b'\r' || b == b'\n' || b == 0x0b;
    while i < text.len() {
        while i < text.len() && blank(text[i]) {
            i += 1;
        }
        if i == text.len() {
            break;
        }
        let mut arg = Vec::new();
        match text[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = text.get(i) else {
                        return Err(Error::UnbalancedQuotes);
                    };
                    match c {
                        b'\\'
                            if text.get(i + 1) == Some(&b'x')
                                && text.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                                && text.get(i + 3).is_some_and(u8::is_ascii_hexdigit) =>
                        {
                            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                            arg.push(hex(text[i + 2]) * 16 + hex(text[i + 3]));
                            i += 4;
                        }
                        b'\\' if i + 1 < text.len() => {
                            arg.push(match text[i + 1] {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            if text.get(i).is_some_and(|&b| !blank(b)) {
                                return Err(Error::UnbalancedQuotes);
                            }
                            break;
                        }
                        other => {
                            arg.push(other);
                            i += 1;
                        }
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = text.get(i) else {
                        return Err(Error::UnbalancedQuotes);
                    };
                    match c {
                        b'\\' if text.get(i + 1) == Some(&b'\'') => {
                            arg.push(b'\'');
                            i += 2;
                        }
                        b'\'' => {
                            i += 1;
                            if text.get(i).is_some_and(|&b| !blank(b)) {
                                return Err(Error::UnbalancedQuotes);
                            }
                            break;
                        }
                        other => {
                            arg.push(other);
                            i += 1;
                        }
                    }
                }
            }
            _ => {
                let start = i;
                while i < text.len() && !blank(text[i]) {
                    i += 1;
                }
                args.push(Frame::Bulk(frame.slice(start..i)));
                continue;
            }
        }
        args.push(Frame::Bulk(Bytes::from(arg)));
    }
    Ok(Frame::Array(args))
}

/// Writes replies into an output buffer in the connection's protocol version.
pub struct Reply<'a> {
    buf: &'a mut BytesMut,
    proto: Proto,
}

impl<'a> Reply<'a> {
    /// A writer appending to `buf`.
    pub fn new(buf: &'a mut BytesMut, proto: Proto) -> Self {
        Reply { buf, proto }
    }

    /// The protocol version replies are written in.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// Switches the protocol version (after `HELLO` or `RESET`).
    pub fn set_proto(&mut self, proto: Proto) {
        self.proto = proto;
    }

    fn line(&mut self, kind: u8, text: &[u8]) {
        self.buf.reserve(text.len() + 3);
        self.buf.put_u8(kind);
        self.buf.put_slice(text);
        self.buf.put_slice(b"\r\n");
    }

    fn number(&mut self, kind: u8, n: i64) {
        let mut fmt = itoa::Buffer::new();
        self.line(kind, fmt.format(n).as_bytes());
    }

    fn len(&mut self, kind: u8, n: usize) {
        let mut fmt = itoa::Buffer::new();
        self.line(kind, fmt.format(n).as_bytes());
    }

    /// `+text`; CR and LF (which would break the frame) become spaces.
    pub fn simple(&mut self, text: &str) {
        self.line(b'+', sanitize(text).as_bytes());
    }

    /// `-text`, e.g. `ERR wrong number of arguments`; CR and LF become spaces.
    pub fn error(&mut self, text: &str) {
        self.line(b'-', sanitize(text).as_bytes());
    }

    /// `:n`
    pub fn integer(&mut self, n: i64) {
        self.number(b':', n);
    }

    /// `$len` and the bytes.
    pub fn bulk(&mut self, data: &[u8]) {
        self.len(b'$', data.len());
        self.buf.reserve(data.len() + 2);
        self.buf.put_slice(data);
        self.buf.put_slice(b"\r\n");
    }

    /// `_` in RESP3, the null bulk `$-1` in RESP2.
    pub fn null(&mut self) {
        match self.proto {
            Proto::Resp3 => self.buf.put_slice(b"_\r\n"),
            Proto::Resp2 => self.buf.put_slice(b"$-1\r\n"),
        }
    }

    /// `*n`; n elements follow.
    pub fn array(&mut self, n: usize) {
        self.len(b'*', n);
    }

    /// `%n` in RESP3; a flat array of 2n in RESP2. n key/value pairs follow.
    pub fn map(&mut self, n: usize) {
        match self.proto {
            Proto::Resp3 => self.len(b'%', n),
            Proto::Resp2 => self.len(b'*', n * 2),
        }
    }

    /// `~n` in RESP3, `*n` in RESP2.
    pub fn set(&mut self, n: usize) {
        match self.proto {
            Proto::Resp3 => self.len(b'~', n),
            Proto::Resp2 => self.len(b'*', n),
        }
    }

    /// `>n` in RESP3, `*n` in RESP2 (where pub/sub messages are plain arrays).
    pub fn push(&mut self, n: usize) {
        match self.proto {
            Proto::Resp3 => self.len(b'>', n),
            Proto::Resp2 => self.len(b'*', n),
        }
    }

    /// `,x` in RESP3, a bulk string in RESP2.
    pub fn double(&mut self, x: f64) {
        let text = if x.is_nan() {
            "nan".to_owned()
        } else if x.is_infinite() {
            if x > 0.0 { "inf" } else { "-inf" }.to_owned()
        } else {
            x.to_string()
        };
        match self.proto {
            Proto::Resp3 => self.line(b',', text.as_bytes()),
            Proto::Resp2 => self.bulk(text.as_bytes()),
        }
    }

    /// `#t`/`#f` in RESP3, `:1`/`:0` in RESP2.
    pub fn boolean(&mut self, b: bool) {
        match self.proto {
            Proto::Resp3 => self.buf.put_slice(if b { b"#t\r\n" } else { b"#f\r\n" }),
            Proto::Resp2 => self.integer(i64::from(b)),
        }
    }

    /// `(n` in RESP3, a bulk string in RESP2.
    pub fn big_number(&mut self, digits: &[u8]) {
        match self.proto {
            Proto::Resp3 => self.line(b'(', digits),
            Proto::Resp2 => self.bulk(digits),
        }
    }

    /// `!n` in RESP3, a simple error in RESP2.
    pub fn bulk_error(&mut self, text: &[u8]) {
        match self.proto {
            Proto::Resp3 => {
                self.len(b'!', text.len());
                self.buf.put_slice(text);
                self.buf.put_slice(b"\r\n");
            }
            Proto::Resp2 => self.error(&String::from_utf8_lossy(text)),
        }
    }

    /// `=n` with a three-letter format (`txt`, `mkd`) in RESP3, a bulk in RESP2.
    pub fn verbatim(&mut self, format: [u8; 3], text: &[u8]) {
        match self.proto {
            Proto::Resp3 => {
                self.len(b'=', text.len() + 4);
                self.buf.put_slice(&format);
                self.buf.put_u8(b':');
                self.buf.put_slice(text);
                self.buf.put_slice(b"\r\n");
            }
            Proto::Resp2 => self.bulk(text),
        }
    }

    /// Any frame, recursively.
    pub fn frame(&mut self, frame: &Frame) {
        match frame {
            Frame::Simple(s) => self.line(b'+', &strip_crlf(s)),
            Frame::Error(s) => self.line(b'-', &strip_crlf(s)),
            Frame::Integer(n) => self.integer(*n),
            Frame::Bulk(b) => self.bulk(b),
            Frame::Null => self.null(),
            Frame::Array(items) => {
                self.array(items.len());
                items.iter().for_each(|f| self.frame(f));
            }
            Frame::Double(x) => self.double(*x),
            Frame::Boolean(b) => self.boolean(*b),
            Frame::BigNumber(d) => self.big_number(d),
            Frame::BulkError(e) => self.bulk_error(e),
            Frame::Verbatim(format, text) => self.verbatim(*format, text),
            Frame::Map(pairs) => {
                self.map(pairs.len());
                for (k, v) in pairs {
                    self.frame(k);
                    self.frame(v);
                }
            }
            Frame::Set(items) => {
                self.set(items.len());
                items.iter().for_each(|f| self.frame(f));
            }
            Frame::Push(items) => {
                self.push(items.len());
                items.iter().for_each(|f| self.frame(f));
            }
        }
    }
}

fn sanitize(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\r', '\n']) {
        std::borrow::Cow::Owned(text.replace(['\r', '\n'], " "))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn strip_crlf(text: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        std::borrow::Cow::Owned(
            text.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> FrameLimits {
        FrameLimits {
            max_bulk: 64,
            max_array: 8,
            max_depth: 3,
            max_inline: 40,
        }
    }

    fn decode(input: &[u8]) -> Result<Checked, Error> {
        check(input, &limits())
    }

    fn parse_whole(input: &[u8]) -> Frame {
        match decode(input) {
            Ok(Checked::Complete(n)) => {
                assert_eq!(n, input.len(), "whole input is one frame: {input:?}");
                parse(&Bytes::copy_from_slice(input)).expect("parses")
            }
            other => panic!("{input:?} did not check: {other:?}"),
        }
    }

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn valid() -> Vec<(&'static [u8], Frame)> {
        vec![
            (b"+OK\r\n", Frame::Simple(Bytes::from_static(b"OK"))),
            (
                b"-ERR bad\r\n",
                Frame::Error(Bytes::from_static(b"ERR bad")),
            ),
            (b":0\r\n", Frame::Integer(0)),
            (b":-42\r\n", Frame::Integer(-42)),
            (b":+7\r\n", Frame::Integer(7)),
            (b":9223372036854775807\r\n", Frame::Integer(i64::MAX)),
            (b":-9223372036854775808\r\n", Frame::Integer(i64::MIN)),
            (b"$5\r\nhello\r\n", bulk("hello")),
            (b"$0\r\n\r\n", bulk("")),
            (b"$4\r\na\r\nb\r\n", bulk("a\r\nb")),
            (b"$-1\r\n", Frame::Null),
            (b"*-1\r\n", Frame::Null),
            (b"_\r\n", Frame::Null),
            (b"*0\r\n", Frame::Array(vec![])),
            (
                b"*2\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n",
                Frame::Array(vec![bulk("subscribe"), bulk("news")]),
            ),
            (
                b"*2\r\n*1\r\n:1\r\n$-1\r\n",
                Frame::Array(vec![Frame::Array(vec![Frame::Integer(1)]), Frame::Null]),
            ),
            (b",3.5\r\n", Frame::Double(3.5)),
            (b",-inf\r\n", Frame::Double(f64::NEG_INFINITY)),
            (b"#t\r\n", Frame::Boolean(true)),
            (b"#f\r\n", Frame::Boolean(false)),
            (
                b"(-123456789012345678901234567890\r\n",
                Frame::BigNumber(Bytes::from_static(b"-123456789012345678901234567890")),
            ),
            (
                b"!9\r\nERR oops!\r\n",
                Frame::BulkError(Bytes::from_static(b"ERR oops!")),
            ),
            (
                b"=7\r\ntxt:abc\r\n",
                Frame::Verbatim(*b"txt", Bytes::from_static(b"abc")),
            ),
            (
                b"%1\r\n+server\r\n$5\r\nredis\r\n",
                Frame::Map(vec![(
                    Frame::Simple(Bytes::from_static(b"server")),
                    bulk("redis"),
                )]),
            ),
            (b"~1\r\n:1\r\n", Frame::Set(vec![Frame::Integer(1)])),
            (
                b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
                Frame::Push(vec![bulk("message"), bulk("c"), bulk("m")]),
            ),
            (b"PING\r\n", Frame::Array(vec![bulk("PING")])),
            (b"PING\n", Frame::Array(vec![bulk("PING")])),
            (
                b"publish  ch \"a b\\n\\x41\"\r\n",
                Frame::Array(vec![bulk("publish"), bulk("ch"), bulk("a b\nA")]),
            ),
            (
                b"echo 'it\\'s'\r\n",
                Frame::Array(vec![bulk("echo"), bulk("it's")]),
            ),
            (b"\r\n", Frame::Array(vec![])),
        ]
    }

    #[test]
    fn valid_frames_parse_to_what_they_say() {
        for (input, expected) in valid() {
            let got = parse_whole(input);
            match (&got, &expected) {
                (Frame::Double(a), Frame::Double(b)) => assert!(a == b),
                _ => assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(input)),
            }
        }
    }

    #[test]
    fn every_strict_prefix_of_a_valid_frame_is_incomplete() {
        for (input, _) in valid() {
            for cut in 0..input.len() {
                assert_eq!(
                    decode(&input[..cut]),
                    Ok(Checked::Incomplete),
                    "prefix {:?} of {:?}",
                    String::from_utf8_lossy(&input[..cut]),
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn a_frame_followed_by_more_reports_only_its_own_length() {
        let input = b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI";
        assert_eq!(decode(input), Ok(Checked::Complete(14)));
        assert_eq!(decode(b"PING\r\nPING\r\n"), Ok(Checked::Complete(6)));
    }

    #[test]
    fn malformed_and_oversized_input_is_an_error_not_a_panic() {
        let cases: &[(&[u8], Error)] = &[
            (b":12a\r\n", Error::InvalidNumber("integer")),
            (b":\r\n", Error::InvalidNumber("integer")),
            (
                b":99999999999999999999\r\n",
                Error::InvalidNumber("integer"),
            ),
            (b"$abc\r\n", Error::InvalidLength("bulk")),
            (b"$-2\r\n", Error::InvalidLength("bulk")),
            (b"$65\r\n", Error::BulkTooLong(64)),
            (b"$3\r\nabcde\r\n", Error::MissingCrlf),
            (b"$3\r\nabc\rx", Error::MissingCrlf),
            (b"*9\r\n", Error::ArrayTooLong(8)),
            (b"*-5\r\n", Error::InvalidLength("multibulk")),
            (b"%-1\r\n", Error::InvalidLength("multibulk")),
            (b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", Error::TooDeep(3)),
            (b"*1\r\n&x\r\n", Error::UnexpectedByte('&')),
            (b"|1\r\n", Error::Attribute),
            (b"_x\r\n", Error::InvalidNumber("null")),
            (b",1.2.3x\r\n", Error::InvalidNumber("double")),
            (b"#x\r\n", Error::InvalidNumber("boolean")),
            (b"(12a\r\n", Error::InvalidNumber("big number")),
            (b"=2\r\nab\r\n", Error::InvalidLength("verbatim")),
            (b"!-1\r\n", Error::InvalidLength("bulk")),
            (b"echo \"abc\r\n", Error::UnbalancedQuotes),
            (b"echo 'abc\r\n", Error::UnbalancedQuotes),
            (b"echo \"a\"b\r\n", Error::UnbalancedQuotes),
            (&[b'x'; 50], Error::InlineTooLong(40)),
            (&[b'+'; 50], Error::InlineTooLong(40)),
        ];
        for (input, expected) in cases {
            let got = decode(input).and_then(|c| match c {
                Checked::Complete(n) => parse(&Bytes::copy_from_slice(&input[..n])).map(|_| c),
                Checked::Incomplete => Ok(c),
            });
            assert_eq!(
                got.as_ref(),
                Err(expected),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix of many pseudo-random inputs
        // built from RESP's own alphabet.
        let alphabet = b"+-:$*_,#(!=%~>|0123456789\r\nab -";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..4000 {
            let len = (seed % 24) as usize;
            let mut input = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                input.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            if let Ok(Checked::Complete(n)) = decode(&input) {
                let _ = parse(&Bytes::copy_from_slice(&input[..n]));
            }
        }
    }

    fn encoded(proto: Proto, frame: &Frame) -> Vec<u8> {
        let mut buf = BytesMut::new();
        Reply::new(&mut buf, proto).frame(frame);
        buf.to_vec()
    }

    #[test]
    fn every_reply_type_encodes_in_both_versions() {
        let push = Frame::Push(vec![bulk("message"), bulk("c"), bulk("m")]);
        let map = Frame::Map(vec![(bulk("proto"), Frame::Integer(3))]);
        let table: Vec<(Frame, &[u8], &[u8])> = vec![
            (
                Frame::Simple(Bytes::from_static(b"OK")),
                b"+OK\r\n",
                b"+OK\r\n",
            ),
            (
                Frame::Error(Bytes::from_static(b"ERR a\r\nb")),
                b"-ERR a  b\r\n",
                b"-ERR a  b\r\n",
            ),
            (Frame::Integer(-3), b":-3\r\n", b":-3\r\n"),
            (bulk("hi"), b"$2\r\nhi\r\n", b"$2\r\nhi\r\n"),
            (Frame::Null, b"$-1\r\n", b"_\r\n"),
            (
                Frame::Array(vec![Frame::Integer(1), Frame::Null]),
                b"*2\r\n:1\r\n$-1\r\n",
                b"*2\r\n:1\r\n_\r\n",
            ),
            (
                map,
                b"*2\r\n$5\r\nproto\r\n:3\r\n",
                b"%1\r\n$5\r\nproto\r\n:3\r\n",
            ),
            (
                push,
                b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
                b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
            ),
            (Frame::Set(vec![]), b"*0\r\n", b"~0\r\n"),
            (Frame::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n"),
            (Frame::Boolean(true), b":1\r\n", b"#t\r\n"),
            (
                Frame::BigNumber(Bytes::from_static(b"12")),
                b"$2\r\n12\r\n",
                b"(12\r\n",
            ),
            (
                Frame::BulkError(Bytes::from_static(b"ERR x")),
                b"-ERR x\r\n",
                b"!5\r\nERR x\r\n",
            ),
            (
                Frame::Verbatim(*b"txt", Bytes::from_static(b"hi")),
                b"$2\r\nhi\r\n",
                b"=6\r\ntxt:hi\r\n",
            ),
        ];
        for (frame, resp2, resp3) in table {
            assert_eq!(encoded(Proto::Resp2, &frame), resp2, "{frame:?} in RESP2");
            assert_eq!(encoded(Proto::Resp3, &frame), resp3, "{frame:?} in RESP3");
        }
    }

    #[test]
    fn resp3_frames_round_trip_through_the_codec() {
        for (input, expected) in valid() {
            if !is_type_byte(input[0]) || expected == Frame::Null {
                continue;
            }
            let bytes = encoded(Proto::Resp3, &expected);
            let back = parse_whole(&bytes);
            if let (Frame::Double(a), Frame::Double(b)) = (&back, &expected) {
                assert!(a == b);
            } else {
                assert_eq!(back, expected);
            }
        }
    }
}
