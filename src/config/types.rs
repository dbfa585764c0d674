//! The config's typed values: each parses at load with a message that names
//! the accepted forms, so nothing downstream re-reads a string or falls back
//! to a default.

use std::fmt;
use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// An enum written as one of a few fixed strings in the file. The message of
/// a bad value lists them all.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in the order the message lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// As written in the file (and as librdkafka takes it).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(s: String) -> Result<Self, String> {
                match s.as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "{s:?} is not one of {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// `kafka.compression`: the producer's `compression.type`.
    KafkaCompression {
        None => "none",
        Gzip => "gzip",
        Snappy => "snappy",
        Lz4 => "lz4",
        Zstd => "zstd",
    }
);

string_enum!(
    /// `kafka.acks`: how many replicas acknowledge a write.
    KafkaAcks {
        /// Every in-sync replica; the only one that allows idempotence.
        All => "all",
        One => "1",
        None => "0",
    }
);

string_enum!(
    /// `attribution.mode`: where conversions are credited.
    AttributionMode {
        /// The engine runs inside `pixeld serve` on that instance's events:
        /// right for one instance.
        InProcess => "in_process",
        /// `pixeld serve` only publishes; `pixeld attribute` members, a
        /// Kafka consumer group, credit conversions from the topics.
        Cluster => "cluster",
    }
);

string_enum!(
    /// `attribution.transactions`: whether `pixeld attribute` commits its
    /// records, changelog writes and input offsets in one Kafka transaction.
    Transactions {
        /// Probe the brokers at start; transactions where they work,
        /// otherwise at least once (logged either way).
        Auto => "auto",
        /// Transactions or no start: a broker that cannot give them stops
        /// start-up naming this key.
        Required => "required",
        /// At least once, every repeat identical; no probe.
        Off => "off",
    }
);

string_enum!(
    /// `journal.durability`: how far an answered event is protected.
    Durability {
        /// Written to the journal (page cache) before the response: survives
        /// a process crash.
        Journal => "journal",
        /// Also `fdatasync`ed before the response: survives power loss.
        Fsync => "fsync",
        /// No journal: events live in librdkafka's memory until acknowledged.
        Memory => "memory",
    }
);

string_enum!(
    /// `cookie.same_site`: when browsers send the id cookie.
    SameSite {
        /// In every context, third-party included (needs `Secure`).
        None => "none",
        /// First-party requests and top-level navigations.
        Lax => "lax",
        /// First-party requests only.
        Strict => "strict",
    }
);

string_enum!(
    /// `privacy.ip`: how much of the client address an event keeps.
    #[derive(Default)]
    IpPolicy {
        #[default]
        Full => "full",
        /// IPv4 to its /24, IPv6 to its /48.
        Truncate => "truncate",
        /// No address at all.
        Drop => "drop",
    }
);

/// How repeat conversions of one user on one pixel are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Repeat {
    All,
    OnePerUser,
    /// At most one per this many minutes.
    EveryMinutes(u32),
}

impl Repeat {
    pub const MAX_EVERY_MINUTES: u32 = 32_767;

    /// `all`, `one_per_user` or `every N minutes`.
    pub fn parse(s: &str) -> Result<Repeat, String> {
        match s {
            "all" => return Ok(Repeat::All),
            "one_per_user" => return Ok(Repeat::OnePerUser),
            _ => {}
        }
        let n = s
            .strip_prefix("every ")
            .and_then(|r| {
                r.strip_suffix(" minutes")
                    .or_else(|| r.strip_suffix(" minute"))
            })
            .and_then(|n| n.trim().parse::<u32>().ok());
        match n {
            Some(n) if (1..=Self::MAX_EVERY_MINUTES).contains(&n) => Ok(Repeat::EveryMinutes(n)),
            Some(n) => Err(format!(
                "every {n} minutes is outside 1..={} (about 22 days)",
                Self::MAX_EVERY_MINUTES
            )),
            None => Err(format!(
                "{s:?} is not a repeat mode; write \"all\", \"one_per_user\" or \"every N minutes\""
            )),
        }
    }
}

