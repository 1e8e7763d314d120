//! Decoding requests from a connection's input buffer, resumably.
//!
//! The [`Decoder`] consumes what it has understood from the buffer and keeps its
//! place (how many arguments are still due, the length of the bulk string being
//! received, how far an inline line has been searched), so each byte received is
//! looked at a bounded number of times whatever the number of reads a request
//! takes: CPU is linear in the bytes received. Redis's `processMultibulkBuffer`
//! works the same way.
//!
//! Every count and length is checked against [`RequestLimits`] as soon as its
//! header line is read, before anything is allocated for it: the argument list
//! grows only as arguments actually arrive, and a bulk string is a slice of the
//! input buffer.

use bytes::{Buf, Bytes, BytesMut};

use super::{inline, parse_i64, Error, RequestLimits};

/// Longest `*n` or `$n` line, CRLF included: no count needs more.
const MAX_HEADER: usize = 32;

/// Most argument slots reserved before the arguments arrive.
const INITIAL_ARGS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests.
    Idle,
    /// In an inline line; the buffer holds no LF in its first `searched` bytes.
    Inline { searched: usize },
    /// In an array, before the next `$n` header.
    Header,
    /// In an array, receiving a bulk string of this many bytes.
    Bulk(usize),
}

/// A request decoder for one connection.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    args: Vec<Bytes>,
    /// Arguments the array header announced.
    expected: usize,
    /// Bytes of the current request consumed so far.
    taken: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

fn type_byte(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b':'
            | b'$'
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

/// The header line at the start of `buf` (without CRLF) and its length with it;
/// `None` while incomplete.
fn header<'a>(buf: &'a [u8], what: &'static str) -> Result<Option<(&'a [u8], usize)>, Error> {
    let window = &buf[..buf.len().min(MAX_HEADER)];
    match memchr::memchr(b'\n', window) {
        Some(i) if i > 0 && window[i - 1] == b'\r' => Ok(Some((&window[1..i - 1], i + 1))),
        Some(_) => Err(Error::HeaderTooLong(what)),
        None if buf.len() >= MAX_HEADER => Err(Error::HeaderTooLong(what)),
        None => Ok(None),
    }
}

impl Decoder {
    /// A decoder between requests.
    pub fn new() -> Self {
        Decoder {
            state: State::Idle,
            args: Vec::new(),
            expected: 0,
            taken: 0,
        }
    }

    /// Bytes still needed to finish the bulk string being received (0 when not
    /// in one): lets the reader size its buffer for the rest of a large argument.
    pub fn pending_bulk(&self, buffered: usize) -> usize {
        match self.state {
            State::Bulk(len) => (len + 2).saturating_sub(buffered),
            _ => 0,
        }
    }

    /// Whether a request has started but not ended.
    pub fn in_request(&self) -> bool {
        self.state != State::Idle
    }

