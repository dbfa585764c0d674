//! What the admin listener refuses before routing: anything a web page or
//! another host could make a browser send. A page cannot reach it with a
//! `Host` of ours (DNS rebinding sends the attacker's name), cannot hide a
//! cross-site request from a browser that sends fetch metadata or an
//! `Origin`, and cannot send `Content-Type: application/json` or an
//! `Authorization` header across origins without a CORS preflight, which
//! this listener never grants.

use std::net::{IpAddr, SocketAddr};

use hyper::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use hyper::{Request, StatusCode};

use crate::config::{BearerToken, ServerConfig};

/// The admin listener's rules, from `[server]`.
#[derive(Clone, Debug, Default)]
pub struct AdminGuard {
    /// `server.admin_hosts`, lowercased: `name` (any port) or `name:port`.
    hosts: Vec<String>,
    /// `server.admin_token`: required on every route but `/healthz`.
    token: Option<BearerToken>,
}

/// Why a request was refused: its `http_refused_total` reason and a one-line
/// answer (never quoting the request: nothing is reflected).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    CrossSite,
    Origin,
    Host,
    Token,
    ContentType,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::CrossSite => "admin_cross_site",
            Refusal::Origin => "admin_origin",
            Refusal::Host => "admin_host",
            Refusal::Token => "admin_token",
            Refusal::ContentType => "admin_content_type",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Token => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::CrossSite => "forbidden: a cross-site request (Sec-Fetch-Site) cannot use the admin listener\n",
            Refusal::Origin => "forbidden: the Origin is not this listener; pages cannot use the admin listener\n",
            Refusal::Host => "forbidden: the Host is not this listener's address; add the name to server.admin_hosts\n",
            Refusal::Token => "unauthorized: send Authorization: Bearer <server.admin_token>\n",
            Refusal::ContentType => "forbidden: POST /-/reload needs Content-Type: application/json (or the admin token)\n",
        }
    }
}

impl AdminGuard {
    pub fn new(s: &ServerConfig) -> AdminGuard {
        AdminGuard {
            hosts: s
                .admin_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            token: s.admin_token.clone(),
        }
    }

    /// Checks a request that reached the admin listener at `local` (the
    /// address the client connected to). `health` is `/healthz`, which a
    /// probe without the token must still reach; `reload` is `POST /-/reload`.
    pub fn check<B>(
        &self,
        req: &Request<B>,
        local: SocketAddr,
        health: bool,
        reload: bool,
    ) -> Result<(), Refusal> {
        let h = req.headers();
        if h.get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
        {
            return Err(Refusal::CrossSite);
        }
        if let Some(origin) = h.get(ORIGIN) {
            let ours = origin
                .to_str()
                .ok()
                .and_then(origin_authority)
                .is_some_and(|(host, port)| self.is_ours(&host, Some(port), local));
            if !ours {
                return Err(Refusal::Origin);
            }
        }
        // An absolute-form target names a host too: both must be ours.
        let target_ok = req
            .uri()
            .authority()
            .is_none_or(|a| self.authority_ok(a.as_str(), local));
        let host_ok = header_str(h, HOST).is_some_and(|v| self.authority_ok(v, local));
        if !(target_ok && host_ok) {
            return Err(Refusal::Host);
        }
        match &self.token {
            Some(token) if !health && !bearer(h).is_some_and(|t| token.matches(t)) => {
                Err(Refusal::Token)
            }
            None if reload && !is_json(h) => Err(Refusal::ContentType),
            _ => Ok(()),
        }
    }

    /// `host[:port]` as sent in `Host`.
    fn authority_ok(&self, authority: &str, local: SocketAddr) -> bool {
        let (host, port) = split_authority(authority);
        match port {
            Some(Ok(p)) => self.is_ours(host, Some(p), local),
            Some(Err(())) => false,
            None => self.is_ours(host, None, local),
        }
    }

    /// Whether `host` (and `port`, 80 when absent) is this listener: the
    /// address the client connected to, `localhost` on loopback, or a
    /// configured name.
    fn is_ours(&self, host: &str, port: Option<u16>, local: SocketAddr) -> bool {
        let host = host.to_ascii_lowercase();
        let port_is_local = port.unwrap_or(80) == local.port();
        let local_ip = local.ip().to_canonical();
        let own = match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => ip.to_canonical() == local_ip,
            Err(_) => host == "localhost" && local_ip.is_loopback(),
        };
        if own && port_is_local {
            return true;
        }
        self.hosts.iter().any(|entry| match split_authority(entry) {
            (name, None) => name == host,
            (name, Some(Ok(p))) => name == host && Some(p) == port,
            (_, Some(Err(()))) => false,
        })
    }
}

