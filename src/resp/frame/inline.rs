//! Inline commands: one text line, split on blanks, with Redis's quoting rules
//! (`"..."` with C-like escapes, `'...'` with `\'` only). Unquoted arguments are
//! slices of the line; quoted ones are unescaped into their own bytes.

use bytes::Bytes;

use super::Error;

/// The arguments of one inline command line (its trailing CRLF or LF included),
/// split like Redis does:
/// blanks separate arguments; `"..."` understands `\n \r \t \b \a \\ \" \xHH`;
/// `'...'` understands `\'`; a closing quote must be followed by a blank.
pub fn split(frame: &Bytes) -> Result<Vec<Bytes>, Error> {
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
                args.push(frame.slice(start..i));
                continue;
            }
        }
        args.push(Bytes::from(arg));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Vec<String>, Error> {
        split(&Bytes::copy_from_slice(line.as_bytes())).map(|a| {
            a.iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect()
        })
    }

    #[test]
    fn lines_split_on_blanks_and_quotes_like_redis() {
        assert_eq!(args("PING\r\n").unwrap(), ["PING"]);
        assert_eq!(args("PING\n").unwrap(), ["PING"]);
        assert_eq!(
            args("publish  ch \"a b\\n\\x41\"\r\n").unwrap(),
            ["publish", "ch", "a b\nA"]
        );
        assert_eq!(args("echo 'it\\'s'\r\n").unwrap(), ["echo", "it's"]);
        assert!(args("\r\n").unwrap().is_empty());
        assert_eq!(args("echo \"abc\r\n"), Err(Error::UnbalancedQuotes));
        assert_eq!(args("echo 'abc\r\n"), Err(Error::UnbalancedQuotes));
        assert_eq!(args("echo \"a\"b\r\n"), Err(Error::UnbalancedQuotes));
    }
}
