//! The sticky session cookie (DESIGN §4): the id format, finding it in a
//! request, and the `Set-Cookie` line of the 101.

use std::fmt;

use crate::sys::entropy;

/// A session id: a random UUID v4. It routes the client (the balancer's
/// stickiness keys on it) and is the resume credential, so it is never
/// derived from anything guessable.
///
/// Kept as two words rather than a `u128`: a `u128` is 16-byte aligned,
/// which pads every table entry that holds an id (the sessions, the
/// connection tokens, a topic's members) by 8 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionId([u64; 2]);

impl std::hash::Hash for SessionId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(self.value());
    }
}

impl SessionId {
    fn new(value: u128) -> SessionId {
        SessionId([(value >> 64) as u64, value as u64])
    }

    fn value(self) -> u128 {
        (u128::from(self.0[0]) << 64) | u128::from(self.0[1])
    }

    /// A fresh random id (from the kernel's CSPRNG, drawn a page at a time).
    pub fn random() -> SessionId {
        let mut bytes = [0u8; 16];
        entropy::fill(&mut bytes);
        SessionId::new(
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .as_u128(),
        )
    }

    /// A fresh random id whose owner (see [`SessionId::owner`]) is `core`, so a
    /// new session starts on the core that accepted it.
    pub fn random_owned_by(core: usize, cores: usize) -> SessionId {
        loop {
            let id = SessionId::random();
            if id.owner(cores) == core % cores.max(1) {
                return id;
            }
        }
    }

