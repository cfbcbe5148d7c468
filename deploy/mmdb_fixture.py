"""Writes a tiny GeoLite2-City-shaped MaxMind DB for the engine's GeoIP
tests (engine/tests/api/geo.rs), with the `mmdb_writer` package.

    python mmdb_fixture.py OUT.mmdb

Documentation ranges only (RFC 5737 / RFC 3849), so no real address is
ever mapped:

    203.0.113.0/24  -> FR, city Paris, location 48.8566, 2.3522 (radius 20 km)
    198.51.100.0/24 -> US, city New York, location 40.7128, -74.0060 (20 km)
    2001:db8::/32   -> DE (country only, no location)
    192.0.2.0/24    -> no `country`, registered_country JP (the fallback)
    198.18.0.0/15   -> country "XYZ" (not a country code: no region)

Locations are typed as GeoIP2 City types them (`latitude`/`longitude`
double, `accuracy_radius` uint16); ranges without one are what a City
database answers for addresses it knows only the country of.

The file is written next to OUT and renamed over it, so a reader never sees
half a database.
"""

import os
import sys

from mmdb_writer import MMDBWriter, MmdbF64, MmdbU16
from netaddr import IPSet

COUNTRIES = {
    "FR": (3017382, "EU", 6255148, "Europe", "France", True),
    "US": (6252001, "NA", 6255149, "North America", "United States", False),
    "DE": (2921044, "EU", 6255148, "Europe", "Germany", True),
    "JP": (1861060, "AS", 6255147, "Asia", "Japan", False),
}


def country(code):
    geoname_id, _, _, _, name, eu = COUNTRIES[code]
    c = {"geoname_id": geoname_id, "iso_code": code, "names": {"en": name}}
    if eu:
        c["is_in_european_union"] = True
    return c


def continent(code):
    _, cont, cont_id, cont_name, _, _ = COUNTRIES[code]
    return {"code": cont, "geoname_id": cont_id, "names": {"en": cont_name}}


def record(code):
    """A record as GeoLite2-Country has it: located and registered country
    are the same here."""
    return {
        "continent": continent(code),
        "country": country(code),
        "registered_country": country(code),
    }


def city(code, name, latitude, longitude, radius_km):
    """A GeoLite2-City record: the country record plus `city` and `location`."""
    r = record(code)
    r["city"] = {"names": {"en": name}}
    r["location"] = {
        "latitude": MmdbF64(latitude),
        "longitude": MmdbF64(longitude),
        "accuracy_radius": MmdbU16(radius_km),
    }
    return r


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: mmdb_fixture.py OUT.mmdb")
    out = sys.argv[1]
    w = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoLite2-City",
        languages=["en"],
        description="Qyzar test fixture (documentation ranges only)",
    )
    w.insert_network(IPSet(["203.0.113.0/24"]), city("FR", "Paris", 48.8566, 2.3522, 20))
    w.insert_network(
        IPSet(["198.51.100.0/24"]), city("US", "New York", 40.7128, -74.0060, 20)
    )
    w.insert_network(IPSet(["2001:db8::/32"]), record("DE"))
    w.insert_network(
        IPSet(["192.0.2.0/24"]),
        {"continent": continent("JP"), "registered_country": country("JP")},
    )
    w.insert_network(
        IPSet(["198.18.0.0/15"]),
        {"country": {"iso_code": "XYZ", "names": {"en": "Nowhere"}}},
    )
    tmp = f"{out}.tmp.{os.getpid()}"
    w.to_db_file(tmp)
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
