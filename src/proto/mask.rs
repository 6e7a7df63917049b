//! Client-to-server payload masking (RFC 6455 §5.3).
//!
//! The same XOR both masks and unmasks. The hot loop works on `u64` words so
//! LLVM can widen it to SIMD; only the unaligned head and tail go byte by byte.

/// XORs `buf` in place with `key`, as if `buf` started `offset` bytes into the
/// payload (so a payload can be unmasked in several pieces as it arrives).
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut key = key;
    key.rotate_left(offset % 4);

    // SAFETY: u64 has no invalid bit patterns, so viewing aligned bytes as u64 is sound.
    let (head, words, tail) = unsafe { buf.align_to_mut::<u64>() };
    for (i, b) in head.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    // After `head` the key phase has advanced by head.len().
    let mut k = key;
    k.rotate_left(head.len() % 4);
    let word = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    for w in words.iter_mut() {
        *w ^= word;
    }
    // Words are multiples of 4 bytes, so the tail starts at phase `k`.
    for (i, b) in tail.iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
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
