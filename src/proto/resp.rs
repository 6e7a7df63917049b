//! RESP3, the Redis wire protocol, as far as the shared engine needs it:
//! commands out (arrays of bulk strings) and every reply type in, including
//! out-of-band pushes (pub/sub messages). Sans-IO: bytes in, values out.

/// A reply or push from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+OK`, or any simple string.
    Simple(Vec<u8>),
    /// `-ERR …` and `!<len>` blob errors.
    Error(String),
    /// `:<n>`.
    Int(i64),
    /// `$<len>` bulk and `=<len>` verbatim strings.
    Bulk(Vec<u8>),
    /// `_`, and RESP2's `$-1` / `*-1`.
    Null,
    /// `#t` / `#f`.
    Bool(bool),
    /// `,<double>` and `(<big number>` as their text.
    Number(String),
    /// `*` arrays and `~` sets.
    Array(Vec<Value>),
    /// `%` maps, as key/value pairs.
    Map(Vec<(Value, Value)>),
    /// `>` out-of-band data (pub/sub).
    Push(Vec<Value>),
}

impl Value {
    /// The bytes of a string-like value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// An integer, or a string holding one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Simple(b) | Value::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
}

/// The server sent something that is not RESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespError(pub &'static str);

impl std::fmt::Display for RespError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed RESP: {}", self.0)
    }
}

/// Deepest nesting accepted.
const MAX_DEPTH: usize = 16;
/// Largest single string or aggregate length accepted.
const MAX_LEN: usize = 512 * 1024 * 1024;

/// Appends one command (an array of bulk strings).
pub fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    push_header(out, b'*', args.len());
    for arg in args {
        let arg = arg.as_ref();
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Parses one value from the front of `buf`: `Ok(None)` when more bytes are
/// needed, else the value and the bytes it used.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, RespError> {
    let mut pos = 0;
    match value(buf, &mut pos, 0)? {
        Some(v) => Ok(Some((v, pos))),
        None => Ok(None),
    }
}

fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, RespError> {
    let rest = &buf[*pos..];
    let Some(cr) = rest.iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    match rest.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => {
            *pos += cr + 2;
            Ok(Some(&rest[..cr]))
        }
        Some(_) => Err(RespError("CR without LF")),
    }
}

fn number(text: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError("bad number"))
}

fn length(text: &[u8]) -> Result<Option<usize>, RespError> {
    let n = number(text)?;
    if n == -1 {
        return Ok(None);
    }
    if n < 0 || n as u64 > MAX_LEN as u64 {
        return Err(RespError("bad length"));
    }
    Ok(Some(n as usize))
}

fn blob(buf: &[u8], pos: &mut usize, len: usize) -> Option<Vec<u8>> {
    let end = pos.checked_add(len)?.checked_add(2)?;
    if buf.len() < end {
        return None;
    }
    let data = buf[*pos..*pos + len].to_vec();
    *pos = end;
    Some(data)
}

// Long by design: one match arm per RESP3 type marker.
fn value(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Option<Value>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError("nested too deep"));
    }
    let Some(&kind) = buf.get(*pos) else {
        return Ok(None);
    };
    let start = *pos;
    *pos += 1;
    let Some(head) = line(buf, pos)? else {
        *pos = start;
        return Ok(None);
    };
    let v = match kind {
        b'+' => Value::Simple(head.to_vec()),
        b'-' => Value::Error(String::from_utf8_lossy(head).into_owned()),
        b':' => Value::Int(number(head)?),
        b'_' => Value::Null,
        b'#' => Value::Bool(head == b"t"),
        b',' | b'(' => Value::Number(String::from_utf8_lossy(head).into_owned()),
        b'$' | b'=' | b'!' => match length(head)? {
            None => Value::Null,
            Some(len) => {
                let Some(mut data) = blob(buf, pos, len) else {
                    *pos = start;
                    return Ok(None);
                };
                if kind == b'=' && data.len() >= 4 {
                    data.drain(..4); // "txt:" format prefix
                }
                if kind == b'!' {
                    Value::Error(String::from_utf8_lossy(&data).into_owned())
                } else {
                    Value::Bulk(data)
                }
            }
        },
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let Some(n) = length(head)? else {
                return Ok(Some(Value::Null));
            };
            let items = if matches!(kind, b'%' | b'|') {
                n * 2
            } else {
                n
            };
            let mut list = Vec::with_capacity(items.min(1024));
            for _ in 0..items {
                match value(buf, pos, depth + 1)? {
                    Some(v) => list.push(v),
                    None => {
                        *pos = start;
                        return Ok(None);
                    }
                }
            }
            match kind {
                b'>' => Value::Push(list),
                b'%' => Value::Map(pairs(list)),
                b'|' => {
                    // Attributes annotate the value that follows: skip them.
                    return value(buf, pos, depth + 1).inspect(|v| {
                        if v.is_none() {
                            *pos = start;
                        }
                    });
                }
                _ => Value::Array(list),
            }
        }
        _ => return Err(RespError("unknown type byte")),
    };
    Ok(Some(v))
}

