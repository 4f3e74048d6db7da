//! The hash tables of the compiler's own passes (interning, memo tables of
//! the simplifier and the planner).
//!
//! Their keys are small nodes and ids, hashed millions of times while a spec
//! compiles; the standard library's SipHash, built to resist collisions
//! chosen by an attacker, took a fifth of `focal_logits`' compile time. This
//! is the multiply-rotate hash of rustc's `FxHasher` (20 lines, so not worth
//! a dependency). Its weakness to crafted collisions does not matter here:
//! a spec is bounded in size before it is compiled. It is also
//! deterministic, though nothing lossc prints depends on a table's order.

use std::hash::{BuildHasherDefault, Hasher};

/// rustc's `FxHasher`: each word is folded in by a rotate, a xor and a
/// multiply by an odd constant.
#[derive(Clone, Copy, Default)]
pub(crate) struct FxHasher {
    hash: u64,
}

const K: u64 = 0x517c_c1b7_2722_0a95;

impl FxHasher {
    #[inline(always)]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A `HashMap` with [`FxHasher`] (build one with `HashMap::default()`).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FxHasher>>;
/// A `HashSet` with [`FxHasher`].
pub(crate) type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn h<T: Hash>(x: T) -> u64 {
        BuildHasherDefault::<FxHasher>::default().hash_one(x)
    }

    #[test]
    fn equal_keys_hash_equal_and_near_keys_apart() {
        assert_eq!(h(("sigmoid", 3u32)), h(("sigmoid", 3u32)));
        assert_ne!(h(("sigmoid", 3u32)), h(("sigmoid", 4u32)));
        assert_ne!(h("abcdefgh1"), h("abcdefgh2"));
        // Consecutive ids spread over the high bits hashbrown uses for
        // its control bytes, not only the low ones.
        let tops: HashSet<u64> = (0u32..256).map(|i| h(i) >> 57).collect();
        assert!(tops.len() > 64, "{} distinct top-7-bit values", tops.len());
    }

    #[test]
    fn a_table_behaves_as_a_table() {
        let mut m: HashMap<(u32, bool), usize> = HashMap::default();
        for i in 0..10_000u32 {
            m.insert((i, i % 3 == 0), i as usize);
        }
        assert_eq!(m.len(), 10_000);
        assert!((0..10_000u32).all(|i| m[&(i, i % 3 == 0)] == i as usize));
        assert!(!m.contains_key(&(5, true)));
    }
}
