//! The client's address: the socket peer, or, behind trusted proxies, the
//! right-most `X-Forwarded-For` entry that is not one of them.

use std::net::IpAddr;

use hyper::header::HeaderMap;
use ipnet::IpNet;

pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Later headers were appended by nearer proxies: walk them back to front.
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    return ip;
                }
            }
            // Garbage cannot be trusted: stop at the last hop we could read.
            Err(_) => return client,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            client_ip(peer, &xff(&["1.2.3.4"]), &nets(&["10.0.0.0/8"])),
            peer
        );
    }

    #[test]
    fn the_right_most_untrusted_entry_wins() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        let h = xff(&["6.6.6.6, 198.51.100.7, 10.0.0.5"]);
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let h = xff(&["6.6.6.6", "198.51.100.7, 10.0.0.5"]);
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn garbage_or_only_proxies_stop_at_the_last_readable_hop() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(peer, &xff(&["nonsense, 10.0.0.7"]), &trusted),
            "10.0.0.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, &xff(&[]), &trusted), peer);
        assert_eq!(
            client_ip(peer, &xff(&["2001:db8::1"]), &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }
}