fn pairs(list: Vec<Value>) -> Vec<(Value, Value)> {
    let mut it = list.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Value {
        let (v, n) = parse(bytes).unwrap().expect("complete");
        assert_eq!(n, bytes.len());
        v
    }

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        let mut out = Vec::new();
        encode_command(&mut out, &["SET", "k", ""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn parses_every_type() {
        assert_eq!(all(b"+OK\r\n"), Value::Simple(b"OK".to_vec()));
        assert_eq!(all(b"-ERR no\r\n"), Value::Error("ERR no".into()));
        assert_eq!(all(b":-42\r\n"), Value::Int(-42));
        assert_eq!(all(b"$5\r\nhe\r\no\r\n"), Value::Bulk(b"he\r\no".to_vec()));
        assert_eq!(all(b"$-1\r\n"), Value::Null);
        assert_eq!(all(b"*-1\r\n"), Value::Null);
        assert_eq!(all(b"_\r\n"), Value::Null);
        assert_eq!(all(b"#t\r\n"), Value::Bool(true));
        assert_eq!(all(b",1.5\r\n"), Value::Number("1.5".into()));
        assert_eq!(all(b"=7\r\ntxt:abc\r\n"), Value::Bulk(b"abc".to_vec()));
        assert_eq!(all(b"!3\r\nbad\r\n"), Value::Error("bad".into()));
        assert_eq!(
            all(b"*2\r\n:1\r\n*1\r\n+x\r\n"),
            Value::Array(vec![
                Value::Int(1),
                Value::Array(vec![Value::Simple(b"x".to_vec())])
            ])
        );
        assert_eq!(
            all(b"%1\r\n+k\r\n:2\r\n"),
            Value::Map(vec![(Value::Simple(b"k".to_vec()), Value::Int(2))])
        );
        assert_eq!(
            all(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n"),
            Value::Push(vec![
                Value::Bulk(b"message".to_vec()),
                Value::Bulk(b"c".to_vec()),
                Value::Bulk(b"hi".to_vec())
            ])
        );
        assert_eq!(all(b"|1\r\n+a\r\n+b\r\n:7\r\n"), Value::Int(7));
    }

    #[test]
    fn every_split_point_waits_for_more() {
        let whole = b"*3\r\n$3\r\nabc\r\n:12\r\n>2\r\n+p\r\n_\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (_, n) = parse(whole).unwrap().unwrap();
        assert_eq!(n, whole.len());
    }

    #[test]
    fn two_values_in_one_buffer() {
        let buf = b":1\r\n:2\r\n";
        let (v, n) = parse(buf).unwrap().unwrap();
        assert_eq!((v, n), (Value::Int(1), 4));
        assert_eq!(parse(&buf[n..]).unwrap().unwrap().0, Value::Int(2));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b":x\r\n").is_err());
        assert!(parse(b"$-2\r\n").is_err());
        assert!(parse(b"+a\rb").is_err());
        let deep = "*1\r\n".repeat(40);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
