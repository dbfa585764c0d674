//! Unpadded base64url (RFC 4648 §5), the alphabet of click ids and TC
//! strings: safe in a URL and a cookie unescaped.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| acc << 8 | *b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn digit(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    } as u32)
}

/// Strict: one spelling per value (the unused low bits must be zero), as a
/// signed token needs.
pub fn unbase64url(s: &str) -> Option<Vec<u8>> {
    decode(s, true)
}

/// Lenient about the unused low bits, as TC strings from some CMPs need;
/// the bits are kept (a bit reader may read into them).
pub fn unbase64url_bits(s: &str) -> Option<Vec<u8>> {
    decode(s, false)
}

fn decode(s: &str, strict: bool) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4 + 1);
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for &c in chunk {
            n = n << 6 | digit(c)?;
        }
        n <<= 6 * (4 - chunk.len() as u32);
        let len = chunk.len() - 1;
        if chunk.len() < 4 {
            if strict && n & ((1 << (8 * (3 - len))) - 1) != 0 {
                return None;
            }
            // Keep the partial byte's bits for a bit reader when lenient.
            let keep = if strict { len } else { len + 1 };
            out.extend_from_slice(&n.to_be_bytes()[1..1 + keep.min(3)]);
        } else {
            out.extend_from_slice(&n.to_be_bytes()[1..4]);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_every_length() {
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(unbase64url(&base64url(&bytes)).unwrap(), bytes);
            assert!(unbase64url_bits(&base64url(&bytes))
                .unwrap()
                .starts_with(&bytes));
        }
        assert!(unbase64url("AQ").is_some());
        assert!(unbase64url("AB").is_none());
        assert!(unbase64url("AC").is_none(), "non-zero padding bits");
        assert!(unbase64url_bits("AC").is_some());
        assert!(unbase64url("A+==").is_none());
        assert!(unbase64url("A").is_none());
    }
}
