//! The compact member encoding and the member set's hasher.
use std::collections::BTreeMap;

use super::Key;

/// One member, encoded compactly: for each non-empty cell in key order, the key byte, then 32
/// raw bytes for hashed keys or a `u16` LE length and the bytes for free-form keys. Equal
/// canonical rows ⇔ equal bytes, whatever the schema's column order.
///
/// The member's hash is computed once, while its bytes are fresh from the payload: the set's
/// inserts, and above all its growth (every member rehashed), then never read the bytes, which
/// sit elsewhere on the heap (rehashing from the bytes was about a third of the emulator's CPU
/// in a first sync of 740,000 members).
#[derive(Clone, Debug)]
pub struct Member {
    hash: u64,
    bytes: Box<[u8]>,
}

impl Member {
    pub fn new(bytes: &[u8]) -> Self {
        let mut h = FastHasher::default();
        std::hash::Hasher::write_usize(&mut h, bytes.len());
        std::hash::Hasher::write(&mut h, bytes);
        Member {
            hash: std::hash::Hasher::finish(&h),
            bytes: bytes.into(),
        }
    }
}

impl std::ops::Deref for Member {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl PartialEq for Member {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.bytes == other.bytes
    }
}

impl Eq for Member {}

impl std::hash::Hash for Member {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The member set: SipHash dominated inserts (members are mostly SHA-256 bytes already, and
/// HashDoS is no concern for a local emulator), so a multiply-rotate hasher in the Fx style, over
/// each member's own hash.
pub type MemberSet = std::collections::HashSet<Member, std::hash::BuildHasherDefault<FastHasher>>;

#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;
    fn add(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(Self::K).rotate_left(26);
    }
}

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(Self::K).rotate_left(32)
    }
}

pub fn decode_member(m: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < m.len() {
        let key = Key::from_byte(m[i]);
        i += 1;
        let value = if key.hashed() {
            let v = const_hex::encode(&m[i..i + 32]);
            i += 32;
            v
        } else {
            let len = usize::from(u16::from_le_bytes([m[i], m[i + 1]]));
            let v = String::from_utf8_lossy(&m[i + 2..i + 2 + len]).into_owned();
            i += 2 + len;
            v
        };
        out.insert(key.name().to_string(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_equal_exactly_when_their_bytes_are_and_a_set_keeps_one_of_each() {
        let rows: [&[u8]; 5] = [
            &[1, 0],
            &[1],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0],
            &[2; 33],
            &[1, 0],
        ];
        let set: MemberSet = rows.iter().map(|r| Member::new(r)).collect();
        assert_eq!(set.len(), 4);
        for r in rows {
            assert!(set.contains(&Member::new(r)));
            assert_eq!(&*Member::new(r), r);
        }
        assert!(!set.contains(&Member::new(&[2; 32])));
        assert_ne!(Member::new(&[1]), Member::new(&[1, 0]));
    }
}
