//! SHA-256 as Meta wants it: lowercase hex of the UTF-8 bytes of the normalized value.

use sha2::{Digest, Sha256};

/// Appends the 64-character lowercase hex SHA-256 of `data` to `out`.
///
/// `sha2` picks the SHA-NI instructions at run time when the CPU has them; the hex encoding
/// goes through a stack buffer (`const_hex`, SIMD), so the only allocation is `out` growing.
#[inline]
pub fn sha256_hex_into(data: &[u8], out: &mut String) {
    let digest: [u8; 32] = Sha256::digest(data).into();
    let mut buf = const_hex::Buffer::<32>::new();
    out.push_str(buf.format(&digest));
}

/// Replaces `out[start..]` by its lowercase hex SHA-256, without allocating beyond `out`.
#[inline]
pub fn hash_tail_in_place(out: &mut String, start: usize) {
    let digest: [u8; 32] = Sha256::digest(&out.as_bytes()[start..]).into();
    out.truncate(start);
    let mut buf = const_hex::Buffer::<32>::new();
    out.push_str(buf.format(&digest));
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    let mut out = String::with_capacity(64);
    sha256_hex_into(data, &mut out);
    out
}

/// Whether `s` looks like a SHA-256 already: exactly 64 ASCII hex digits (either case).
#[inline]
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_of_meta_s_documented_email_example_matches_the_documentation() {
        assert_eq!(
            sha256_hex(b"mary@example.com"),
            "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79"
        );
    }

    #[test]
    fn hashing_appends_to_what_is_already_in_the_buffer() {
        let mut out = String::from("x");
        sha256_hex_into(b"us", &mut out);
        assert_eq!(out.len(), 65);
        assert!(out.starts_with('x'));
    }

    #[test]
    fn hashing_in_place_replaces_only_the_tail() {
        let mut out = String::from("keepus");
        hash_tail_in_place(&mut out, 4);
        assert_eq!(&out[..4], "keep");
        assert_eq!(&out[4..], sha256_hex(b"us"));
    }

    #[test]
    fn only_64_hex_digits_count_as_a_sha256() {
        let h = sha256_hex(b"a");
        assert!(is_sha256_hex(&h));
        assert!(is_sha256_hex(&h.to_uppercase()));
        assert!(!is_sha256_hex(&h[..63]));
        assert!(!is_sha256_hex(&format!("{}g", &h[..63])));
        assert!(!is_sha256_hex("2a6a84e9e44441afbd75cc19ce28be37")); // MD5
    }
}
