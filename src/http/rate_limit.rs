//! An optional per-IP request rate limit. Excess requests are still answered
//! (a broken pixel breaks a page); their events carry the warning
//! `rate_limited` and never reach the attribution engine.

use std::net::IpAddr;

use dashmap::DashMap;

/// Requests per IP per second, counted in whole-second windows.
pub struct RateLimiter {
    /// Allowed per IP per second.
    per_sec: u32,
    /// IP → (second, requests in it).
    counts: DashMap<IpAddr, (u64, u32), ahash::RandomState>,
}

impl RateLimiter {
    pub fn new(per_sec: u32) -> RateLimiter {
        RateLimiter {
            per_sec,
            counts: DashMap::with_hasher(ahash::RandomState::new()),
        }
    }

    /// Counts one request; false once the IP is over its rate this second.
    pub fn allow(&self, ip: IpAddr, now_ms: u64) -> bool {
        let sec = now_ms / 1000;
        let mut entry = self.counts.entry(ip).or_insert((sec, 0));
        if entry.0 != sec {
            *entry = (sec, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.per_sec
    }

    /// Forgets IPs not seen in the last second, so the map stays small.
    pub fn sweep(&self, now_ms: u64) {
        let sec = now_ms / 1000;
        self.counts.retain(|_, (s, _)| *s + 1 >= sec);
    }

    pub fn tracked(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_rate_then_refuses_until_the_next_second() {
        let r = RateLimiter::new(3);
        let ip: IpAddr = [198, 51, 100, 7].into();
        let other: IpAddr = [198, 51, 100, 8].into();
        let t = 1_000_000;
        assert!((0..3).all(|_| r.allow(ip, t)));
        assert!(!r.allow(ip, t + 999));
        assert!(r.allow(other, t + 999), "per IP");
        assert!(r.allow(ip, t + 1000), "a new second");
        r.sweep(t + 5000);
        assert_eq!(r.tracked(), 0);
    }
}
