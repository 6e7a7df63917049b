//! `Sec-WebSocket-Extensions` (RFC 6455 §9.1) and the permessage-deflate
//! negotiation (RFC 7692 §5–7): which of a client's offers the server
//! accepts, and the response line.
//!
//! The gateway always answers `server_no_context_takeover;
//! client_no_context_takeover` (DESIGN §13): every message is compressed
//! and decompressed on its own, so one compressor and one decompressor per
//! core serve every connection and an idle connection holds no deflate
//! state. Both parameters may be sent whether or not the offer had them
//! (§7.1.1.1, §7.1.1.2). Offers the server cannot accept are declined, never
//! failed: RFC 7692 lets only the client fail the handshake.
//!
//! Built with or without the `compression` feature (the fuzz target and the
//! lean build parse offers too; only a build with the feature accepts one).

/// The extension's registered name (RFC 7692 §7).
pub const PERMESSAGE_DEFLATE: &[u8] = b"permessage-deflate";

/// An accepted permessage-deflate offer: what it fixes for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The offer's `server_max_window_bits` (8–15), echoed in the response
    /// (§7.1.2.1: a server that accepts it MUST answer with the same or a
    /// smaller value); `None` when the offer had none (the response then
    /// MUST NOT have it), which allows the full 32 KiB window.
    pub server_max_window_bits: Option<u8>,
}

impl Deflate {
    /// The largest LZ77 window (log2 of its size) the server's compressed
    /// messages may use.
    pub fn window_bits(self) -> u8 {
        self.server_max_window_bits.unwrap_or(15)
    }

    /// The agreement in one byte, for a connection's record: 0 for none,
    /// 16 for no `server_max_window_bits`, else its value.
    pub fn pack(agreed: Option<Deflate>) -> u8 {
        match agreed {
            None => 0,
            Some(d) => d.server_max_window_bits.unwrap_or(16),
        }
    }

    /// The agreement [`Deflate::pack`] packed.
    pub fn unpack(packed: u8) -> Option<Deflate> {
        match packed {
            8..=15 => Some(Deflate {
                server_max_window_bits: Some(packed),
            }),
            16 => Some(Deflate {
                server_max_window_bits: None,
            }),
            _ => None,
        }
    }

    /// Appends the response's header line (with its CRLF).
    pub fn write_response(self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if let Some(bits) = self.server_max_window_bits {
            out.extend_from_slice(b"; server_max_window_bits=");
            if bits >= 10 {
                out.push(b'1');
            }
            out.push(b'0' + bits % 10);
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Why an offer of permessage-deflate was declined (for tests and the
/// fuzz target; the handshake only needs the accepted one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declined {
    /// Not valid `Sec-WebSocket-Extensions` syntax (§9.1 of RFC 6455).
    Malformed,
    /// A parameter RFC 7692 does not define for an offer (§7: decline).
    UnknownParameter,
    /// A parameter given twice (§7: decline).
    RepeatedParameter,
    /// A value that parameter must not have, or lacks one it needs, or one
    /// out of 8–15 (§7.1.1, §7.1.2: decline).
    InvalidValue,
}

/// The permessage-deflate offer the server accepts among the values of the
/// request's `Sec-WebSocket-Extensions` fields, in order: the first one it
/// can honour (§5.1: the client lists them in order of preference). Other
/// extensions are ignored. A build without the `compression` feature
/// accepts none.
pub fn negotiate<'a>(fields: impl IntoIterator<Item = &'a [u8]>) -> Option<Deflate> {
    if !cfg!(feature = "compression") {
        return None;
    }
    fields
        .into_iter()
        .flat_map(elements)
        .filter_map(|e| parse_offer(e).ok().flatten())
        .next()
}

/// Every permessage-deflate offer in one field value, as a build with the
/// `compression` feature judges it: accepted, or declined (`Err`);
/// elements naming other extensions are skipped.
pub fn offers(field: &[u8]) -> impl Iterator<Item = Result<Deflate, Declined>> + '_ {
    elements(field).filter_map(|e| parse_offer(e).transpose())
}

/// Splits a field value into its list elements (`1#extension`) at commas
/// outside quoted strings; empty elements (`a,,b`) are dropped, as RFC 9110
/// §5.6.1 lets a recipient do.
fn elements(field: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(field);
    std::iter::from_fn(move || loop {
        let s = rest?;
        let end = find_unquoted(s, b',');
        let (element, next) = match end {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        rest = next;
        let element = element.trim_ascii();
        if !element.is_empty() {
            return Some(element);
        }
    })
}

/// The first `sep` outside a quoted string. An unterminated quote runs to
/// the end (the element is then malformed).
fn find_unquoted(s: &[u8], sep: u8) -> Option<usize> {
    let mut quoted = false;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b if b == sep && !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// One list element: `Ok(None)` for another extension, `Ok(Some)` for a
/// permessage-deflate offer the server accepts, `Err` for one it declines.
fn parse_offer(element: &[u8]) -> Result<Option<Deflate>, Declined> {
    let mut parts = Parts(Some(element));
    let name = parts.next().unwrap_or_default().trim_ascii();
    if !is_token(name) {
        return Err(Declined::Malformed);
    }
    if !name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
        return Ok(None);
    }
    let mut seen = [false; 4];
    let mut server_bits = None;
    for param in parts {
        let (key, value) = parse_param(param)?;
        let index = PARAMS
            .iter()
            .position(|p| key.eq_ignore_ascii_case(p.as_bytes()))
            .ok_or(Declined::UnknownParameter)?;
        if std::mem::replace(&mut seen[index], true) {
            return Err(Declined::RepeatedParameter);
        }
        match (PARAMS[index], value) {
            // §7.1.1.1, §7.1.1.2: these have no value.
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            // §7.1.2.1: the value is required.
            ("server_max_window_bits", Some(v)) => server_bits = Some(window_bits(&v)?),
            // §7.1.2.2: the value is optional.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(&v)?;
            }
            _ => return Err(Declined::InvalidValue),
        }
    }
    Ok(Some(Deflate {
        server_max_window_bits: server_bits,
    }))
}

/// The parameters RFC 7692 defines for an offer.
const PARAMS: [&str; 4] = [
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
];

/// An element's `;`-separated parts (outside quoted strings).
struct Parts<'a>(Option<&'a [u8]>);