    /// The next whole request's arguments, consuming its bytes from `buf`;
    /// `Ok(None)` when more bytes are needed. An empty list is a request to
    /// ignore (a blank line, `*0`, `*-1`), as Redis does. After an error the
    /// connection must be closed: the decoder's place in the stream is lost.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        limits: &RequestLimits,
    ) -> Result<Option<Vec<Bytes>>, Error> {
        loop {
            match self.state {
                State::Idle => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    if first == b'*' {
                        let Some((text, used)) = header(buf, "mbulk")? else {
                            return Ok(None);
                        };
                        let n = parse_i64(text).ok_or(Error::InvalidArrayLength)?;
                        if n > 0 && n as u64 > limits.max_args as u64 {
                            return Err(Error::TooManyArgs(limits.max_args));
                        }
                        buf.advance(used);
                        if n <= 0 {
                            return Ok(Some(Vec::new()));
                        }
                        let n = n as usize;
                        self.expected = n;
                        self.taken = used;
                        self.args = Vec::with_capacity(n.min(INITIAL_ARGS));
                        self.state = State::Header;
                    } else if type_byte(first) {
                        return Err(Error::NotAnArray(char::from(first)));
                    } else {
                        self.state = State::Inline { searched: 0 };
                    }
                }
                State::Inline { searched } => {
                    let window = &buf[..buf.len().min(limits.max_inline.saturating_add(1))];
                    match memchr::memchr(b'\n', &window[searched.min(window.len())..]) {
                        Some(i) => {
                            let line = buf.split_to(searched + i + 1).freeze();
                            self.state = State::Idle;
                            let args = inline::split(&line)?;
                            if args.len() > limits.max_args {
                                return Err(Error::TooManyArgs(limits.max_args));
                            }
                            return Ok(Some(args));
                        }
                        None if buf.len() > limits.max_inline => {
                            return Err(Error::InlineTooLong(limits.max_inline))
                        }
                        None => {
                            self.state = State::Inline {
                                searched: buf.len(),
                            };
                            return Ok(None);
                        }
                    }
                }
                State::Header => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    if first != b'$' {
                        return Err(Error::NotABulk(char::from(first)));
                    }
                    let Some((text, used)) = header(buf, "bulk")? else {
                        return Ok(None);
                    };
                    let len = match parse_i64(text) {
                        Some(n) if n >= 0 => n as u64,
                        _ => return Err(Error::InvalidBulkLength),
                    };
                    if len > limits.max_bulk as u64 {
                        return Err(Error::BulkTooLong(limits.max_bulk));
                    }
                    let len = len as usize;
                    if self.taken + used + len + 2 > limits.max_request {
                        return Err(Error::RequestTooLong(limits.max_request));
                    }
                    buf.advance(used);
                    self.taken += used;
                    self.state = State::Bulk(len);
                }
                State::Bulk(len) => {
                    if buf.len() < len + 2 {
                        // What is there of the terminator must already be right.
                        if buf.len() > len && buf[len] != b'\r' {
                            return Err(Error::MissingCrlf);
                        }
                        return Ok(None);
                    }
                    if &buf[len..len + 2] != b"\r\n" {
                        return Err(Error::MissingCrlf);
                    }
                    let data = buf.split_to(len).freeze();
                    buf.advance(2);
                    self.taken += len + 2;
                    self.args.push(data);
                    if self.args.len() == self.expected {
                        self.state = State::Idle;
                        return Ok(Some(std::mem::take(&mut self.args)));
                    }
                    self.state = State::Header;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RequestLimits {
        RequestLimits {
            max_args: 8,
            max_bulk: 64,
            max_request: 200,
            max_inline: 40,
        }
    }

    /// Decodes all of `input` at once: the requests, then the error if any.
    fn all(input: &[u8]) -> (Vec<Vec<String>>, Option<Error>) {
        let mut buf = BytesMut::from(input);
        let mut d = Decoder::new();
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf, &limits()) {
                Ok(Some(args)) => out.push(
                    args.iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect(),
                ),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn arrays_of_bulk_strings_and_inline_lines_decode_to_their_arguments() {
        let (reqs, err) =
            all(b"*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n*1\r\n$0\r\n\r\nPING x\r\n*0\r\n*-1\r\n\r\n");
        assert_eq!(err, None);
        let expected: Vec<Vec<&str>> = vec![
            vec!["ECHO", "a\r\nb"],
            vec![""],
            vec!["PING", "x"],
            vec![],
            vec![],
            vec![],
        ];
        assert_eq!(reqs, expected);
    }

    #[test]
    fn every_split_of_a_request_decodes_the_same() {
        let input = b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$5\r\nhello\r\nPING\r\n";
        for cut in 0..=input.len() {
            let mut d = Decoder::new();
            let mut buf = BytesMut::from(&input[..cut]);
            let mut got = Vec::new();
            while let Some(args) = d.decode(&mut buf, &limits()).unwrap() {
                got.push(args);
            }
            buf.extend_from_slice(&input[cut..]);
            while let Some(args) = d.decode(&mut buf, &limits()).unwrap() {
                got.push(args);
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0][2].as_ref(), b"hello");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn malformed_and_oversized_requests_are_errors() {
        let cases: &[(&[u8], Error)] = &[
            (b":1\r\n", Error::NotAnArray(':')),
            (b"$3\r\nabc\r\n", Error::NotAnArray('$')),
            (b"%1\r\n", Error::NotAnArray('%')),
            (b"*1\r\n*1\r\n", Error::NotABulk('*')),
            (b"*1\r\n:1\r\n", Error::NotABulk(':')),
            (b"*1\r\n$-1\r\n", Error::InvalidBulkLength),
            (b"*x\r\n", Error::InvalidArrayLength),
            (b"*9\r\n", Error::TooManyArgs(8)),
            (b"*1\r\n$65\r\n", Error::BulkTooLong(64)),
            (b"*1\r\n$abc\r\n", Error::InvalidBulkLength),
            (b"*1\r\n$3\r\nabcde\r\n", Error::MissingCrlf),
            (b"*1\r\n$3\r\nabc\rx", Error::MissingCrlf),
            (b"*1\r\n$3\r\nabcd", Error::MissingCrlf),
            (b"*1\n", Error::HeaderTooLong("mbulk")),
            (&[b'*'; 40], Error::HeaderTooLong("mbulk")),
            (&[b'x'; 50], Error::InlineTooLong(40)),
            (b"a b c d e f g h i\r\n", Error::TooManyArgs(8)),
            (b"echo \"abc\r\n", Error::UnbalancedQuotes),
            (
                b"*4\r\n$64\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n\
                  $64\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n\
                  $64\r\n",
                Error::RequestTooLong(200),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                all(input).1.as_ref(),
                Some(expected),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn every_strict_prefix_of_a_request_is_incomplete() {
        let input = b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n";
        for cut in 0..input.len() {
            let mut buf = BytesMut::from(&input[..cut]);
            assert_eq!(Decoder::new().decode(&mut buf, &limits()), Ok(None));
        }
    }

    #[test]
    fn an_inline_line_is_searched_once_across_reads() {
        let mut d = Decoder::new();
        let mut buf = BytesMut::from(&b"PING"[..]);
        assert_eq!(d.decode(&mut buf, &limits()), Ok(None));
        assert_eq!(d.state, State::Inline { searched: 4 });
        buf.extend_from_slice(b" a\r\n");
        let args = d.decode(&mut buf, &limits()).unwrap().unwrap();
        assert_eq!(args.len(), 2);
        assert!(!d.in_request());
    }

    mod properties {
        use super::*;
        use crate::resp::frame::{Proto, Reply};
        use proptest::prelude::*;

        /// Every outcome of decoding `input` delivered in pieces cut at `cuts`:
        /// the requests, then the error that ended them, if any.
        fn outcomes(input: &[u8], cuts: &[usize]) -> (Vec<Vec<Bytes>>, Option<Error>) {
            outcomes_within(input, cuts, &limits())
        }

        fn outcomes_within(
            input: &[u8],
            cuts: &[usize],
            limits: &RequestLimits,
        ) -> (Vec<Vec<Bytes>>, Option<Error>) {
            let mut d = Decoder::new();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut from = 0;
            let mut ends: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            ends.sort_unstable();
            ends.push(input.len());
            for end in ends {
                buf.extend_from_slice(&input[from..end.max(from)]);
                from = end.max(from);
                loop {
                    match d.decode(&mut buf, limits) {
                        Ok(Some(args)) => got.push(args),
                        Ok(None) => break,
                        Err(e) => return (got, Some(e)),
                    }
                }
            }
            (got, None)
        }

        fn encode(requests: &[Vec<Vec<u8>>]) -> Vec<u8> {
            let mut buf = BytesMut::new();
            let mut reply = Reply::new(&mut buf, Proto::Resp2);
            for args in requests {
                reply.array(args.len());
                for a in args {
                    reply.bulk(a);
                }
            }
            buf.to_vec()
        }

        /// An inline line quoting every argument, escaping what needs it.
        fn encode_inline(args: &[Vec<u8>]) -> Vec<u8> {
            let mut line = Vec::new();
            for a in args {
                line.extend_from_slice(b" \"");
                for &b in a {
                    match b {
                        b'"' | b'\\' => line.extend_from_slice(&[b'\\', b]),
                        0x20..=0x7e => line.push(b),
                        _ => line.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                    }
                }
                line.push(b'"');
            }
            line.extend_from_slice(b"\r\n");
            line
        }

        fn bytes_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 1..8)
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_at_arbitrary_splits_decode_as_they_do_whole(
                input in prop::collection::vec(
                    prop_oneof![
                        4 => prop::sample::select(b"*$:+-\r\n0123456789 \"'ab".to_vec()),
                        1 => any::<u8>(),
                    ],
                    0..256,
                ),
                cuts in prop::collection::vec(any::<usize>(), 0..12),
            ) {
                prop_assert_eq!(outcomes(&input, &cuts), outcomes(&input, &[]));
            }

            #[test]
            fn encoded_requests_decode_to_themselves_at_any_split(
                requests in prop::collection::vec(bytes_args(), 1..4),
                cuts in prop::collection::vec(any::<usize>(), 0..12),
            ) {
                let wire = encode(&requests);
                let (got, err) = outcomes(&wire, &cuts);
                prop_assert_eq!(err, None);
                let got: Vec<Vec<Vec<u8>>> = got
                    .iter()
                    .map(|r| r.iter().map(|a| a.to_vec()).collect())
                    .collect();
                prop_assert_eq!(got, requests);
            }

            #[test]
            fn quoted_inline_lines_decode_to_their_arguments(args in bytes_args()) {
                let line = encode_inline(&args);
                let (got, err) = outcomes_within(&line, &[], &RequestLimits::default());
                prop_assert_eq!(err, None);
                let got: Vec<Vec<u8>> = got[0].iter().map(|a| a.to_vec()).collect();
                prop_assert_eq!(got, args);
            }
        }
    }
}
