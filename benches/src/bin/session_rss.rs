//! Memory of the engine's session cache: fills a real
//! `qyzar_engine::sessions::SessionCache` (quick_cache with a capacity
//! bound, inline keys and packed `CachedSession` values, plus its negative
//! cache) with
//! `N` realistic sessions (default 1 000 000) and prints the process's
//! resident set (`VmRSS` from `/proc/self/status`) before and after.
//!
//! ```sh
//! cargo run --release -p qyzar-benches --bin session_rss -- 1000000
//! # the same sessions in a plain HashMap<Box<str>, Arc<Session>>: what the
//! # unpacked data costs without any cache bookkeeping
//! cargo run --release -p qyzar-benches --bin session_rss -- 1000000 hashmap
//! ```
//!
//! Target: 1M sessions in at most 512 MiB. The store behind the cache is an
//! embedded store in a temporary directory that is never written: `cache`
//! puts a session in memory only, as a batched touch does.

use std::sync::Arc;

use qyzar_benches::fixtures::session;
use qyzar_benches::session_map::session_ids;
use qyzar_engine::sessions::SessionCache;
use qyzar_store::EmbeddedStore;

/// The resident set in KiB, from `/proc/self/status`.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let plain = std::env::args().nth(2).as_deref() == Some("hashmap");
    let dir = std::env::temp_dir().join(format!("qyzar-session-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let store = Arc::new(EmbeddedStore::open(dir.join("engine.redb")).expect("embedded store"));
    // Room for every session in one project, so nothing is evicted.
    let before = rss_kib();
    let room = qyzar_engine::budget::Budget {
        total_bytes: n as u64 * 1024,
        project_bytes: n as u64 * 1024,
    };
    let cache = SessionCache::new(
        store,
        room,
        qyzar_engine::StateOptions::default().unknown_session_cache,
    );
    let mut map: std::collections::HashMap<Box<str>, Arc<qyzar_store::Session>> =
        std::collections::HashMap::new();
    const CHUNK: usize = 10_000;
    let mut done = 0;
    let mut seed = 1;
    while done < n {
        let k = CHUNK.min(n - done);
        for id in session_ids(k, seed) {
            if plain {
                map.insert(id.clone(), Arc::new(session(&id)));
            } else {
                cache.cache(session(&id));
            }
        }
        done += k;
        seed += 1;
    }
    let after = rss_kib();
    let held = if plain { map.len() as u64 } else { cache.len() };
    println!(
        "container              {}",
        if plain {
            "HashMap<Box<str>, Arc<Session>>"
        } else {
            "qyzar_engine::sessions::SessionCache (quick_cache + CachedSession)"
        }
    );
    let delta = after.saturating_sub(before);
    println!("sessions inserted      {n}");
    println!("sessions held           {held}");
    println!("VmRSS before           {:.1} MiB", mib(before));
    println!("VmRSS after            {:.1} MiB", mib(after));
    println!(
        "growth                 {:.1} MiB ({:.0} bytes/session)",
        mib(delta),
        delta as f64 * 1024.0 / n.max(1) as f64
    );
    println!(
        "target                 <= 512 MiB for 1M sessions: {}",
        if after <= 512 * 1024 {
            "met"
        } else {
            "not met"
        }
    );
    drop(cache);
    drop(map);
    let _ = std::fs::remove_dir_all(&dir);
}
