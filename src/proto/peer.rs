//! The peer id: what other clients see of a session (DESIGN §6). The
//! session id is a bearer secret (whoever presents it resumes the session),
//! so presence lines, `who` answers and logs name a session by a second
//! random id instead: 16 lowercase hex digits from the kernel's CSPRNG,
//! minted with the session, kept across resumes (so presence does not
//! flicker), and not derivable from the session id.

use std::fmt;
use std::sync::Arc;

use crate::sys::entropy;

/// A session's public name.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(u64);

impl PeerId {
    /// A fresh random peer id.
    pub fn random() -> PeerId {
        let mut bytes = [0u8; 8];
        entropy::fill(&mut bytes);
        PeerId(u64::from_le_bytes(bytes))
    }

    /// Parses exactly 16 lowercase hex digits.
    pub fn parse(s: &[u8]) -> Option<PeerId> {
        if s.len() != 16 || !s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let text = std::str::from_utf8(s).ok()?;
        u64::from_str_radix(text, 16).ok().map(PeerId)
    }

    /// The 16-digit lowercase hex text.
    pub fn to_text(self) -> [u8; 16] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = HEX[((self.0 >> (60 - 4 * i)) & 0xF) as usize];
        }
        out
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_text();
        // ASCII by construction.
        f.write_str(std::str::from_utf8(&text).unwrap_or("?"))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How a session appears in presence: its peer id and, with authentication
/// on, its user (DESIGN §11: `join <topic> <peer> <user>`,
/// `members <topic> <n> <peer>:<user>...`). The user is shared with the
/// session (`Arc`), not copied per topic.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Member {
    /// The session's peer id.
    pub peer: PeerId,
    /// The session's user, when authentication is on.
    pub user: Option<Arc<str>>,
}

impl Member {
    /// A member named by `peer` (and `user`).
    pub fn new(peer: PeerId, user: Option<Arc<str>>) -> Member {
        Member { peer, user }
    }

    /// Appends `<peer>` or `<peer>:<user>` (the `members` form, and the form
    /// kept in the shared engine).
    pub fn write_text(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.peer.to_text());
        if let Some(user) = &self.user {
            out.push(b':');
            out.extend_from_slice(user.as_bytes());
        }
    }

    /// The `<peer>` / `<peer>:<user>` text.
    pub fn to_text(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + self.user.as_ref().map_or(0, |u| u.len()));
        self.write_text(&mut out);
        out
    }

    /// Parses [`Member::write_text`]'s form; `valid_user` checks the user part.
    pub fn parse(text: &[u8], valid_user: impl Fn(&[u8]) -> bool) -> Option<Member> {
        let peer = PeerId::parse(text.get(..16)?)?;
        let user = match text.get(16..) {
            Some([]) | None => None,
            Some([b':', user @ ..]) if valid_user(user) => {
                Some(std::str::from_utf8(user).ok()?.into())
            }
            Some(_) => return None,
        };
        Some(Member { peer, user })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_lowercase_hex_digits_round_trip() {
        for _ in 0..100 {
            let p = PeerId::random();
            let text = p.to_text();
            assert!(text
                .iter()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert_eq!(PeerId::parse(&text), Some(p));
            assert_eq!(p.to_string().as_bytes(), &text);
        }
        assert_eq!(PeerId(0xab).to_string(), "00000000000000ab");
    }

    #[test]
    fn anything_else_is_not_a_peer_id() {
        for bad in [
            &b"00000000000000AB"[..],
            b"0000000000000ab",
            b"00000000000000abc",
            b"000000000000 0ab",
            b"+000000000000000",
            b"",
        ] {
            assert_eq!(
                PeerId::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn members_round_trip() {
        let ok = |u: &[u8]| !u.is_empty() && !u.contains(&b' ');
        let bare = Member::new(PeerId(0xab), None);
        assert_eq!(bare.to_text(), b"00000000000000ab");
        assert_eq!(Member::parse(&bare.to_text(), ok), Some(bare));
        let named = Member::new(PeerId(0xcd), Some("alice@example.com".into()));
        assert_eq!(named.to_text(), b"00000000000000cd:alice@example.com");
        assert_eq!(Member::parse(&named.to_text(), ok), Some(named));
        for bad in [
            &b"00000000000000cd:"[..],
            b"00000000000000cdx",
            b"00000000000000cd:a b",
        ] {
            assert_eq!(Member::parse(bad, ok), None);
        }
    }
}