    /// Parses the canonical hyphenated form of a UUID v4 (either case).
    /// Anything else, including other UUID versions, is rejected.
    pub fn parse(s: &[u8]) -> Option<SessionId> {
        if s.len() != 36 {
            return None;
        }
        let mut value: u128 = 0;
        for (i, &c) in s.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return None;
                }
                continue;
            }
            let nibble = (c as char).to_digit(16)?;
            value = value << 4 | nibble as u128;
        }
        // Version nibble 4 and RFC 4122 variant bits 10xx.
        let version = (value >> 76) & 0xF;
        let variant = (value >> 62) & 0x3;
        (version == 4 && variant == 0b10).then_some(SessionId::new(value))
    }

    /// The canonical lowercase hyphenated text.
    pub fn to_text(self) -> [u8; 36] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 36];
        let mut nibble = 32;
        for (i, slot) in out.iter_mut().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                continue;
            }
            nibble -= 1;
            *slot = HEX[((self.value() >> (nibble * 4)) & 0xF) as usize];
        }
        out
    }

    /// The core that owns this session: a deterministic spread of the id's
    /// random bits, so every core computes the same owner.
    pub fn owner(self, cores: usize) -> usize {
        (self.value() % cores.max(1) as u128) as usize
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_text();
        // The text is ASCII by construction.
        f.write_str(std::str::from_utf8(&text).unwrap_or("?"))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Finds the first syntactically valid session id named `name` in the
/// request's `Cookie` header values (RFC 6265 §5.4: `a=1; b=2`).
pub fn find_session<'a>(
    cookie_headers: impl IntoIterator<Item = &'a [u8]>,
    name: &str,
) -> Option<SessionId> {
    for header in cookie_headers {
        for pair in header.split(|&b| b == b';') {
            let pair = trim(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if &pair[..eq] != name.as_bytes() {
                continue;
            }
            let mut value = trim(&pair[eq + 1..]);
            if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
                value = &value[1..value.len() - 1];
            }
            if let Some(id) = SessionId::parse(value) {
                return Some(id);
            }
        }
    }
    None
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// Whether `name` is a valid cookie name (an RFC 7230 token).
pub fn is_valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The attributes of the `Set-Cookie` line, fixed at start.
#[derive(Debug, Clone)]
pub struct CookieSpec {
    /// Everything before the id: `Set-Cookie: NAME=`.
    prefix: Vec<u8>,
    /// Everything after the id, through the line's CRLF.
    suffix: Vec<u8>,
}

impl CookieSpec {
    /// `Set-Cookie: <name>=<id>; Path=/; Max-Age=<n>[; SameSite=None; Secure]; HttpOnly`.
    /// The order is fixed; `secure = false` drops `SameSite=None` too, since
    /// browsers refuse `SameSite=None` without `Secure`.
    pub fn new(name: &str, max_age_secs: u64, secure: bool) -> CookieSpec {
        let prefix = format!("Set-Cookie: {name}=").into_bytes();
        let mut suffix = format!("; Path=/; Max-Age={max_age_secs}");
        if secure {
            suffix.push_str("; SameSite=None; Secure");
        }
        suffix.push_str("; HttpOnly\r\n");
        CookieSpec {
            prefix,
            suffix: suffix.into_bytes(),
        }
    }

    /// Appends the full header line for `id`.
    pub fn write(&self, out: &mut Vec<u8>, id: SessionId) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&id.to_text());
        out.extend_from_slice(&self.suffix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_round_trip_and_are_v4() {
        for _ in 0..100 {
            let id = SessionId::random();
            let text = id.to_text();
            assert_eq!(text[14], b'4');
            assert!(matches!(text[19], b'8' | b'9' | b'a' | b'b'));
            assert_eq!(SessionId::parse(&text), Some(id));
        }
        assert_ne!(SessionId::random(), SessionId::random());
    }

    #[test]
    fn ids_across_pool_refills_are_distinct() {
        // 1,000 ids span four refills of the 4 KiB pool.
        let ids: std::collections::HashSet<SessionId> =
            (0..1000).map(|_| SessionId::random()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn parse_accepts_only_canonical_v4() {
        let good = b"0f8fad5b-d9cb-469f-a165-70867728950e";
        assert!(SessionId::parse(good).is_some());
        let upper = b"0F8FAD5B-D9CB-469F-A165-70867728950E";
        assert_eq!(SessionId::parse(upper), SessionId::parse(good));
        for bad in [
            &b"0f8fad5b-d9cb-169f-a165-70867728950e"[..], // version 1
            b"0f8fad5b-d9cb-469f-c165-70867728950e",      // wrong variant
            b"0f8fad5bd9cb469fa16570867728950e",          // simple form
            b"{0f8fad5b-d9cb-469f-a165-70867728950e}",
            b"0f8fad5b-d9cb-469f-a165-70867728950g",
            b"0f8fad5b-d9cb-469f-a165-70867728950e\r\nX: y",
            b"",
            b"not-a-uuid",
        ] {
            assert_eq!(
                SessionId::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn finds_the_cookie_among_others() {
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let header = format!("a=1; WS_SESSION_ID={id}; b=2");
        let found = find_session([header.as_bytes()], "WS_SESSION_ID").unwrap();
        assert_eq!(found.to_string(), id);
        let quoted = format!("WS_SESSION_ID=\"{id}\"");
        assert!(find_session([quoted.as_bytes()], "WS_SESSION_ID").is_some());
        // Name match is exact; a malformed first value does not hide a valid second one.
        let tricky = format!("ws_session_id={id}; WS_SESSION_ID=junk; WS_SESSION_ID={id}");
        assert_eq!(
            find_session([tricky.as_bytes()], "WS_SESSION_ID"),
            Some(found)
        );
        assert_eq!(
            find_session([&b"WS_SESSION_ID=junk"[..]], "WS_SESSION_ID"),
            None
        );
        assert_eq!(find_session([&b"WS_SESSION_ID"[..]], "WS_SESSION_ID"), None);
    }

    #[test]
    fn set_cookie_line_is_byte_exact() {
        let id = SessionId::parse(b"0f8fad5b-d9cb-469f-a165-70867728950e").unwrap();
        let mut out = Vec::new();
        CookieSpec::new("WS_SESSION_ID", 86400, true).write(&mut out, id);
        assert_eq!(
            out,
            b"Set-Cookie: WS_SESSION_ID=0f8fad5b-d9cb-469f-a165-70867728950e; Path=/; Max-Age=86400; SameSite=None; Secure; HttpOnly\r\n"
        );
        out.clear();
        CookieSpec::new("S", 60, false).write(&mut out, id);
        assert_eq!(
            out,
            b"Set-Cookie: S=0f8fad5b-d9cb-469f-a165-70867728950e; Path=/; Max-Age=60; HttpOnly\r\n"
        );
    }

    #[test]
    fn cookie_name_rules() {
        assert!(is_valid_cookie_name("WS_SESSION_ID"));
        for bad in ["", "a b", "a;b", "a=b", "é", "a\r\n"] {
            assert!(!is_valid_cookie_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn owner_is_deterministic_and_in_range() {
        let id = SessionId::random();
        for cores in 1..8 {
            assert!(id.owner(cores) < cores);
            assert_eq!(id.owner(cores), id.owner(cores));
        }
    }
}
