//! Which client a request comes from when it arrives through proxies: the
//! `X-Forwarded-For` chain, believed only as far as trusted proxies wrote it.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The proxies (`LECTERN_TRUSTED_PROXIES`) whose `X-Forwarded-For` is
/// believed. Empty: no header is, and the connection's address is the
/// client's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl FromStr for TrustedProxies {
    type Err = String;

    /// Comma-separated addresses (`10.0.0.5`, `::1`) and CIDR ranges
    /// (`10.0.0.0/8`); empty for none.
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{p:?} is neither an IP address nor a CIDR range"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    ///
    /// Each proxy appends the address it received the request from to
    /// `X-Forwarded-For`, so the chain is read from the right: past the
    /// trusted proxies, the first address is the client; anything to its
    /// left was written by the client itself and is ignored. A peer that is
    /// not a trusted proxy is the client, whatever it sends.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let chain: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in chain.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // Not written by a proxy we trust: stop at the last hop
                // that was.
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

/// An address as proxies write it: bare, or with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(
                "x-forwarded-for",
                HeaderValue::from_str(v).expect("a header value"),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn parses_addresses_and_ranges_and_refuses_anything_else() {
        let t: TrustedProxies = "10.0.0.0/8, 192.168.1.5,::1".parse().expect("valid");
        assert_eq!(t.0.len(), 3);
        assert!(t.trusts(ip("10.1.2.3")) && t.trusts(ip("192.168.1.5")) && t.trusts(ip("::1")));
        assert!(!t.trusts(ip("192.168.1.6")));
        assert_eq!("".parse::<TrustedProxies>(), Ok(TrustedProxies::default()));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.example".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let t: TrustedProxies = "10.0.0.0/8".parse().expect("valid");
        let peer = ip("10.0.0.1");
        // One proxy in front: it appended the client.
        assert_eq!(
            t.client_ip(peer, &headers(&["203.0.113.7"])),
            ip("203.0.113.7")
        );
        // The client forged an entry; the proxy appended the real address.
        assert_eq!(
            t.client_ip(peer, &headers(&["198.51.100.1, 203.0.113.7"])),
            ip("203.0.113.7")
        );
        // Two trusted proxies, over two header lines, one with a port.
        assert_eq!(
            t.client_ip(peer, &headers(&["203.0.113.7:5555", "10.0.0.9"])),
            ip("203.0.113.7")
        );
        // Garbage to the right of anything untrusted: the last trusted hop.
        assert_eq!(t.client_ip(peer, &headers(&["203.0.113.7, unknown"])), peer);
        // No header: the proxy itself.
        assert_eq!(t.client_ip(peer, &headers(&[])), peer);
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let t: TrustedProxies = "10.0.0.0/8".parse().expect("valid");
        let peer = ip("198.51.100.9");
        assert_eq!(t.client_ip(peer, &headers(&["203.0.113.7"])), peer);
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(ip("10.0.0.1"), &headers(&["203.0.113.7"])),
            ip("10.0.0.1")
        );
    }
}
