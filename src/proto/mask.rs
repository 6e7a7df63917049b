//! Client-to-server payload masking (RFC 6455 §5.3).
//!
//! The same XOR both masks and unmasks, a `u64` at a time (LLVM widens the
//! loop to SIMD). Short payloads, the common case, use unaligned words and no
//! byte-wise prologue; long ones align first so the stores are aligned.

/// XORs `buf` in place with `key`, as if `buf` started `offset` bytes into the
/// payload (so a payload can be unmasked in several pieces as it arrives).
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut key = key;
    key.rotate_left(offset % 4);
    if buf.len() < ALIGN_FROM {
        return mask_unaligned(buf, key);
    }
    // Long payloads: bytes up to an 8-byte boundary, then aligned words
    // (aligned stores keep the vector loop at full speed on large buffers).
    // SAFETY: u64 has no invalid bit patterns, so viewing aligned bytes as u64 is sound.
    let (head, words, tail) = unsafe { buf.align_to_mut::<u64>() };
    for (i, b) in head.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    key.rotate_left(head.len() % 4);
    let word = key_word(key);
    for w in words.iter_mut() {
        *w ^= word;
    }
    mask_unaligned(tail, key); // words are multiples of 4 bytes: same phase
}

/// Below this length the alignment prologue costs more than it saves.
const ALIGN_FROM: usize = 64;

/// The key repeated over a `u64`, in memory order.
#[inline(always)]
fn key_word(key: [u8; 4]) -> u64 {
    u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ])
}

/// Unaligned `u64` pieces, then at most one `u32` and three bytes. Every piece
/// is a multiple of 4 bytes long, so the key phase stays at `key` throughout.
#[inline(always)]
fn mask_unaligned(buf: &mut [u8], key: [u8; 4]) {
    let word = key_word(key);
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        xor_word(w, word);
    }
    let tail = words.into_remainder();
    if tail.len() >= 4 {
        let (four, _) = tail.split_at_mut(4);
        let v = u32::from_ne_bytes([four[0], four[1], four[2], four[3]]) ^ word as u32;
        four.copy_from_slice(&v.to_ne_bytes());
    }
    let done = tail.len() & !3;
    for (i, b) in tail[done..].iter_mut().enumerate() {
        *b ^= key[i];
    }
}

/// XORs one 8-byte (possibly unaligned) piece with `word`.
#[inline(always)]
fn xor_word(piece: &mut [u8], word: u64) {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(piece);
    piece.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
}

/// Byte-at-a-time reference implementation, used by tests and benchmarks.
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + offset) % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: masked "Hello" with key 37 fa 21 3d.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn matches_bytewise_for_every_length_alignment_and_offset() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let source: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for start in 0..8 {
            for len in 0..(source.len() - start) {
                for offset in 0..4 {
                    let mut fast = source.clone();
                    let mut slow = source.clone();
                    apply_mask(&mut fast[start..start + len], key, offset);
                    apply_mask_bytewise(&mut slow[start..start + len], key, offset);
                    assert_eq!(fast, slow, "start={start} len={len} offset={offset}");
                }
            }
        }
    }

    #[test]
    fn unmasking_in_pieces_equals_unmasking_at_once() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let source: Vec<u8> = (0..100u8).collect();
        let mut whole = source.clone();
        apply_mask(&mut whole, key, 0);
        for split in 0..source.len() {
            let mut pieces = source.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            assert_eq!(pieces, whole, "split={split}");
        }
    }
}
