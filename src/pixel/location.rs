//! Where a redirect sends the browser. A configured URL (a third-party
//! pixel, a click tracker's landing page) is filled in per request, a
//! request's own `redir` copied; written into a per-thread buffer, it
//! becomes the response's `Location` header as it is: no further copy, and
//! in the steady state no allocation.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

use crate::ids::UserId;

/// A redirect's absolute URL, in shared memory the `Location` header can
/// take without a copy. Always UTF-8: it is only ever made from `str`s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location(Bytes);

thread_local! {
    /// Where this thread fills in URLs. Each URL is split off it; once the
    /// responses holding the earlier ones are written (hyper drops them),
    /// the buffer is reused from its start rather than allocated again.
    static FILLED_URLS: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Room made in [`FILLED_URLS`] at a time: about a hundred URLs.
const FILLED_URLS_BYTES: usize = 16 << 10;

impl Location {
    /// `url` with its macros filled in (see [`super::expand`]).
    pub fn expand(url: &str, uid: Option<UserId>) -> Location {
        super::with_macro_values(uid, |uid, cachebuster| {
            let mut len = 0;
            super::fill_macros(url, uid, cachebuster, |piece| len += piece.len());
            Location::written(len, |write| {
                super::fill_macros(url, uid, cachebuster, write)
            })
        })
    }

    /// `url` as it is (a `redir` the request carried, a bounce).
    pub fn copied(url: &str) -> Location {
        Location::written(url.len(), |write| write(url))
    }

    /// The URL that `fill` writes, `len` bytes in all, split off this
    /// thread's buffer.
    fn written(len: usize, fill: impl FnOnce(&mut dyn FnMut(&str))) -> Location {
        FILLED_URLS.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut buffer) => {
                if buffer.capacity() < len {
                    buffer.reserve(len.max(FILLED_URLS_BYTES));
                }
                fill(&mut |piece: &str| buffer.extend_from_slice(piece.as_bytes()));
                Location(buffer.split().freeze())
            }
            // Only if filling a URL ever filled another: its own.
            Err(_) => {
                let mut own = String::with_capacity(len);
                fill(&mut |piece: &str| own.push_str(piece));
                Location(Bytes::from(own))
            }
        })
    }

    pub fn as_str(&self) -> &str {
        // Never fails: made from `str`s only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The URL's bytes, for the `Location` header.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl From<String> for Location {
    fn from(url: String) -> Location {
        Location::copied(&url)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_url_is_the_string_expand_makes() {
        let uid = UserId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let url = "https://x.test/p?u=${UID}&cb=${CACHEBUSTER}&k=${OTHER}";
        let got = Location::expand(url, Some(uid));
        let (head, tail) = got.as_str().split_once("&cb=").unwrap();
        assert_eq!(
            head,
            format!("https://x.test/p?u={}", uid.to_hex().as_str())
        );
        let (cb, rest) = tail.split_once("&k=").unwrap();
        assert!(cb.parse::<u32>().is_ok(), "{cb}");
        assert_eq!(rest, "${OTHER}");
        let plain = Location::expand("https://x.test/plain", Some(uid));
        assert_eq!(plain.as_str(), "https://x.test/plain");
    }

    #[test]
    fn urls_filled_one_after_another_keep_their_own_bytes() {
        // Many more than the buffer holds at once, all kept alive: each
        // stays as it was filled while later ones are written.
        let urls: Vec<Location> = (0..2_000)
            .map(|i| Location::expand(&format!("https://x.test/{i}?u=${{UID}}"), None))
            .collect();
        for (i, url) in urls.iter().enumerate() {
            assert_eq!(url.as_str(), format!("https://x.test/{i}?u="));
        }
    }
}
