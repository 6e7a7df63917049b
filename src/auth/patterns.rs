//! Topic patterns: who may subscribe to (and ask `who` on) or publish to
//! which topic.
//!
//! A PATTERN is a topic, or a prefix ending in `*` (`*` alone: every
//! topic); `{user}` stands for the token's `sub`, anywhere before the `*`
//! (`user:{user}` is a user's private topic). Patterns are validated when
//! compiled, so bad `--allow-sub` / `--allow-pub` flags stop the start.
//!
//! Memory: the flags' patterns live once per process in a [`Policy`]
//! (share it as `Arc<Policy>`); a connection holds only its token's own
//! [`Grants`] as `Option<Box<Grants>>`, a single pointer that is null when
//! the token carries no `wsgate` claim. Matching expands `{user}` in place,
//! without allocating.

use std::fmt;

use crate::proto::command::is_valid_topic;

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 256;

const USER: &[u8] = b"{user}";

/// What a connection wants to do on a topic. `who` follows `sub`: no
/// pattern grants `who` on a topic its user may not subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Publish,
    Who,
}

/// A pattern that does not follow the syntax; names the pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    pub pattern: String,
    pub why: &'static str,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad topic pattern {:?}: {}", self.pattern, self.why)
    }
}

impl std::error::Error for PatternError {}

/// A compiled list of patterns. Empty allows nothing. 16 bytes, no heap
/// when empty.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Patterns {
    list: Box<[Box<str>]>,
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.list.iter()).finish()
    }
}

impl Patterns {
    /// Validates and compiles `patterns`; the first bad one is named in the
    /// error. Duplicates are kept once.
    pub fn compile<I, S>(patterns: I) -> Result<Patterns, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<Box<str>> = Vec::new();
        for p in patterns {
            let p = p.as_ref();
            check(p)?;
            if !list.iter().any(|q| &**q == p) {
                list.push(p.into());
            }
        }
        Ok(Patterns {
            list: list.into_boxed_slice(),
        })
    }

    /// `*`: every topic (the default with auth off).
    pub fn everything() -> Patterns {
        Patterns {
            list: vec![Box::from("*")].into_boxed_slice(),
        }
    }

    /// Whether one of the patterns, with `{user}` standing for `user`,
    /// matches `topic`.
    pub fn allows(&self, topic: &[u8], user: &str) -> bool {
        self.list
            .iter()
            .any(|p| matches(p.as_bytes(), topic, user.as_bytes()))
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// The patterns as written.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|p| &**p)
    }
}

/// A pair of pattern lists: for subscribing (and `who`) and for publishing.
/// The token's `wsgate` claim (and the auth hook's answer) become one of
/// these, kept per connection as `Option<Box<Grants>>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pub sub: Patterns,
    pub publish: Patterns,
}

impl Grants {
    /// Compiles both lists.
    pub fn compile<S: AsRef<str>>(sub: &[S], publish: &[S]) -> Result<Grants, PatternError> {
        Ok(Grants {
            sub: Patterns::compile(sub)?,
            publish: Patterns::compile(publish)?,
        })
    }

    /// Compiles both lists into what a connection keeps: `None` when both
    /// are empty (no allocation for the common token without a claim).
    pub fn boxed<S: AsRef<str>>(
        sub: &[S],
        publish: &[S],
    ) -> Result<Option<Box<Grants>>, PatternError> {
        let g = Grants::compile(sub, publish)?;
        Ok(if g.is_empty() {
            None
        } else {
            Some(Box::new(g))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.sub.is_empty() && self.publish.is_empty()
    }

    /// Whether these patterns alone allow `action` on `topic` for `user`.
    pub fn allows(&self, action: Action, topic: &[u8], user: &str) -> bool {
        match action {
            Action::Subscribe | Action::Who => self.sub.allows(topic, user),
            Action::Publish => self.publish.allows(topic, user),
        }
    }
}

/// The process-wide part: the `--allow-sub` / `--allow-pub` patterns,
/// compiled once at start and shared by every connection (`Arc<Policy>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub flags: Grants,
}

impl Policy {
    /// From the flags; a bad pattern is an error naming it.
    pub fn from_flags<S: AsRef<str>>(
        allow_sub: &[S],
        allow_pub: &[S],
    ) -> Result<Policy, PatternError> {
        Ok(Policy {
            flags: Grants::compile(allow_sub, allow_pub)?,
        })
    }

