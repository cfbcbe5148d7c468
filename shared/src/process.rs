//! Process-wide settings every Qyzar binary applies first thing in `main`.

/// Turns transparent huge pages off for this process, before anything
/// allocates much. mimalloc asks the kernel for huge pages on its arenas,
/// so a fresh allocator page first touched by the embedded store's writer
/// (redb's page buffers, the allocator bitmaps it rebuilds when its file
/// grows) made the kernel zero a whole 2 MiB page inside the write path:
/// 12 % of the engine's CPU on the anti-ATO route and 30-130 ms at its
/// 99th percentile under wrk, against about 7 ms without (BENCHMARKS.md,
/// "Huge pages, one log row per commit, honest profile weights"). The
/// engine's memory is many small objects and 4 KiB store pages, where huge
/// pages buy nothing. Best effort: where the kernel has no such flag the
/// process runs as before, with a line on stderr.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("qyzar: transparent huge pages stay on ({e})");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The flag is process-wide and readable back.
    #[test]
    fn huge_pages_end_up_off() {
        super::disable_transparent_huge_pages();
        assert_eq!(
            rustix::thread::transparent_huge_pages_are_disabled().ok(),
            Some(true)
        );
    }
}