impl<'a> Iterator for Parts<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let s = self.0?;
        match find_unquoted(s, b';') {
            Some(i) => {
                self.0 = Some(&s[i + 1..]);
                Some(&s[..i])
            }
            None => {
                self.0 = None;
                Some(s)
            }
        }
    }
}

/// `token [ "=" ( token / quoted-string ) ]`, whitespace around `=`
/// allowed. A quoted value is unescaped (RFC 6455 §9.1: it must then be a
/// token too).
fn parse_param(param: &[u8]) -> Result<(&[u8], Option<Vec<u8>>), Declined> {
    let param = param.trim_ascii();
    let (key, value) = match param.iter().position(|&b| b == b'=') {
        Some(i) => (param[..i].trim_ascii(), Some(param[i + 1..].trim_ascii())),
        None => (param, None),
    };
    if !is_token(key) {
        return Err(Declined::Malformed);
    }
    let Some(value) = value else {
        return Ok((key, None));
    };
    let value = match value {
        [b'"', inner @ .., b'"'] => unquote(inner)?,
        _ if is_token(value) => value.to_vec(),
        _ => return Err(Declined::Malformed),
    };
    if !is_token(&value) {
        return Err(Declined::InvalidValue);
    }
    Ok((key, Some(value)))
}

/// The content of a quoted string (without its quotes): `\x` stands for `x`.
fn unquote(inner: &[u8]) -> Result<Vec<u8>, Declined> {
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => out.push(*bytes.next().ok_or(Declined::Malformed)?),
            b'"' => return Err(Declined::Malformed),
            b => out.push(b),
        }
    }
    Ok(out)
}

