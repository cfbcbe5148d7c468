//! The CPU time a server process spends, read from `/proc`, for the
//! server's CPU per answer in `compare` and `engine-compare`.
//!
//! Why: on the VM these benchmarks run on, anti-ATO (which waits for a
//! disk sync) served 66 586–77 346 answers/s in four neighbouring runs of
//! one build while its CPU per answer moved by 7 % (BENCHMARKS.md, "CPU
//! per answer, and what this VM does to a tail"): requests/s follows how
//! long the core sits idle waiting for the disk, CPU per answer follows
//! the route's own work. It also shows when the machine itself ran slower
//! for a round: the baseline's CPU per answer then rises with it.
//!
//! Each thread's `/proc/PID/task/TID/schedstat` begins with the nanoseconds
//! it has run, counted by the scheduler (not sampled on ticks, as `stat`'s
//! `utime` and `stime` are). A thread that exits between two readings takes
//! its time with it, so a difference is at least what the threads alive at
//! both readings ran; the servers measured here keep their threads.

use std::time::Duration;

/// Time the threads of process `pid` have run so far; `None` when it cannot
/// be read (not Linux, no such process).
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns: u64 = 0;
    let mut any = false;
    for t in tasks.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) else {
            // The thread exited after the listing.
            continue;
        };
        if let Some(v) = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            ns = ns.saturating_add(v);
            any = true;
        }
    }
    any.then(|| Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::process_cpu;
    use std::time::{Duration, Instant};

    /// A busy child process's reading grows. A child, not this process:
    /// the harness's other tests start and end threads here, and an ended
    /// thread takes its time out of the sum. The loop waits until the
    /// reading has grown by 20 ms: on a busy machine that takes longer,
    /// never forever; a reading that does not move fails at the deadline
    /// (a bound on a broken reading, not on the machine's speed).
    #[test]
    fn a_busy_process_shows_in_the_reading() {
        if process_cpu(std::process::id()).is_none() {
            // No /proc (not Linux): nothing to check.
            return;
        }
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = Duration::ZERO;
        let grown = loop {
            std::thread::sleep(Duration::from_millis(10));
            let now = process_cpu(pid).expect("the child's reading");
            assert!(
                now >= last,
                "a one-thread reading went back: {last:?} then {now:?}"
            );
            last = now;
            if now >= Duration::from_millis(20) || Instant::now() >= deadline {
                break now;
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            grown >= Duration::from_millis(20),
            "30 s of spinning read as {grown:?}"
        );
    }

    #[test]
    fn an_unknown_process_reads_nothing() {
        assert_eq!(process_cpu(u32::MAX), None);
    }
}
