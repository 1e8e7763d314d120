//! Replies: [`Reply`] appends RESP to the connection's output buffer in the
//! protocol version the connection negotiated; a RESP3 map, set, push, double,
//! boolean or null is written in its RESP2 form (flat array, array, bulk string,
//! integer, null bulk) to a RESP2 client. Error and simple-string text never
//! carries CR or LF, which would end the frame early.

use bytes::{BufMut, BytesMut};

use super::Proto;

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
}

fn sanitize(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\r', '\n']) {
        std::borrow::Cow::Owned(text.replace(['\r', '\n'], " "))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Write = dyn Fn(&mut Reply<'_>);

    fn both(write: impl Fn(&mut Reply<'_>)) -> (String, String) {
        let mut out = Vec::new();
        for proto in [Proto::Resp2, Proto::Resp3] {
            let mut buf = BytesMut::new();
            write(&mut Reply::new(&mut buf, proto));
            out.push(String::from_utf8_lossy(&buf).into_owned());
        }
        (out.remove(0), out.remove(0))
    }

    #[test]
    fn every_reply_type_encodes_in_both_versions() {
        let table: Vec<(Box<Write>, &str, &str)> = vec![
            (Box::new(|r| r.simple("OK")), "+OK\r\n", "+OK\r\n"),
            (
                Box::new(|r| r.error("ERR a\r\nb")),
                "-ERR a  b\r\n",
                "-ERR a  b\r\n",
            ),
            (Box::new(|r| r.integer(-3)), ":-3\r\n", ":-3\r\n"),
            (Box::new(|r| r.bulk(b"hi")), "$2\r\nhi\r\n", "$2\r\nhi\r\n"),
            (Box::new(|r| r.null()), "$-1\r\n", "_\r\n"),
            (
                Box::new(|r| {
                    r.map(1);
                    r.bulk(b"proto");
                    r.integer(3);
                }),
                "*2\r\n$5\r\nproto\r\n:3\r\n",
                "%1\r\n$5\r\nproto\r\n:3\r\n",
            ),
            (
                Box::new(|r| {
                    r.push(1);
                    r.bulk(b"m");
                }),
                "*1\r\n$1\r\nm\r\n",
                ">1\r\n$1\r\nm\r\n",
            ),
            (Box::new(|r| r.set(0)), "*0\r\n", "~0\r\n"),
            (Box::new(|r| r.double(1.5)), "$3\r\n1.5\r\n", ",1.5\r\n"),
            (
                Box::new(|r| r.double(f64::NEG_INFINITY)),
                "$4\r\n-inf\r\n",
                ",-inf\r\n",
            ),
            (Box::new(|r| r.boolean(true)), ":1\r\n", "#t\r\n"),
            (Box::new(|r| r.big_number(b"12")), "$2\r\n12\r\n", "(12\r\n"),
            (
                Box::new(|r| r.bulk_error(b"ERR x")),
                "-ERR x\r\n",
                "!5\r\nERR x\r\n",
            ),
            (
                Box::new(|r| r.verbatim(*b"txt", b"hi")),
                "$2\r\nhi\r\n",
                "=6\r\ntxt:hi\r\n",
            ),
        ];
        for (write, resp2, resp3) in table {
            assert_eq!(both(write), (resp2.to_owned(), resp3.to_owned()));
        }
    }
}
