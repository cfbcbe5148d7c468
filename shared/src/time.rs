//! Time as the API shows it: RFC 3339 UTC strings from Unix milliseconds.
//! Hand-written (a few lines of civil-calendar arithmetic) to keep a date
//! library off the hot path's dependency tree; tested against known dates.

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-11-26T01:28:44.123Z` for the given Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let mut out = Vec::with_capacity(24);
    push_rfc3339(&mut out, ms);
    String::from_utf8(out).expect("the formatter writes ASCII")
}

/// Appends [`rfc3339`] of `ms` to `out` without formatting machinery or an
/// allocation of its own: every answer that carries a time (sessions,
/// tokens, limits, anti-ATO) writes one or more, and `format!` was 1–2 % of
/// an anti-ATO answer's CPU. From 1970 on (every time an engine writes)
/// it takes [`rfc3339_bytes`]; years 0 to 1969 are written digit by digit;
/// others, which no stored time has, take `format!`. Tested against
/// `chrono` and the `format!` path.
pub fn push_rfc3339(out: &mut Vec<u8>, ms: i64) {
    if (0..FAST_UNTIL_MS).contains(&ms) {
        out.extend_from_slice(&rfc3339_bytes(ms as u64));
        return;
    }
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000) as u32;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    if !(0..=9999).contains(&y) {
        out.extend_from_slice(rfc3339_formatted(ms).as_bytes());
        return;
    }
    let y = y as u32;
    let dd = |v: u32| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
    let [y0, y1] = dd(y / 100);
    let [y2, y3] = dd(y);
    let [m0, m1] = dd(m);
    let [d0, d1] = dd(d);
    let [h0, h1] = dd(sod / 3600);
    let [n0, n1] = dd(sod / 60 % 60);
    let [s0, s1] = dd(sod % 60);
    let [f0, f1] = dd(millis / 10);
    let f2 = b'0' + (millis % 10) as u8;
    out.extend_from_slice(&[
        y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1, b'T', h0, h1, b':', n0, n1, b':', s0, s1, b'.',
        f0, f1, f2, b'Z',
    ]);
}

/// The first millisecond of year 10000: instants from 1970 up to it take
/// [`rfc3339_bytes`].
const FAST_UNTIL_MS: i64 = 253_402_300_800_000;

/// The two digits of every number below 100, for [`rfc3339_bytes`].
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// [`push_rfc3339`] for 1970 to 9999, in unsigned arithmetic: every answer
/// that carries a time writes one to three of these (session-verify three),
/// and the signed path's Euclidean divisions and digit-by-digit division
/// were 2 % of session-verify's worker time in a `perf` profile
/// (BENCHMARKS.md, "Times in answers"). Division by constants only, and the
/// digits two at a time from a table. Tested against the signed path,
/// `format!` and `chrono`.
fn rfc3339_bytes(ms: u64) -> [u8; 24] {
    let pair = |v: u32| {
        let i = (v as usize % 100) * 2;
        [DIGIT_PAIRS[i], DIGIT_PAIRS[i + 1]]
    };
    let secs = ms / 1000;
    let millis = (ms - secs * 1000) as u32;
    let days = secs / 86_400;
    let sod = (secs - days * 86_400) as u32;
    let (y, m, d) = civil_from_days_unsigned(days as u32);
    let h = sod / 3600;
    let rest = sod - h * 3600;
    let min = rest / 60;
    let [y0, y1] = pair(y / 100);
    let [y2, y3] = pair(y % 100);
    let [m0, m1] = pair(m);
    let [d0, d1] = pair(d);
    let [h0, h1] = pair(h);
    let [n0, n1] = pair(min);
    let [s0, s1] = pair(rest - min * 60);
    let [f1, f2] = pair(millis % 100);
    [
        y0,
        y1,
        y2,
        y3,
        b'-',
        m0,
        m1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        n0,
        n1,
        b':',
        s0,
        s1,
        b'.',
        b'0' + (millis / 100) as u8,
        f1,
        f2,
        b'Z',
    ]
}

/// [`civil_from_days`] for days on or after 1970-01-01 (and before about
/// year 11 700, where `days + 719 468` would leave `u32`), so every
/// division is unsigned by a constant.
fn civil_from_days_unsigned(days: u32) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// [`rfc3339`] through `format!`: the path for years outside 0 to 9999, and
/// the reference the digit-by-digit writer is tested against.
fn rfc3339_formatted(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Unix milliseconds of an RFC 3339 date-time as clients send it
/// (`2026-11-26T01:28:44Z`, `2026-11-26T01:28:44.123+01:00`; `t` or a space
/// for `T`, `z` for `Z`; fractions past milliseconds are cut). `None` for
/// anything else, including impossible dates (`2026-02-30`) and years
/// outside 0000-9999, so a caller can answer which field is wrong.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter().all(u8::is_ascii_digit).then(|| {
            part.iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
        })
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || d < 1 || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d > month_days[(mo - 1) as usize] {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Howard Hinnant's `days_from_civil`: (y, m, d) → days since 1970-01-01.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (y, m, d).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_back_what_it_writes_and_refuses_the_rest() {
        let mut t = -62_135_596_800_000i64; // 0001-01-01
        while t < 253_402_300_799_000 {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
            t += 7_919_999_999_937; // about 250 years, odd millis
        }
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("1969-12-31T23:30:00-00:30"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01t00:00:01.5z"), Some(1_500));
        assert_eq!(parse_rfc3339("1970-01-01 00:00:00.123456Z"), Some(123));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        for bad in [
            "",
            "1700000000000",
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00Zjunk",
            "1900-02-29T00:00:00Z",
            "２０２６-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_digit_writer_matches_chrono_and_format() {
        let check = |t: i64| {
            let fast = rfc3339(t);
            assert_eq!(fast, rfc3339_formatted(t), "{t}");
            if (0..FAST_UNTIL_MS).contains(&t) {
                let (y, m, d) = civil_from_days(t / 86_400_000);
                let (uy, um, ud) = civil_from_days_unsigned((t / 86_400_000) as u32);
                assert_eq!((y, m, d), (i64::from(uy), um, ud), "{t}");
            }
            if let Some(c) = chrono::DateTime::from_timestamp_millis(t) {
                if (0..=9999).contains(&chrono::Datelike::year(&c)) {
                    let want = c.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
                    assert_eq!(fast, want, "{t}");
                }
            }
        };
        // Every day from 1966 to 2034 at its first and last millisecond,
        // then pseudo-random instants from before year 0 to past 9999.
        for day in -1_500..23_000_i64 {
            check(day * 86_400_000);
            check(day * 86_400_000 - 1);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check((x % 400_000_000_000_000) as i64 - 100_000_000_000_000);
        }
        for t in [
            0,
            951_782_400_000,
            4_102_444_799_999,
            -62_167_219_200_000,
            -62_167_219_200_001,
            253_402_300_799_999,
            253_402_300_800_000,
        ] {
            check(t);
        }
        let mut out = b"x".to_vec();
        push_rfc3339(&mut out, 0);
        assert_eq!(out, b"x1970-01-01T00:00:00.000Z", "appends");
    }

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn every_day_boundary_over_years_is_monotonic_and_well_formed() {
        let mut prev = String::new();
        for day in 0..(366 * 8) {
            let s = rfc3339(day * 86_400_000 + 1_577_836_800_000);
            assert_eq!(s.len(), 24);
            assert!(s > prev, "{s} after {prev}");
            prev = s;
        }
    }
}
