//! Shared structures on the hot path, each against its baseline behind one
//! trait: the session cache's map (100k sessions), the engine's session
//! cache itself, and the rate limiter.
//!
//! Run: `cargo bench -p qyzar-benches --bench structures`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use qyzar_benches::fixtures::{self, SplitMix};
use qyzar_benches::limiters::{self, KeyedLimiter};
use qyzar_benches::session_map::{self, SessionMap};
use qyzar_store::Session;

/// Sessions held, about what one engine of a mid-sized deployment caches.
const SESSIONS: usize = 100_000;
/// Sessions of the small-cache variant, which fits the CPU caches.
const HOT: usize = 1_000;
/// Distinct rate-limit subjects walked by the limiter benches.
const SUBJECTS: usize = 10_000;
/// A quota no bench subject reaches, so every call takes the allowing
/// (and writing) path.
const PER_SECOND: u32 = 1_000_000;

/// Threads for the contended variants: every core, as under load.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// Runs `op(i)` `iters` times on each of `threads()` threads at once and
/// returns the wall time: with `Throughput::Elements(threads)` criterion then
/// reports operations per second across all cores, so lock contention shows.
fn contended(iters: u64, op: impl Fn(usize) + Sync) -> Duration {
    let n = threads();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..n {
            let op = &op;
            s.spawn(move || {
                // Threads start at different offsets so they do not walk the
                // same keys in lockstep.
                for i in 0..iters as usize {
                    op(i.wrapping_add(t * 7919));
                }
            });
        }
    });
    start.elapsed()
}

/// A pseudo-random walk over `0..n`, precomputed so the loop does no
/// arithmetic beyond an index.
fn walk(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix::new(seed);
    (0..n).map(|_| rng.below(n)).collect()
}

fn session_maps(c: &mut Criterion) {
    let ids = session_map::session_ids(SESSIONS, 1);
    let absent = session_map::session_ids(SESSIONS, 2);
    let order = walk(SESSIONS, 3);
    // The engine's own cache (below) is filled first, on a fresh heap, as
    // each map is filled in turn: none gets its values scattered over memory
    // another freed.
    let cache = session_map::engine_cache(SESSIONS);
    for id in &ids {
        cache.cache(fixtures::session(id));
    }
    let maps = session_map::all::<Session>(SESSIONS);
    for map in &maps {
        for id in &ids {
            map.insert(id.clone(), Arc::new(fixtures::session(id)));
        }
    }

    let mut g = c.benchmark_group("session_map_100k");
    for map in &maps {
        let map: &dyn SessionMap<Session> = map.as_ref();
        let mut i = 0;
        g.bench_function(format!("hit/{}", map.name()), |b| {
            b.iter(|| {
                i = (i + 1) % SESSIONS;
                map.get(black_box(&ids[order[i]]))
            })
        });
        g.bench_function(format!("miss/{}", map.name()), |b| {
            b.iter(|| {
                i = (i + 1) % SESSIONS;
                map.get(black_box(&absent[order[i]]))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("session_map_100k_all_cores");
    g.throughput(Throughput::Elements(threads() as u64));
    for map in &maps {
        let map: &dyn SessionMap<Session> = map.as_ref();
        g.bench_function(format!("hit/{}", map.name()), |b| {
            b.iter_custom(|iters| {
                contended(iters, |i| {
                    black_box(map.get(&ids[order[i % SESSIONS]]));
                })
            })
        });
    }
    g.finish();
    drop(maps);

    // The engine's `SessionCache` as it serves a hit: quick_cache with the
    // id inline in the key and the packed `CachedSession` as the value,
    // expiry re-checked on read. Same ids, same walk as above.
    let now = qyzar_engine::sessions::now_ms();
    let mut g = c.benchmark_group("session_cache_100k");
    let mut i = 0;
    g.bench_function("hit", |b| {
        b.iter(|| {
            i = (i + 1) % SESSIONS;
            cache.cached(black_box(&ids[order[i]]), now)
        })
    });
    g.bench_function("miss", |b| {
        b.iter(|| {
            i = (i + 1) % SESSIONS;
            cache.cached(black_box(&absent[order[i]]), now)
        })
    });
    g.finish();
    // The same cache holding 1 000 sessions: everything stays in the CPU
    // caches, so this is the lookup's own cost, without waiting on memory.
    let small = session_map::engine_cache(HOT);
    for id in &ids[..HOT] {
        small.cache(fixtures::session(id));
    }
    let mut g = c.benchmark_group("session_cache_1k");
    let mut k = 0;
    g.bench_function("hit", |b| {
        b.iter(|| {
            k = (k + 1) % HOT;
            small.cached(black_box(&ids[k]), now)
        })
    });
    g.finish();
    let mut g = c.benchmark_group("session_cache_100k_all_cores");
    g.throughput(Throughput::Elements(threads() as u64));
    g.bench_function("hit", |b| {
        b.iter_custom(|iters| {
            contended(iters, |i| {
                black_box(cache.cached(&ids[order[i % SESSIONS]], now));
            })
        })
    });
    g.finish();
}

fn rate_limits(c: &mut Criterion) {
    let limiter = limiters::engine_limiter();
    let one = limiters::bucket_keys(&limiter, SUBJECTS, &["ip"]);
    let three = limiters::bucket_keys(
        &limiter,
        SUBJECTS,
        &["ip", "metadata:email", "metadata:device"],
    );
    let order = walk(SUBJECTS, 4);
    let impls: [Box<dyn KeyedLimiter>; 2] = [
        Box::new(limiters::Engine::new(limiter.clone(), PER_SECOND)),
        Box::new(limiters::Governor::new(PER_SECOND)),
    ];

    let mut g = c.benchmark_group("rate_limit");
    g.bench_function("bucket_key", |b| {
        let mut i = 0u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            limiter.bucket_key(fixtures::AUDIENCE, "ip", black_box(&i.to_le_bytes()))
        })
    });
    // The engine's clock read, included in every `qyzar_gcra` decision below
    // (governor reads its own, cheaper TSC clock inside `check_key`).
    g.bench_function("now_nanos", |b| b.iter(|| limiter.now_nanos()));
    for (label, keys) in [("1_bucket", &one), ("3_buckets", &three)] {
        for l in &impls {
            let mut i = 0;
            g.bench_function(format!("{label}/{}", l.name()), |b| {
                b.iter(|| {
                    i = (i + 1) % SUBJECTS;
                    assert!(l.allow(black_box(&keys[order[i]])));
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("rate_limit_all_cores");
    g.throughput(Throughput::Elements(threads() as u64));
    for l in &impls {
        let l: &dyn KeyedLimiter = l.as_ref();
        g.bench_function(format!("1_bucket/{}", l.name()), |b| {
            b.iter_custom(|iters| {
                contended(iters, |i| {
                    black_box(l.allow(&one[order[i % SUBJECTS]]));
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, session_maps, rate_limits);
criterion_main!(benches);
