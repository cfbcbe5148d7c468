//! Who is calling: the client's address, and whether the forwarding headers
//! (`X-Forwarded-For`, the region header such as `CF-IPCountry`) may be
//! believed.
//!
//! Both headers are written by whoever opens the connection, so they are
//! only as trustworthy as the peer: a browser talking to the engine directly
//! can put any address and any country in them, choosing its own rate-limit
//! key (a fresh bucket per call) and its own region. They are therefore read
//! only when the socket peer is inside a configured proxy range
//! (`QYZAR_ENGINE_TRUSTED_PROXIES`); otherwise the client is the socket
//! address, and the region comes from the GeoIP database alone.
//!
//! Behind trusted proxies the client is the **right-most hop that is not a
//! trusted proxy**: each proxy appends the address it received the request
//! from, so hops to the right of the first untrusted one were written by our
//! proxies, and everything to its left was written by the client (forgeable).
//! Taking the first hop, as the engine used to, takes the client's word.
//!
//! # One choke point
//! The router calls [`normalise`] on every request before any route sees
//! it: it returns the [`Client`] resolved here, which the router hands to
//! the routes that need the caller's address, and it removes
//! `X-Forwarded-For` and, unless a trusted proxy sent it, the region header.
//! So every route (present and future) reads the headers as they are and
//! cannot trust a client by mistake. (The resolved address used to be
//! written back into `X-Forwarded-For` as text and parsed again by the one
//! route that reads it: formatting and a header insert on every request of
//! every route, about 2.5 % of a session-verify's CPU.)

use std::net::{IpAddr, SocketAddr};

use crate::request::Headers;

/// The socket address of the connection a request came in on, handed to
/// the router by the server (`server.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

pub use qyzar_shared::net::Cidr;

/// The proxy ranges whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// No proxy is trusted: every client is its socket address.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// Loopback only (`127.0.0.0/8`, `::1`): `qyzar dev`, where the proxy, if
    /// any, runs on the same machine.
    pub fn loopback() -> Self {
        Self(qyzar_shared::net::parse_list("127.0.0.0/8, ::1").expect("loopback ranges parse"))
    }

    /// Parses a comma-separated list of CIDR ranges or addresses (the
    /// `QYZAR_ENGINE_TRUSTED_PROXIES` format); empty items are skipped.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// The calling client as far as the engine can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the socket peer, or behind trusted proxies the
    /// right-most untrusted `X-Forwarded-For` hop. `None` only when the
    /// request did not come through the server (no [`PeerAddr`]).
    pub ip: Option<IpAddr>,
    /// Whether the peer is a trusted proxy, so its region header is believed.
    pub via_trusted_proxy: bool,
}

impl Client {
    /// Resolves the client of a request from its peer and headers.
    pub fn resolve(
        trusted: &TrustedProxies,
        peer: Option<PeerAddr>,
        headers: &Headers<'_>,
    ) -> Self {
        let Some(peer) = peer.map(|p| p.0.ip().to_canonical()) else {
            return Self {
                ip: None,
                via_trusted_proxy: false,
            };
        };
        if !trusted.contains(peer) {
            return Self {
                ip: Some(peer),
                via_trusted_proxy: false,
            };
        }
        // Every X-Forwarded-For line in order, then walked right to left:
        // the first hop that is not one of our proxies is the client. A hop
        // that does not parse stops the walk at the last address known good.
        let mut client = peer;
        let hops: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip.to_canonical();
                    if !trusted.contains(client) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        Self {
            ip: Some(client),
            via_trusted_proxy: true,
        }
    }
}

