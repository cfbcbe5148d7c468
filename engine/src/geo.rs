//! Country of an IP address from a MaxMind-format database file
//! (GeoLite2-Country, GeoIP2-Country or -City, and databases in their layout
//! such as DB-IP's "lite" ones).
//!
//! It is the fallback for deployments without a proxy that puts the
//! country in a trusted header (`QYZAR_ENGINE_REGION_HEADER`, e.g.
//! Cloudflare's `CF-IPCountry`): `QYZAR_ENGINE_GEOIP_DB` names the file,
//! which is read whole into memory at start (a country database is a few
//! MiB) so a lookup is a walk of an in-memory tree with no I/O and no lock.
//! The engine does not download or refresh the file; replacing it needs a
//! restart.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An opened country database.
pub struct Geo {
    reader: maxminddb::Reader<Vec<u8>>,
}

/// A database file that cannot be used: the engine refuses to start rather
/// than run without the regions it was configured to give.
#[derive(Debug, thiserror::Error)]
#[error("the GeoIP database {} cannot be used: {source}", path.display())]
pub struct GeoError {
    /// The file at fault.
    pub path: PathBuf,
    /// What the reader said (missing file, not a MaxMind DB, bad metadata).
    #[source]
    pub source: maxminddb::MaxMindDbError,
}

/// The part of a GeoIP2 Country/City record the engine reads; the reader
/// skips every other field without decoding it.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<Named<'a>>,
    #[serde(borrow)]
    registered_country: Option<Named<'a>>,
}

#[derive(Deserialize)]
struct Named<'a> {
    iso_code: Option<&'a str>,
}

impl Geo {
    /// Reads and checks the database at `path`.
    ///
    /// Only the header and metadata are validated here (a full `verify` walks
    /// the whole tree, seconds on a City database); records that fail to
    /// decode later give no region rather than an error.
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|source| GeoError {
            path: path.to_owned(),
            source,
        })?;
        let kind = &reader.metadata().database_type;
        // Any other layout (ASN, ISP, IPinfo's flat `country` string) opens
        // fine but never yields a country: say so once, loudly.
        if !(kind.contains("Country") || kind.contains("City")) {
            tracing::warn!(path = %path.display(), database_type = %kind, "the GeoIP database is not a Country or City database; regions may be missing");
        }
        tracing::info!(path = %path.display(), database_type = %kind, build_epoch = reader.metadata().build_epoch, "GeoIP database loaded");
        Ok(Self { reader })
    }

    /// The ISO 3166-1 alpha-2 code (upper case) of the country `ip` is in:
    /// `country.iso_code`, else the country the block is registered in
    /// (`registered_country.iso_code`, e.g. for anycast or satellite
    /// ranges). `None` when the address is not in the database, or the
    /// record has no usable code.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let found = match self.reader.lookup(lookup_key(ip)) {
            Ok(found) => found,
            // Only an IPv6 address in an IPv4-only database gets here.
            Err(e) => {
                tracing::debug!(%ip, error = %e, "GeoIP lookup failed");
                return None;
            }
        };
        let record: Record<'_> = match found.decode() {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(%ip, error = %e, "GeoIP record does not decode");
                return None;
            }
        };
        let code = |n: Option<Named<'_>>| n.and_then(|n| n.iso_code).and_then(country_code);
        code(record.country).or_else(|| code(record.registered_country))
    }

    /// The database's type as its metadata names it (e.g. `GeoLite2-Country`).
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }
}

impl fmt::Debug for Geo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.reader.metadata();
        f.debug_struct("Geo")
            .field("database_type", &m.database_type)
            .field("build_epoch", &m.build_epoch)
            .finish_non_exhaustive()
    }
}

/// The address to look up: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
/// what a dual-stack proxy may forward) is looked up as the IPv4 address,
/// where MaxMind databases keep IPv4 data.
pub fn lookup_key(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// `code` as a region when it is two ASCII letters, upper-cased: a database
/// could hold anything, and the region is stored with every session and
/// compared across logins.
pub fn country_code(code: &str) -> Option<String> {
    (code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| code.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes_are_two_letters_upper_cased() {
        assert_eq!(country_code("FR").as_deref(), Some("FR"));
        assert_eq!(country_code("fr").as_deref(), Some("FR"));
        assert_eq!(country_code("Us").as_deref(), Some("US"));
        for bad in ["", "F", "FRA", "F1", "--", "É", "F ", "EU-"] {
            assert_eq!(country_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn mapped_ipv6_is_looked_up_as_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(lookup_key(ip("::ffff:203.0.113.5")), ip("203.0.113.5"));
        assert_eq!(lookup_key(ip("203.0.113.5")), ip("203.0.113.5"));
        assert_eq!(lookup_key(ip("2001:db8::1")), ip("2001:db8::1"));
        // IPv4-compatible (`::a.b.c.d`, deprecated) is a real IPv6 address.
        assert_eq!(lookup_key(ip("::203.0.113.5")), ip("::203.0.113.5"));
    }

    #[test]
    fn a_missing_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.mmdb");
        let e = Geo::open(&path).unwrap_err().to_string();
        assert!(
            e.contains("nope.mmdb") && e.contains("cannot be used"),
            "{e}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_maxmind_db_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.mmdb");
        std::fs::write(&path, b"not a MaxMind DB, just text\n".repeat(100)).unwrap();
        let e = Geo::open(&path).unwrap_err().to_string();
        assert!(e.contains("junk.mmdb"), "{e}");
    }
}