fn header_str(h: &HeaderMap, name: hyper::header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `host` and its port (`Err` when not a number) from `host[:port]` or
/// `[v6][:port]`.
fn split_authority(a: &str) -> (&str, Option<Result<u16, ()>>) {
    let (host, port) = if a.starts_with('[') {
        match a.find(']') {
            Some(end) => (&a[..=end], a[end + 1..].strip_prefix(':')),
            None => (a, None),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    (host, port.map(|p| p.parse::<u16>().map_err(|_| ())))
}

/// `scheme://host[:port]` as (host, port), the port by scheme when absent;
/// `null` and anything else is None.
fn origin_authority(origin: &str) -> Option<(String, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    match split_authority(rest) {
        (host, None) => Some((host.to_string(), default)),
        (host, Some(Ok(p))) => Some((host.to_string(), p)),
        (_, Some(Err(()))) => None,
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(h: &HeaderMap) -> Option<&[u8]> {
    let v = h.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

/// `Content-Type: application/json`, parameters allowed.
fn is_json(h: &HeaderMap) -> bool {
    header_str(h, CONTENT_TYPE).is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(hosts: &[&str], token: Option<&str>) -> AdminGuard {
        AdminGuard::new(&ServerConfig {
            admin_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            admin_token: token.map(|t| BearerToken::try_from(t.to_string()).unwrap()),
            ..Default::default()
        })
    }

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::post("/-/reload");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    }

    const LOCAL: &str = "127.0.0.1:9090";
    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");

    fn check(g: &AdminGuard, headers: &[(&str, &str)]) -> Result<(), Refusal> {
        g.check(&req(headers), LOCAL.parse().unwrap(), false, true)
    }

    #[test]
    fn only_our_own_hosts_pass() {
        let g = guard(&["pixeld-admin.example", "pixeld-0.pixeld:9443"], None);
        for host in [
            "127.0.0.1:9090",
            "localhost:9090",
            "LOCALHOST:9090",
            "pixeld-admin.example",
            "pixeld-admin.example:1234",
            "pixeld-0.pixeld:9443",
        ] {
            assert_eq!(check(&g, &[("host", host), JSON]), Ok(()), "{host}");
        }
        for host in [
            "evil.example:9090",
            "127.0.0.1:9091",
            "127.0.0.1",
            "127.0.0.2:9090",
            "localhost.evil.example:9090",
            "pixeld-0.pixeld:9090",
            "127.0.0.1:x",
            "",
        ] {
            assert_eq!(
                check(&g, &[("host", host), JSON]),
                Err(Refusal::Host),
                "{host}"
            );
        }
        assert_eq!(check(&g, &[JSON]), Err(Refusal::Host), "no Host at all");
        let v6 = g.check(
            &req(&[("host", "[::1]:9090"), JSON]),
            "[::1]:9090".parse().unwrap(),
            false,
            true,
        );
        assert_eq!(v6, Ok(()));
    }

    #[test]
    fn pages_are_refused_by_fetch_metadata_or_origin() {
        let g = guard(&[], None);
        let host = ("host", LOCAL);
        assert_eq!(
            check(&g, &[host, JSON, ("sec-fetch-site", "cross-site")]),
            Err(Refusal::CrossSite)
        );
        for origin in [
            "https://evil.example",
            "http://localhost:3000",
            "null",
            "http://127.0.0.1:9091",
        ] {
            assert_eq!(
                check(&g, &[host, JSON, ("origin", origin)]),
                Err(Refusal::Origin),
                "{origin}"
            );
        }
        assert_eq!(
            check(&g, &[host, JSON, ("origin", "http://127.0.0.1:9090")]),
            Ok(())
        );
        assert_eq!(
            check(&g, &[host, JSON, ("sec-fetch-site", "same-origin")]),
            Ok(())
        );
    }

    #[test]
    fn a_reload_needs_json_or_the_token_and_the_token_guards_all_but_healthz() {
        let host = ("host", LOCAL);
        let open = guard(&[], None);
        assert_eq!(check(&open, &[host]), Err(Refusal::ContentType));
        assert_eq!(
            check(&open, &[host, ("content-type", "text/plain")]),
            Err(Refusal::ContentType)
        );
        assert_eq!(check(&open, &[host, JSON]), Ok(()));
        let token = "0123456789abcdef0123";
        let locked = guard(&[], Some(token));
        let auth = format!("Bearer {token}");
        assert_eq!(check(&locked, &[host, JSON]), Err(Refusal::Token));
        assert_eq!(
            check(
                &locked,
                &[host, ("authorization", "Bearer 0123456789abcdef")]
            ),
            Err(Refusal::Token)
        );
        assert_eq!(check(&locked, &[host, ("authorization", &auth)]), Ok(()));
        let local = LOCAL.parse().unwrap();
        let metrics = Request::get("/metrics")
            .header("host", LOCAL)
            .body(())
            .unwrap();
        assert_eq!(
            locked.check(&metrics, local, false, false),
            Err(Refusal::Token)
        );
        assert_eq!(
            locked.check(&metrics, local, true, false),
            Ok(()),
            "/healthz"
        );
        assert_eq!(open.check(&metrics, local, false, false), Ok(()));
    }
}
