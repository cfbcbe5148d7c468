//! Network address ranges, written once for both services' trusted-proxy
//! settings (`QYZAR_ENGINE_TRUSTED_PROXIES`, `QYZAR_ADMIN_TRUSTED_PROXIES`),
//! and the text of an address on hot paths ([`ip_text`]).

use std::net::IpAddr;

/// One CIDR range (`10.0.0.0/8`, `2001:db8::/32`; a bare address is a
/// single-host range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` or a bare address. The host bits must be zero
    /// (`10.0.0.1/8` is refused: it is almost always a typo for a host).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an address or CIDR range"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}` has a prefix length outside 0..={max}"))?,
        };
        let cidr = Self { net, prefix };
        if cidr.masked(net) != net {
            return Err(format!("`{s}` has host bits set below its prefix"));
        }
        Ok(cidr)
    }

    /// `ip` with the bits below this range's prefix cleared (the family is
    /// compared by [`Cidr::contains`]).
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        }
    }

    /// Whether `ip` is inside this range. IPv4-mapped IPv6 addresses
    /// (`::ffff:10.0.0.1`, what a dual-stack socket reports) count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && self.masked(ip) == self.net
    }
}

/// Parses a comma-separated list of ranges, blanks skipped.
pub fn parse_list(text: &str) -> Result<Vec<Cidr>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Cidr::parse)
        .collect()
}

/// `ip.to_string()`, with IPv4 written without the formatter: std's
/// `Display` for `Ipv4Addr` goes through `fmt` padding support and costs
/// about 1 300 instructions, ten times this (counted with
/// `deploy/instructions.sh ato`, which formats two per call). IPv6 keeps
/// std's text (its zero-run compression is not worth repeating). Tested
/// against `Display`.
pub fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut out = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
            out
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

#[cfg(test)]
mod ip_text_tests {
    use super::*;

    #[test]
    fn ip_text_is_display() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let check = |ip: IpAddr| assert_eq!(ip_text(ip), ip.to_string(), "{ip:?}");
        for special in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "100.99.9.0",
            "::1",
            "::ffff:1.2.3.4",
            "2001:db8::7",
        ] {
            check(special.parse().unwrap());
        }
        for octet in 0..=255u8 {
            check(IpAddr::V4(std::net::Ipv4Addr::new(
                octet,
                255 - octet,
                octet / 3,
                octet ^ 0x5a,
            )));
        }
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check(IpAddr::V4(std::net::Ipv4Addr::from(x as u32)));
        }
    }
}
