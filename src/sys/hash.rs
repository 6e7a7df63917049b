//! The hash of the hub's maps (session ids, connection tokens, topic
//! names): a folded multiply with a per-process random key, the
//! construction of foldhash/ahash. std's SipHash costs ~20 ns per key, and
//! a fan-out looks a session and its subscription up per subscriber per
//! message. Session ids (a cookie) and topic names come from clients, so the
//! hash is keyed (the key is drawn from the kernel's CSPRNG once per
//! process): a client cannot choose keys that collide.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use super::entropy;

/// The process's key.
fn key() -> [u64; 2] {
    static KEY: OnceLock<[u64; 2]> = OnceLock::new();
    *KEY.get_or_init(|| {
        let mut bytes = [0u8; 16];
        entropy::fill(&mut bytes);
        let (a, b) = bytes.split_at(8);
        let k = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
        // Odd multipliers keep every bit of the input in play.
        [k(a) | 1, k(b) | 1]
    })
}

/// Builds [`IdHasher`]s with the process's key. Zero-sized: a map of it
/// is no bigger than its table (many small maps live in sessions).
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHash;

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    #[inline]
    fn build_hasher(&self) -> IdHasher {
        let [h, k] = key();
        IdHasher { h, k }
    }
}

/// A map keyed by ids, hashed with [`IdHash`].
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdHash>;

/// See the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct IdHasher {
    h: u64,
    k: u64,
}

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a).wrapping_mul(u128::from(b));
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.h = fold(self.h ^ x, self.k);
    }

    #[inline]
    fn write_u128(&mut self, x: u128) {
        self.h = fold(self.h ^ x as u64, self.k ^ (x >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.h, self.k.rotate_left(23))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_spread_over_the_buckets() {
        // Sequential and random ids alike fill the low bits (hashbrown's
        // bucket index) and the top 7 (its tag) evenly.
        let b = IdHash;
        for ids in [
            (0..4096u128).collect::<Vec<_>>(),
            (0..4096u128).map(|i| i << 64).collect(),
        ] {
            let low: HashSet<u64> = ids.iter().map(|i| b.hash_one(i) & 4095).collect();
            assert!(low.len() > 2400, "{}", low.len()); // ~2590 expected for random
            let top: HashSet<u64> = ids.iter().map(|i| b.hash_one(i) >> 57).collect();
            assert_eq!(top.len(), 128);
        }
    }

    #[test]
    fn the_key_is_per_process_and_not_zero() {
        let (a, b) = (IdHash, IdHash);
        assert_eq!(a.hash_one(7u64), b.hash_one(7u64));
        assert_ne!(key(), [0, 0]);
        assert_eq!(std::mem::size_of::<IdMap<u64, u64>>(), 32);
    }
}
