//! Country, and with a City database coordinates, of an IP address from a
//! MaxMind-format database file (GeoLite2-Country or -City, GeoIP2-Country
//! or -City, and databases in their layout such as DB-IP's "lite" ones).
//!
//! It is the fallback for deployments without a proxy that puts the
//! country in a trusted header (`QYZAR_ENGINE_REGION_HEADER`, e.g.
//! Cloudflare's `CF-IPCountry`): `QYZAR_ENGINE_GEOIP_DB` names the file,
//! which is read whole into memory at start (a country database is a few
//! MiB, a City one some tens of MiB) so a lookup is a walk of an in-memory tree with no I/O and no lock.
//! The engine does not download or refresh the file; replacing it needs a
//! restart.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use qyzar_store::profile::GeoPoint;
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

/// [`Record`] plus a City database's `location`, decoded in the same pass.
#[derive(Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow)]
    country: Option<Named<'a>>,
    #[serde(borrow)]
    registered_country: Option<Named<'a>>,
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Named<'a> {
    iso_code: Option<&'a str>,
}

/// GeoIP2 City's `location`: degrees (WGS 84) and the radius in km around
/// them within which the address is, by the vendor's estimate.
#[derive(Deserialize)]
struct Location {
    latitude: Option<Number>,
    longitude: Option<Number>,
    accuracy_radius: Option<Number>,
}

/// Any numeric MaxMind value as `f64`. The decoder matches types strictly
/// (a `u32` field refuses the `uint16` GeoIP2 writes `accuracy_radius` as,
/// an `f64` one a `float`), and writers differ, so the number is taken in
/// whatever type the file holds.
struct Number(f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Number;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Number, E> {
                Ok(Number(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Number, E> {
                Ok(Number(v as f64))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Half the Earth's circumference: no accuracy radius is wider.
const MAX_RADIUS_KM: f64 = 20_038.0;

/// Radius assumed when a database gives coordinates without an accuracy
/// radius: wide, as MaxMind's own city-level radii often are, because a
/// point taken as sharper than it is would make ordinary travel look
/// impossible.
pub const DEFAULT_RADIUS_KM: u32 = 100;

/// What one lookup found: either part may be missing (a Country database
/// has no coordinates; a record may lack a usable country code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// ISO 3166-1 alpha-2, upper case, as [`Geo::country`] answers it.
    pub country: Option<String>,
    /// The record's coordinates, when it has usable ones.
    pub point: Option<GeoPoint>,
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
        let record: Record<'_> = self.record(ip)?;
        best_country(record.country, record.registered_country)
    }

    /// The country (as [`Geo::country`]) and the coordinates of `ip`, from
    /// one walk of the tree and one decode of its record. `None` when the
    /// address is not in the database; a found record with neither part
    /// usable is `Some` with both `None`.
    pub fn locate(&self, ip: IpAddr) -> Option<Located> {
        let record: CityRecord<'_> = self.record(ip)?;
        Some(Located {
            country: best_country(record.country, record.registered_country),
            point: record.location.and_then(geo_point),
        })
    }

    /// The record of `ip` decoded as `T` (serde skips every field `T` does
    /// not name), or `None` when there is none or it does not decode.
    fn record<'a, T: Deserialize<'a>>(&'a self, ip: IpAddr) -> Option<T> {
        let found = match self.reader.lookup(lookup_key(ip)) {
            Ok(found) => found,
            // Only an IPv6 address in an IPv4-only database gets here.
            Err(e) => {
                tracing::debug!(%ip, error = %e, "GeoIP lookup failed");
                return None;
            }
        };
        match found.decode() {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%ip, error = %e, "GeoIP record does not decode");
                None
            }
        }
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

/// `country.iso_code`, else `registered_country.iso_code` (anycast or
/// satellite ranges), when usable.
fn best_country(country: Option<Named<'_>>, registered: Option<Named<'_>>) -> Option<String> {
    let code = |n: Option<Named<'_>>| n.and_then(|n| n.iso_code).and_then(country_code);
    code(country).or_else(|| code(registered))
}

/// A database location as a [`GeoPoint`], when it is one: both coordinates
/// present, finite and in range. `(0, 0)` is refused too: it is in the
/// Gulf of Guinea, where no network is, and is what a writer puts for
/// "unknown". The radius defaults to [`DEFAULT_RADIUS_KM`].
fn geo_point(l: Location) -> Option<GeoPoint> {
    let (lat, lon) = (l.latitude?.0, l.longitude?.0);
    let usable = lat.is_finite()
        && lon.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon)
        && !(lat == 0.0 && lon == 0.0);
    // In range, so × 10 000 fits an i32 (at most 1 800 000) and `as` is exact
    // after rounding.
    usable.then(|| GeoPoint {
        lat_e4: (lat * 10_000.0).round() as i32,
        lon_e4: (lon * 10_000.0).round() as i32,
        radius_km: l
            .accuracy_radius
            .map(|r| r.0)
            .filter(|r| r.is_finite() && *r >= 0.0)
            // Clamped, so the `as` conversion is in range.
            .map_or(DEFAULT_RADIUS_KM, |r| r.min(MAX_RADIUS_KM).round() as u32),
    })
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
    fn locations_become_points_only_when_usable() {
        let at = |lat: Option<f64>, lon: Option<f64>, r: Option<f64>| Location {
            latitude: lat.map(Number),
            longitude: lon.map(Number),
            accuracy_radius: r.map(Number),
        };
        assert_eq!(
            geo_point(at(Some(48.8566), Some(2.3522), Some(20.0))),
            Some(GeoPoint {
                lat_e4: 488_566,
                lon_e4: 23_522,
                radius_km: 20
            })
        );
        assert_eq!(
            geo_point(at(Some(-33.86785), Some(151.20732), None)),
            Some(GeoPoint {
                lat_e4: -338_679,
                lon_e4: 1_512_073,
                radius_km: DEFAULT_RADIUS_KM
            })
        );
        assert_eq!(
            geo_point(at(Some(90.0), Some(-180.0), Some(1.0))).map(|p| (p.lat_e4, p.lon_e4)),
            Some((900_000, -1_800_000))
        );
        // A radius that is not one falls back; a huge one is clamped.
        let radius = |r| geo_point(at(Some(1.0), Some(1.0), Some(r))).map(|p| p.radius_km);
        assert_eq!(radius(-3.0), Some(DEFAULT_RADIUS_KM));
        assert_eq!(radius(f64::NAN), Some(DEFAULT_RADIUS_KM));
        assert_eq!(radius(1e12), Some(20_038));
        for (lat, lon) in [
            (None, Some(2.0)),
            (Some(48.0), None),
            (Some(0.0), Some(0.0)),
            (Some(90.5), Some(2.0)),
            (Some(48.0), Some(-180.01)),
            (Some(f64::NAN), Some(2.0)),
            (Some(48.0), Some(f64::INFINITY)),
        ] {
            assert_eq!(geo_point(at(lat, lon, Some(5.0))), None, "{lat:?} {lon:?}");
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
