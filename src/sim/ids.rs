//! Deterministic identifiers and hashing.
//!
//! Object ids are derived from `(seed, index)` by a reversible scramble, so a
//! million-user tenant needs no id → index map: the index is recovered from the
//! id and the id is re-derived to check it.

/// SplitMix64 step: a fast, well-mixed 64-bit hash.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of several words.
pub fn hash(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x1234_5678_9ABC_DEF0, |acc, p| mix64(acc ^ mix64(*p)))
}

/// FNV-1a of a string, for hashing text into keys.
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// A small deterministic random stream (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    /// Uniform in `[0, n)`; `n == 0` gives 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            lo
        } else {
            lo + (self.below((hi - lo + 1) as u64) as i64)
        }
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

const MUL: u32 = 0x9E37_79B1; // odd, so invertible modulo 2^32

fn inverse(a: u32) -> u32 {
    // Newton iteration for the inverse of an odd number modulo 2^32.
    let mut x = a;
    for _ in 0..5 {
        x = x.wrapping_mul(2u32.wrapping_sub(a.wrapping_mul(x)));
    }
    x
}

/// A GUID for `(key, index)` that encodes the index reversibly.
pub fn guid_for(key: u64, index: u32) -> [u8; 16] {
    let scrambled = index.wrapping_mul(MUL) ^ (key as u32);
    let h1 = hash(&[key, u64::from(index), 1]);
    let h2 = hash(&[key, u64::from(index), 2]);
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&h1.to_be_bytes());
    b[8..12].copy_from_slice(&h2.to_be_bytes()[0..4]);
    b[12..16].copy_from_slice(&scrambled.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    b
}

/// Format 16 bytes as a lowercase hyphenated GUID.
pub fn guid_string(b: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*b).hyphenated().to_string()
}

/// The index a GUID made by [`guid_for`] with `key` encodes, if it is one.
pub fn index_of_guid(key: u64, text: &str) -> Option<u32> {
    let id = uuid::Uuid::parse_str(text).ok()?;
    let b = id.as_bytes();
    let scrambled = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
    let index = (scrambled ^ (key as u32)).wrapping_mul(inverse(MUL));
    (guid_for(key, index) == *b).then_some(index)
}

/// A GUID string derived from a name (for fixed objects: groups, roles, tenant).
pub fn named_guid(seed: u64, name: &str) -> String {
    let h1 = hash(&[seed, hash_str(name), 11]);
    let h2 = hash(&[seed, hash_str(name), 12]);
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&h1.to_be_bytes());
    b[8..16].copy_from_slice(&h2.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    guid_string(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trips() {
        for i in [0u32, 1, 2, 999_999, 4_000_000] {
            let g = guid_string(&guid_for(42, i));
            assert_eq!(index_of_guid(42, &g), Some(i));
            assert_eq!(index_of_guid(43, &g), None);
        }
    }
}