    /// Auth off: everyone may do everything (`*` for both).
    pub fn open() -> Policy {
        Policy {
            flags: Grants {
                sub: Patterns::everything(),
                publish: Patterns::everything(),
            },
        }
    }

    /// Whether `user` may do `action` on `topic`: the flags' patterns plus
    /// the connection's own `grants` (from its token), if any.
    pub fn allows(
        &self,
        grants: Option<&Grants>,
        action: Action,
        topic: &[u8],
        user: &str,
    ) -> bool {
        self.flags.allows(action, topic, user)
            || grants.is_some_and(|g| g.allows(action, topic, user))
    }
}

fn check(p: &str) -> Result<(), PatternError> {
    let bad = |why| {
        Err(PatternError {
            pattern: p.to_string(),
            why,
        })
    };
    let b = p.as_bytes();
    if b.is_empty() {
        return bad("empty");
    }
    if b.len() > MAX_PATTERN_LEN {
        return bad("longer than 256 bytes");
    }
    let body = b.strip_suffix(b"*").unwrap_or(b);
    if body.contains(&b'*') {
        return bad("`*` may only end a pattern");
    }
    let mut rest = body;
    let mut literal = 0;
    loop {
        let (seg, next) = match find(rest, USER) {
            Some(i) => (&rest[..i], Some(&rest[i + USER.len()..])),
            None => (rest, None),
        };
        if !seg.is_empty() && !is_valid_topic(seg) {
            return bad(if seg.contains(&b'{') || seg.contains(&b'}') {
                "`{` and `}` only in `{user}`"
            } else {
                "a topic has 1-128 bytes of [A-Za-z0-9._:-]"
            });
        }
        literal += seg.len();
        match next {
            Some(n) => rest = n,
            None => break,
        }
    }
    if literal > crate::proto::command::MAX_TOPIC_LEN {
        return bad("matches no topic (over 128 bytes)");
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `pat` is a checked pattern.
fn matches(pat: &[u8], topic: &[u8], user: &[u8]) -> bool {
    let (body, prefix) = match pat.strip_suffix(b"*") {
        Some(body) => (body, true),
        None => (pat, false),
    };
    let mut pat = body;
    let mut topic = topic;
    loop {
        match find(pat, USER) {
            Some(i) => {
                let Some(t) = topic.strip_prefix(&pat[..i]) else {
                    return false;
                };
                let Some(t) = t.strip_prefix(user) else {
                    return false;
                };
                topic = t;
                pat = &pat[i + USER.len()..];
            }
            None => {
                return if prefix {
                    topic.starts_with(pat)
                } else {
                    topic == pat
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(list: &[&str]) -> Patterns {
        Patterns::compile(list).unwrap()
    }

    #[test]
    fn exact_topic() {
        let ps = p(&["news"]);
        assert!(ps.allows(b"news", "bob"));
        assert!(!ps.allows(b"news2", "bob"));
        assert!(!ps.allows(b"new", "bob"));
        assert!(!ps.allows(b"", "bob"));
    }

    #[test]
    fn prefix_star() {
        let ps = p(&["a*"]);
        assert!(ps.allows(b"abc", "u"));
        assert!(ps.allows(b"a", "u"));
        assert!(!ps.allows(b"b", "u"));
        assert!(!ps.allows(b"ba", "u"));
        let all = p(&["*"]);
        assert!(all.allows(b"anything", "u"));
        assert!(Patterns::everything().allows(b"x", "u"));
    }

    #[test]
    fn user_placeholder() {
        let ps = p(&["user:{user}"]);
        assert!(ps.allows(b"user:alice", "alice"));
        assert!(!ps.allows(b"user:alice", "bob"));
        assert!(!ps.allows(b"user:bob", "alice"));
        assert!(!ps.allows(b"user:alicex", "alice"));
        assert!(!ps.allows(b"user:", "alice"));
        assert!(!ps.allows(b"user:{user}", "alice"));

        let ps = p(&["room:{user}:inbox", "chat.{user}*", "{user}"]);
        assert!(ps.allows(b"room:bob:inbox", "bob"));
        assert!(!ps.allows(b"room:bob:inbox2", "bob"));
        assert!(!ps.allows(b"room:alice:inbox", "bob"));
        assert!(ps.allows(b"chat.bob", "bob"));
        assert!(ps.allows(b"chat.bob.x", "bob"));
        assert!(!ps.allows(b"chat.alice", "bob"));
        assert!(ps.allows(b"bob", "bob"));
        assert!(!ps.allows(b"alice", "bob"));

        // Two placeholders.
        let ps = p(&["dm:{user}:{user}"]);
        assert!(ps.allows(b"dm:bob:bob", "bob"));
        assert!(!ps.allows(b"dm:bob:alice", "bob"));
    }

    #[test]
    fn empty_allows_nothing() {
        let ps = Patterns::default();
        assert!(ps.is_empty());
        assert!(!ps.allows(b"x", "u"));
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in [
            "", "a*b", "**", "*a", "a b", "a{", "{usr}", "{user", "user}", "a/b", "é",
        ] {
            let e = Patterns::compile(["ok", bad]).unwrap_err();
            assert_eq!(e.pattern, bad, "{bad:?}");
            assert!(e.to_string().contains(&format!("{bad:?}")));
        }
        assert!(Patterns::compile([&"a".repeat(129)]).is_err());
        assert!(Patterns::compile([&"a".repeat(128)]).is_ok());
        assert!(Patterns::compile([format!("{}*", "a".repeat(128))]).is_ok());
        assert!(Patterns::compile([&"{user}".repeat(43)]).is_err()); // > 256 bytes
        for good in ["*", "a*", "{user}", "{user}*", "x:{user}:y*", "a.b_c:d-e"] {
            assert!(Patterns::compile([good]).is_ok(), "{good}");
        }
    }

    #[test]
    fn policy_flags_plus_grants() {
        let policy = Policy::from_flags(&["public*"], &["user:{user}"]).unwrap();
        let grants = Grants::boxed(&["team:red*"], &[]).unwrap();
        let g = grants.as_deref();
        assert!(policy.allows(None, Action::Subscribe, b"public.x", "bob"));
        assert!(policy.allows(None, Action::Who, b"public.x", "bob"));
        assert!(!policy.allows(None, Action::Publish, b"public.x", "bob"));
        assert!(policy.allows(None, Action::Publish, b"user:bob", "bob"));
        assert!(!policy.allows(None, Action::Publish, b"user:alice", "bob"));
        assert!(!policy.allows(None, Action::Subscribe, b"team:red", "bob"));
        assert!(policy.allows(g, Action::Subscribe, b"team:red", "bob"));
        assert!(policy.allows(g, Action::Who, b"team:red.1", "bob"));
        assert!(!policy.allows(g, Action::Publish, b"team:red", "bob"));
        assert!(!policy.allows(g, Action::Subscribe, b"team:blue", "bob"));

        let open = Policy::open();
        assert!(open.allows(None, Action::Publish, b"x", "u"));
        let closed = Policy::default();
        assert!(!closed.allows(None, Action::Subscribe, b"x", "u"));
    }

    #[test]
    fn per_connection_state_is_one_pointer() {
        assert_eq!(Grants::boxed::<&str>(&[], &[]).unwrap(), None);
        assert_eq!(std::mem::size_of::<Option<Box<Grants>>>(), 8);
        assert_eq!(std::mem::size_of::<Patterns>(), 16);
    }

    #[test]
    fn duplicates_kept_once() {
        assert_eq!(p(&["a", "a", "b*"]).len(), 2);
    }
}
