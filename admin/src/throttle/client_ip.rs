//! The client address of a request, for per-client limits.
//!
//! The TCP peer is the client, unless the peer is a reverse proxy the
//! operator named in `QYZAR_ADMIN_TRUSTED_PROXIES` (CIDRs, comma-separated;
//! default none). Only then is `X-Forwarded-For` read, right to left: each
//! trusted proxy appends the address it saw, so the right-most entry that is
//! not itself a trusted proxy is the client. Anything left of it was written
//! by the client and proves nothing. Without the setting, the header is
//! ignored: a caller cannot pose as many clients (to dodge per-client limits)
//! or as someone else's address (to get them throttled) by writing a header.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::AppState;

pub use qyzar_shared::net::{parse_list, Cidr};

/// The client's address, for per-client limits (see the module docs). IPv6
/// clients are keyed by their /64, since one host usually holds a whole /64
/// and could otherwise rotate through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// The per-client limiter key, when the address is known.
    pub fn key(&self) -> Option<String> {
        self.0.map(|ip| match ip.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        })
    }

    /// The client behind `peer`, given the request's `X-Forwarded-For`
    /// values (in header order) and the trusted proxy ranges.
    pub fn resolve<'a>(
        peer: Option<IpAddr>,
        forwarded: impl DoubleEndedIterator<Item = &'a str>,
        trusted: &[Cidr],
    ) -> Self {
        let trusted_ip = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
        let Some(peer) = peer else {
            return ClientIp(None);
        };
        if !trusted_ip(peer) {
            return ClientIp(Some(peer));
        }
        let mut client = peer;
        // Several header lines count as one list, in order.
        for value in forwarded.rev() {
            for hop in value.rsplit(',') {
                let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                    // Garbage where a proxy should have written an address:
                    // stop at the last address we could trust.
                    return ClientIp(Some(client));
                };
                client = ip;
                if !trusted_ip(ip) {
                    return ClientIp(Some(ip));
                }
            }
        }
        ClientIp(Some(client))
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>();
        Ok(ClientIp::resolve(
            peer,
            forwarded.into_iter(),
            &state.config.trusted_proxies,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let lan = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(lan.contains(ip("10.200.1.2")));
        assert!(lan.contains(ip("::ffff:10.1.1.1")), "mapped IPv4 counts");
        assert!(!lan.contains(ip("11.0.0.1")));
        assert!(!lan.contains(ip("fd00::1")));
        let one = Cidr::parse("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::9")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        for bad in ["10.0.0.0/33", "fd00::/129", "nope", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_list(" 10.0.0.0/8 , ,::1").unwrap().len(), 2);
        assert!(parse_list("10.0.0.0/8,bad").is_err());
    }

    #[test]
    fn forwarded_for_counts_only_from_configured_proxies() {
        let xff = ["203.0.113.9, 198.51.100.4"];
        // No proxy configured: the header is ignored, even from loopback or
        // a private peer.
        for peer in ["127.0.0.1", "10.0.0.5", "192.168.1.1", "::1"] {
            assert_eq!(
                ClientIp::resolve(Some(ip(peer)), xff.into_iter(), &[]),
                ClientIp(Some(ip(peer)))
            );
        }
        let trusted = parse_list("10.0.0.0/8").unwrap();
        // From an unlisted peer: ignored.
        assert_eq!(
            ClientIp::resolve(Some(ip("192.0.2.1")), xff.into_iter(), &trusted),
            ClientIp(Some(ip("192.0.2.1")))
        );
        // From a listed proxy: the right-most entry it appended.
        assert_eq!(
            ClientIp::resolve(Some(ip("10.0.0.5")), xff.into_iter(), &trusted),
            ClientIp(Some(ip("198.51.100.4")))
        );
        // Through two trusted proxies: their own entries are skipped.
        assert_eq!(
            ClientIp::resolve(
                Some(ip("10.0.0.5")),
                ["203.0.113.9", "198.51.100.4, 10.0.0.7"].into_iter(),
                &trusted
            ),
            ClientIp(Some(ip("198.51.100.4")))
        );
        // A trusted proxy without the header: the proxy is the client.
        assert_eq!(
            ClientIp::resolve(Some(ip("10.0.0.5")), [].into_iter(), &trusted),
            ClientIp(Some(ip("10.0.0.5")))
        );
        // Garbage stops the walk at the last address written by a proxy.
        assert_eq!(
            ClientIp::resolve(
                Some(ip("10.0.0.5")),
                ["junk, 10.0.0.6"].into_iter(),
                &trusted
            ),
            ClientIp(Some(ip("10.0.0.6")))
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a = ClientIp(Some(ip("2001:db8:1:2:aaaa::1")));
        let b = ClientIp(Some(ip("2001:db8:1:2:bbbb::9")));
        assert_eq!(a.key(), b.key());
        assert_eq!(
            ClientIp(Some(ip("10.1.2.3"))).key().as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(
            ClientIp(Some(ip("::ffff:10.1.2.3"))).key().as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(ClientIp(None).key(), None);
    }
}
