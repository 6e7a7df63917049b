//! Incremental UTF-8 validation for text messages (RFC 6455 §8.1).
//!
//! A text message may arrive in many fragments and each fragment in many reads;
//! a code point may straddle any of those boundaries. The validator keeps at most
//! three bytes of an unfinished code point and fails as soon as the bytes seen so
//! far cannot start valid UTF-8 ("fail fast", Autobahn 6.4.*).

/// Streaming UTF-8 validator.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carry_len: u8,
}

/// The bytes fed so far are not valid UTF-8 (close code 1007).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Utf8Validator {
            carry: [0; 4],
            carry_len: 0,
        }
    }

    /// Feeds the next bytes of the message.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        if self.carry_len > 0 {
            // Complete the code point left over from the previous piece.
            let have = self.carry_len as usize;
            let need = char_width(self.carry[0]).ok_or(InvalidUtf8)?;
            let take = (need - have).min(bytes.len());
            self.carry[have..have + take].copy_from_slice(&bytes[..take]);
            let now = have + take;
            bytes = &bytes[take..];
            match std::str::from_utf8(&self.carry[..now]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix; the piece ended before the code point did.
                    self.carry_len = now as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        // Most text is ASCII: skip it a word at a time (std's validator costs
        // ~100 instructions of setup on a 32-byte message).
        let bytes = &bytes[ascii_prefix_len(bytes)..];
        if bytes.is_empty() {
            return Ok(());
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                Some(_) => Err(InvalidUtf8),
                None => {
                    let rest = &bytes[e.valid_up_to()..];
                    self.carry[..rest.len()].copy_from_slice(rest);
                    self.carry_len = rest.len() as u8;
                    Ok(())
                }
            },
        }
    }

    /// Ends the message: an unfinished code point at the end is invalid.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.carry_len == 0;
        self.carry_len = 0;
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }

    /// Forgets any state, ready for a new message.
    pub fn reset(&mut self) {
        self.carry_len = 0;
    }
}

/// How many bytes at the start of `bytes` are ASCII (to a word boundary of
/// the first non-ASCII byte; std validates from there).
#[inline]
fn ascii_prefix_len(bytes: &[u8]) -> usize {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[i..i + 8]);
        u64::from_ne_bytes(w)
    };
    let mut i = 0;
    while i + 32 <= bytes.len() {
        if (word(i) | word(i + 8) | word(i + 16) | word(i + 24)) & HIGH != 0 {
            return i;
        }
        i += 32;
    }
    while i + 8 <= bytes.len() {
        if word(i) & HIGH != 0 {
            return i;
        }
        i += 8;
    }
    while i < bytes.len() && bytes[i] < 0x80 {
        i += 1;
    }
    i
}

/// The length of the code point a leading byte announces.
fn char_width(first: u8) -> Option<usize> {
    match first {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_split(bytes: &[u8], split: usize) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        v.feed(&bytes[..split])?;
        v.feed(&bytes[split..])?;
        v.finish()
    }

    #[test]
    fn valid_text_at_every_split_point() {
        let text = "κόσμε — Hello-µ@ßöäüàá-UTF-8!! 𝄞 \u{10FFFF}".as_bytes();
        for split in 0..=text.len() {
            assert_eq!(validate_split(text, split), Ok(()), "split={split}");
        }
    }

    #[test]
    fn byte_by_byte() {
        let text = "a€𝄞z".as_bytes();
        let mut v = Utf8Validator::new();
        for b in text {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn invalid_sequences_fail_at_every_split_point() {
        let cases: &[&[u8]] = &[
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", // surrogate
            b"\xf4\x90\x80\x80",                                               // > U+10FFFF
            b"\xc0\xaf",                                                       // overlong
            b"abc\xff",
            b"\x80",
        ];
        for case in cases {
            for split in 0..=case.len() {
                assert_eq!(
                    validate_split(case, split),
                    Err(InvalidUtf8),
                    "{case:?} split={split}"
                );
            }
        }
    }

    #[test]
    fn fails_fast_on_an_impossible_prefix() {
        // 0xF4 0x90 can never start valid UTF-8: rejected before the code point ends.
        let mut v = Utf8Validator::new();
        v.feed(b"ok\xf4").unwrap();
        assert_eq!(v.feed(b"\x90"), Err(InvalidUtf8));
    }

    #[test]
    fn ascii_runs_of_every_length_before_any_ending_match_std() {
        // The word-at-a-time ASCII skip must hand over at the right byte,
        // whatever the length of the run and wherever the piece is split.
        let endings: &[&[u8]] = &[
            b"",
            "é".as_bytes(),
            "𝄞!".as_bytes(),
            b"\xff",
            b"\xe2\x82",
            b"\xed\xa0\x80",
        ];
        for run in 0..80 {
            for ending in endings {
                let mut text = vec![b'a'; run];
                text.extend_from_slice(ending);
                text.extend_from_slice(&[b'z'; 9]);
                let want = std::str::from_utf8(&text)
                    .map(|_| ())
                    .map_err(|_| InvalidUtf8);
                for split in 0..=text.len() {
                    assert_eq!(
                        validate_split(&text, split),
                        want,
                        "run={run} {ending:?} split={split}"
                    );
                }
            }
        }
    }

    #[test]
    fn truncated_code_point_fails_at_finish() {
        let mut v = Utf8Validator::new();
        v.feed(b"\xe2\x82").unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }
}
