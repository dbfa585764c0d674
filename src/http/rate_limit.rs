//! An optional per-IP request rate limit. Excess requests are still answered
//! (a broken pixel breaks a page); their events carry the warning
//! `rate_limited` and never reach the attribution engine.

use std::net::IpAddr;

use dashmap::DashMap;

/// Requests per client network per second, counted in whole-second windows.
/// Clients are bucketed by network prefix: any IPv6 host holds at least a
/// /64 (2^64 addresses), so counting single addresses would let one client
/// never be limited.
pub struct RateLimiter {
    /// Allowed per network per second.
    per_sec: u32,
    /// Prefix lengths an IPv4 and an IPv6 client is counted by.
    v4_prefix: u8,
    v6_prefix: u8,
    /// Network (address with the host bits cleared) → (second, requests in it).
    counts: DashMap<IpAddr, (u64, u32), ahash::RandomState>,
}

impl RateLimiter {
    /// `v4_prefix` at most 32, `v6_prefix` at most 128 (validated in config).
    pub fn new(per_sec: u32, v4_prefix: u8, v6_prefix: u8) -> RateLimiter {
        RateLimiter {
            per_sec,
            v4_prefix: v4_prefix.min(32),
            v6_prefix: v6_prefix.min(128),
            counts: DashMap::with_hasher(ahash::RandomState::new()),
        }
    }

    /// (per second, IPv4 prefix, IPv6 prefix), to tell whether a reload
    /// changed the limit.
    pub fn settings(&self) -> (u32, u8, u8) {
        (self.per_sec, self.v4_prefix, self.v6_prefix)
    }

    /// The network `ip` is counted in.
    fn bucket(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - self.v4_prefix as u32)
                    .unwrap_or(0);
                IpAddr::from((u32::from(a) & mask).to_be_bytes())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - self.v6_prefix as u32)
                    .unwrap_or(0);
                IpAddr::from((u128::from(a) & mask).to_be_bytes())
            }
        }
    }

    /// Counts one request; false once its network is over the rate this second.
    pub fn allow(&self, ip: IpAddr, now_ms: u64) -> bool {
        let sec = now_ms / 1000;
        let mut entry = self.counts.entry(self.bucket(ip)).or_insert((sec, 0));
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
        let r = RateLimiter::new(3, 32, 64);
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

    #[test]
    fn an_ipv6_client_cannot_escape_by_changing_its_host_bits() {
        let r = RateLimiter::new(3, 32, 64);
        let t = 1_000_000;
        let in_64 = |host: u64| -> IpAddr {
            IpAddr::from(((0x2001_0db8_0000_0001u128 << 64) | host as u128).to_be_bytes())
        };
        assert!((1..=3).all(|h| r.allow(in_64(h), t)));
        assert!(!r.allow(in_64(0xdead_beef), t), "same /64");
        let next_64: IpAddr = "2001:db8:0:2::1".parse().unwrap();
        assert!(r.allow(next_64, t), "another /64");
        // Prefixes are configurable: /24 for IPv4.
        let r = RateLimiter::new(1, 24, 48);
        assert!(r.allow([198, 51, 100, 7].into(), t));
        assert!(!r.allow([198, 51, 100, 200].into(), t));
        assert!(r.allow([198, 51, 101, 7].into(), t));
    }
}