/// A window size parameter's value: `8`–`15` in decimal, no leading zero
/// (§7.1.2.1: `%x38-39 / %x31 %x30-35`).
fn window_bits(value: &[u8]) -> Result<u8, Declined> {
    match value {
        [d @ b'8'..=b'9'] => Ok(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Ok(10 + d - b'0'),
        _ => Err(Declined::InvalidValue),
    }
}

/// RFC 9110 §5.6.2 `token`: one or more `tchar`.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deflate(bits: Option<u8>) -> Option<Deflate> {
        Some(Deflate {
            server_max_window_bits: bits,
        })
    }

    fn all(field: &str) -> Vec<Result<Deflate, Declined>> {
        offers(field.as_bytes()).collect()
    }

    #[test]
    fn accepted_offers() {
        let cases: [(&str, Option<u8>); 9] = [
            ("permessage-deflate", None),
            // What browsers send.
            ("permessage-deflate; client_max_window_bits", None),
            ("permessage-deflate; client_max_window_bits=10", None),
            ("permessage-deflate; server_max_window_bits=9", Some(9)),
            ("permessage-deflate; server_max_window_bits=8", Some(8)),
            ("permessage-deflate;server_max_window_bits=\"15\"", Some(15)),
            (
                "Permessage-Deflate ; server_no_context_takeover ; client_no_context_takeover",
                None,
            ),
            (
                "permessage-deflate; client_no_context_takeover; server_max_window_bits = 12",
                Some(12),
            ),
            ("permessage-deflate; client_max_window_bits=\"1\\0\"", None),
        ];
        for (field, bits) in cases {
            assert_eq!(all(field), vec![Ok(deflate(bits).unwrap())], "{field}");
            let agreed = deflate(bits).filter(|_| cfg!(feature = "compression"));
            assert_eq!(negotiate([field.as_bytes()]), agreed, "{field}");
        }
    }

    #[test]
    fn declined_offers() {
        use Declined::*;
        let cases = [
            ("permessage-deflate; foo", UnknownParameter),
            ("permessage-deflate; server_max_window_bits", InvalidValue),
            ("permessage-deflate; server_max_window_bits=7", InvalidValue),
            (
                "permessage-deflate; server_max_window_bits=16",
                InvalidValue,
            ),
            (
                "permessage-deflate; server_max_window_bits=010",
                InvalidValue,
            ),
            (
                "permessage-deflate; client_max_window_bits=abc",
                InvalidValue,
            ),
            (
                "permessage-deflate; server_no_context_takeover=1",
                InvalidValue,
            ),
            (
                "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
                RepeatedParameter,
            ),
            (
                "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11",
                RepeatedParameter,
            ),
            ("permessage-deflate; =1", Malformed),
            ("permessage-deflate; a b", Malformed),
            ("permessage-deflate; x=\"unterminated", Malformed),
            ("permessage-deflate; x=\"a\"b\"", Malformed),
            ("permessage-deflate; x=a=b", Malformed),
        ];
        for (field, why) in cases {
            assert_eq!(all(field), vec![Err(why)], "{field}");
            assert_eq!(negotiate([field.as_bytes()]), None, "{field}");
        }
    }

    #[test]
    fn the_first_acceptable_offer_wins_across_fields() {
        let fields: [&[u8]; 2] = [
            b"x-webkit-deflate-frame, permessage-deflate; bogus",
            b"permessage-deflate; server_max_window_bits=10, permessage-deflate",
        ];
        let agreed = deflate(Some(10)).filter(|_| cfg!(feature = "compression"));
        assert_eq!(negotiate(fields), agreed);
        assert_eq!(negotiate([&b"x-webkit-deflate-frame"[..]]), None);
        assert_eq!(negotiate([&b""[..], b" , ,"]), None);
        // A comma inside a quoted value does not split the element.
        assert_eq!(
            all("permessage-deflate; x=\"a,b\", permessage-deflate"),
            vec![Err(Declined::InvalidValue), Ok(Deflate::default_offer())]
        );
    }

    impl Deflate {
        fn default_offer() -> Deflate {
            Deflate {
                server_max_window_bits: None,
            }
        }
    }

    #[test]
    fn response_lines_are_byte_exact() {
        let mut out = Vec::new();
        Deflate::default_offer().write_response(&mut out);
        assert_eq!(
            out,
            b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        );
        for (bits, tail) in [(8, "=8"), (9, "=9"), (10, "=10"), (15, "=15")] {
            let mut out = Vec::new();
            let d = Deflate {
                server_max_window_bits: Some(bits),
            };
            d.write_response(&mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.ends_with(&format!("; server_max_window_bits{tail}\r\n")),
                "{text}"
            );
            assert_eq!(d.window_bits(), bits);
        }
        assert_eq!(Deflate::default_offer().window_bits(), 15);
    }

    #[test]
    fn agreements_pack_into_a_byte() {
        assert_eq!(Deflate::pack(None), 0);
        assert_eq!(Deflate::unpack(0), None);
        for bits in [None, Some(8), Some(9), Some(15)] {
            let d = deflate(bits);
            assert_ne!(Deflate::pack(d), 0);
            assert_eq!(Deflate::unpack(Deflate::pack(d)), d);
        }
    }
}