static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// Resolves the client of a request from `peer` and strips the forwarding
/// headers so that routes can read the rest as they are: `X-Forwarded-For`
/// is removed (the resolved address is the returned [`Client`]), and
/// `region_header` unless the peer is a trusted proxy.
pub fn normalise(
    headers: &mut Headers<'_>,
    peer: Option<PeerAddr>,
    trusted: &TrustedProxies,
    region_header: Option<&http::HeaderName>,
) -> Client {
    let client = Client::resolve(trusted, peer, headers);
    headers.hide(&X_FORWARDED_FOR);
    if !client.via_trusted_proxy {
        if let Some(name) = region_header {
            headers.hide(name);
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn peer(s: &str) -> Option<PeerAddr> {
        Some(PeerAddr(SocketAddr::new(s.parse().unwrap(), 40_000)))
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.255.1.2".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()), "mapped v4");
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let c = Cidr::parse(" 2001:db8::/32 ").unwrap();
        assert!(c.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!c.contains("2001:db9::1".parse().unwrap()));
        let host = Cidr::parse("192.0.2.7").unwrap();
        assert!(host.contains("192.0.2.7".parse().unwrap()));
        assert!(!host.contains("192.0.2.8".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(Cidr::parse("::/0")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/x",
            "nope",
            "",
            "10.0.0.0/-1",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        let t = TrustedProxies::parse("10.0.0.0/8, ,192.168.1.1").unwrap();
        assert!(t.contains("192.168.1.1".parse().unwrap()));
        assert!(TrustedProxies::parse("10.0.0.0/8,bad").is_err());
        assert_eq!(TrustedProxies::parse("").unwrap(), TrustedProxies::none());
        assert!(TrustedProxies::loopback().contains("127.0.0.1".parse().unwrap()));
        assert!(TrustedProxies::loopback().contains("::1".parse().unwrap()));
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_peers() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let h = headers(&["198.51.100.1, 203.0.113.5"]);
        // An untrusted peer: the socket address, headers ignored.
        let c = Client::resolve(&trusted, peer("192.0.2.1"), &Headers::map(&h));
        assert_eq!(
            (c.ip, c.via_trusted_proxy),
            (Some("192.0.2.1".parse().unwrap()), false)
        );
        // A trusted peer: the right-most untrusted hop, not the first.
        let c = Client::resolve(&trusted, peer("10.0.0.2"), &Headers::map(&h));
        assert_eq!(
            (c.ip, c.via_trusted_proxy),
            (Some("203.0.113.5".parse().unwrap()), true)
        );
        // Our own proxies on the right are skipped, across header lines.
        let h = headers(&["6.6.6.6, 203.0.113.5", "10.1.1.1 , 10.2.2.2"]);
        let c = Client::resolve(&trusted, peer("10.0.0.2"), &Headers::map(&h));
        assert_eq!(c.ip, Some("203.0.113.5".parse().unwrap()));
        // All hops trusted: the left-most one; no header: the peer.
        let c = Client::resolve(
            &trusted,
            peer("10.0.0.2"),
            &Headers::map(&headers(&["10.9.9.9"])),
        );
        assert_eq!(c.ip, Some("10.9.9.9".parse().unwrap()));
        let c = Client::resolve(&trusted, peer("10.0.0.2"), &Headers::map(&HeaderMap::new()));
        assert_eq!(c.ip, Some("10.0.0.2".parse().unwrap()));
        // A line that is not text is skipped, as if absent.
        let mut h = headers(&["203.0.113.5"]);
        h.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff6.6.6.6").unwrap(),
        );
        h.append("x-forwarded-for", "10.1.1.1".parse().unwrap());
        let c = Client::resolve(&trusted, peer("10.0.0.2"), &Headers::map(&h));
        assert_eq!(c.ip, Some("203.0.113.5".parse().unwrap()));
        // Garbage stops the walk at the last good address.
        let h = headers(&["1.2.3.4, junk, 10.3.3.3"]);
        let c = Client::resolve(&trusted, peer("10.0.0.2"), &Headers::map(&h));
        assert_eq!(c.ip, Some("10.3.3.3".parse().unwrap()));
        // No peer (not through the server): nothing known.
        assert_eq!(
            Client::resolve(&trusted, None, &Headers::map(&h)),
            Client {
                ip: None,
                via_trusted_proxy: false
            }
        );
        // Nothing trusted: always the socket.
        let c = Client::resolve(&TrustedProxies::none(), peer("10.0.0.2"), &Headers::map(&h));
        assert_eq!(c.ip, Some("10.0.0.2".parse().unwrap()));
        // A mapped peer address is read as IPv4.
        let c = Client::resolve(
            &trusted,
            peer("::ffff:10.0.0.2"),
            &Headers::map(&headers(&["203.0.113.5"])),
        );
        assert_eq!(c.ip, Some("203.0.113.5".parse().unwrap()));
    }

    #[test]
    fn normalised_headers_carry_only_what_is_believed() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let region = http::HeaderName::from_static("cf-ipcountry");
        let spoofed = || {
            let mut h = headers(&["203.0.113.5, 198.51.100.1"]);
            h.insert("cf-ipcountry", "US".parse().unwrap());
            h
        };
        let (xff, cf) = (&X_FORWARDED_FOR, &region);
        let h = spoofed();
        let mut v = Headers::map(&h);
        let c = normalise(&mut v, peer("192.0.2.1"), &trusted, Some(&region));
        assert_eq!(c.ip, Some("192.0.2.1".parse().unwrap()));
        assert!(v.get(xff).is_none(), "no route reads it");
        assert!(v.get(cf).is_none(), "untrusted region dropped");
        let mut v = Headers::map(&h);
        let c = normalise(&mut v, peer("10.0.0.9"), &trusted, Some(&region));
        assert_eq!(c.ip, Some("198.51.100.1".parse().unwrap()));
        assert!(v.get(xff).is_none());
        assert_eq!(v.get(cf).unwrap().as_bytes(), b"US");
        let mut v = Headers::map(&h);
        let c = normalise(&mut v, None, &trusted, Some(&region));
        assert_eq!(c.ip, None);
        assert!(v.get(xff).is_none() && v.get(cf).is_none());
        // The same on the fast path's fields, where a hidden field is
        // still in the buffer.
        let buf = b"X-Forwarded-For: 203.0.113.5, 198.51.100.1\r\nCF-IPCountry: US\r\n";
        let fields = [(0, 15, 17, 25), (44, 12, 58, 2)];
        let mut v = Headers::raw(buf, &fields);
        assert_eq!(v.get(cf).unwrap().as_bytes(), b"US");
        let c = normalise(&mut v, peer("192.0.2.1"), &trusted, Some(&region));
        assert_eq!(c.ip, Some("192.0.2.1".parse().unwrap()));
        assert!(v.get(xff).is_none() && v.get(cf).is_none());
        let mut v = Headers::raw(buf, &fields);
        let c = normalise(&mut v, peer("10.0.0.9"), &trusted, Some(&region));
        assert_eq!(c.ip, Some("198.51.100.1".parse().unwrap()));
        assert!(v.get(xff).is_none());
        assert_eq!(v.get(cf).unwrap().as_bytes(), b"US");
    }
}