impl TryFrom<String> for Repeat {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Repeat::parse(&s)
    }
}

/// `server.listen`, with a message that shows the expected form.
pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{s:?} is not an address:port; write e.g. \"0.0.0.0:8080\""
        ))
    })
}

/// `10.0.0.0/8`, or a single address (a /32 or /128).
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// `server.trusted_proxies`: networks, each named by its index when bad.
pub fn nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    #[derive(Deserialize)]
    #[serde(try_from = "String")]
    struct Net(IpNet);
    impl TryFrom<String> for Net {
        type Error = String;
        fn try_from(s: String) -> Result<Self, String> {
            parse_net(&s).map(Net).ok_or_else(|| {
                format!("{s:?} is not a network; write e.g. \"10.0.0.0/8\" or \"192.0.2.7\"")
            })
        }
    }
    Ok(Vec::<Net>::deserialize(d)?
        .into_iter()
        .map(|n| n.0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_modes() {
        assert_eq!(Repeat::parse("all"), Ok(Repeat::All));
        assert_eq!(Repeat::parse("one_per_user"), Ok(Repeat::OnePerUser));
        assert_eq!(
            Repeat::parse("every 60 minutes"),
            Ok(Repeat::EveryMinutes(60))
        );
        assert_eq!(
            Repeat::parse("every 32767 minutes"),
            Ok(Repeat::EveryMinutes(32767))
        );
        assert!(Repeat::parse("every 32768 minutes")
            .unwrap_err()
            .contains("1..=32767"));
        assert!(Repeat::parse("every 0 minutes").is_err());
        assert!(Repeat::parse("sometimes")
            .unwrap_err()
            .contains("every N minutes"));
    }

    #[test]
    fn string_enums_list_their_values() {
        let e = KafkaCompression::try_from("brotli".to_string()).unwrap_err();
        assert_eq!(e, "\"brotli\" is not one of none, gzip, snappy, lz4, zstd");
        assert_eq!(KafkaAcks::try_from("1".to_string()), Ok(KafkaAcks::One));
        assert_eq!(Durability::ALL.len(), 3);
        for d in Durability::ALL {
            assert_eq!(Durability::try_from(d.as_str().to_string()), Ok(*d));
        }
    }
}

impl IpPolicy {
    /// The address as this policy records it.
    pub fn apply(self, ip: std::net::IpAddr) -> Option<std::net::IpAddr> {
        use std::net::IpAddr;
        match (self, ip) {
            (IpPolicy::Full, ip) => Some(ip),
            (IpPolicy::Drop, _) => None,
            (IpPolicy::Truncate, IpAddr::V4(v4)) => {
                Some(IpAddr::V4((u32::from(v4) & 0xffff_ff00).into()))
            }
            (IpPolicy::Truncate, IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                // An IPv4 client seen through a dual-stack socket is an IPv4 address.
                Some(v4) => Some(IpAddr::V4((u32::from(v4) & 0xffff_ff00).into())),
                None => Some(IpAddr::V6((u128::from(v6) & !((1u128 << 80) - 1)).into())),
            },
        }
    }
}

#[cfg(test)]
mod ip_policy_tests {
    use super::IpPolicy;

    #[test]
    fn truncation_keeps_the_v4_24_and_the_v6_48() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let t = |s| IpPolicy::Truncate.apply(ip(s));
        assert_eq!(t("203.0.113.77"), Some(ip("203.0.113.0")));
        assert_eq!(t("2001:db8:abcd:1234:5678::1"), Some(ip("2001:db8:abcd::")));
        assert_eq!(t("::ffff:198.51.100.9"), Some(ip("198.51.100.0")));
        assert_eq!(
            IpPolicy::Full.apply(ip("203.0.113.77")),
            Some(ip("203.0.113.77"))
        );
        assert_eq!(IpPolicy::Drop.apply(ip("203.0.113.77")), None);
    }
}
