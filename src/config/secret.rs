//! The cookie-signing secret (`cookie.secret`, `cookie.previous_secrets`),
//! parsed at load so nothing downstream handles it as a string; its `Debug`
//! never shows the key.

use std::hash::Hasher;
use std::path::Path;

use serde::Deserialize;
use siphasher::sip::SipHasher24;

use crate::ids::UserId;

/// A 128-bit signing secret.
#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Secret([u8; 16]);

impl Secret {
    /// 32 hex characters (any case), as in `cookie.secret`.
    pub fn parse(s: &str) -> Option<Secret> {
        let v = u128::from_str_radix(s, 16).ok()?;
        (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(Secret(v.to_be_bytes()))
    }

    pub fn generate() -> Secret {
        Secret(rand::random())
    }

    /// The cookie tag of `uid`: SipHash-2-4 of its 16 bytes under the key.
    pub fn tag(&self, uid: UserId) -> u64 {
        let mut h = SipHasher24::new_with_key(&self.0);
        h.write(&uid.0.to_be_bytes());
        h.finish()
    }

    /// A 64-bit tag of `data` for another purpose than the cookie (click ids):
    /// SipHash-2-4 under the same key, with `domain` hashed first so a tag
    /// made for one purpose never verifies for another.
    pub fn mac(&self, domain: &[u8], data: &[u8]) -> u64 {
        let mut h = SipHasher24::new_with_key(&self.0);
        h.write(domain);
        h.write_u8(0);
        h.write(data);
        h.finish()
    }

    /// The key in `data_dir/cookie.key`, created (mode 0600) on first start so
    /// that issued ids survive restarts when `cookie.secret` is not set.
    pub fn load_or_create(path: &Path) -> std::io::Result<Secret> {
        match std::fs::read_to_string(path) {
            Ok(text) => Secret::parse(text.trim()).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} does not hold 32 hex characters", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Secret::generate();
                if let Some(dir) = path.parent() {
                    crate::files::create_private_dir(dir)?;
                }
                let mut f = crate::files::private_options()
                    .write(true)
                    .create_new(true)
                    .open(path)?;
                std::io::Write::write_all(&mut f, format!("{}\n", key.to_hex()).as_bytes())?;
                f.sync_all()?;
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }

    pub fn to_hex(self) -> String {
        format!("{:032x}", u128::from_be_bytes(self.0))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl TryFrom<String> for Secret {
    type Error = &'static str;

    /// The message never echoes the value: it is a secret.
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Secret::parse(&s)
            .ok_or("must be 32 hex characters (128 bits); generate one with `openssl rand -hex 16`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f";

    #[test]
    fn the_generated_key_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cookie.key");
        let a = Secret::load_or_create(&path).unwrap();
        let b = Secret::load_or_create(&path).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not hex\n").unwrap();
        let e = Secret::load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("32 hex"), "{e}");
    }

    #[test]
    fn secrets_parse_strictly() {
        assert!(Secret::parse(KEY).is_some());
        assert!(Secret::parse(&KEY.to_uppercase()).is_some());
        for bad in [
            "",
            "00",
            &KEY[1..],
            &format!("{KEY}0"),
            "+00102030405060708090a0b0c0d0e0f",
        ] {
            assert!(Secret::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(format!("{:?}", Secret::parse(KEY).unwrap()), "Secret(..)");
    }
}

/// A bearer token: `server.admin_token`, which the admin listener asks for,
/// and each `[[api_keys]]` secret. Its `Debug` never shows it, and it is
/// compared in constant time.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BearerToken(String);

impl BearerToken {
    /// Shorter tokens can be guessed over a loopback connection.
    pub const MIN_LEN: usize = 16;

    /// Whether `presented` is the token. Both sides are hashed first, so the
    /// time taken says nothing about the token, its length included.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented);
        let diff = a
            .iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(diff) == 0
    }

    /// The token itself, to send it (a destination's `Authorization`
    /// header). Never for a log or a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl TryFrom<String> for BearerToken {
    type Error = &'static str;

    /// The message never echoes the value: it is a secret.
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.len() >= Self::MIN_LEN && s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(BearerToken(s))
        } else {
            Err("must be at least 16 visible ASCII characters, no spaces; generate one with `openssl rand -hex 32`")
        }
    }
}

#[cfg(test)]
mod token_tests {
    use super::BearerToken;

    #[test]
    fn tokens_are_long_printable_and_compared_whole() {
        let t = BearerToken::try_from("0123456789abcdef".to_string()).unwrap();
        assert!(t.matches(b"0123456789abcdef"));
        for other in [
            &b"0123456789abcdeF"[..],
            b"0123456789abcde",
            b"",
            b"0123456789abcdef0",
        ] {
            assert!(!t.matches(other));
        }
        assert!(BearerToken::try_from("short".to_string()).is_err());
        assert!(BearerToken::try_from("0123456789 abcdef".to_string()).is_err());
        assert_eq!(format!("{t:?}"), "BearerToken(..)");
    }
}
