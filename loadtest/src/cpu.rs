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
//! The reading is the process's `/proc/PID/stat` `utime` plus `stime`:
//! the kernel keeps the time of threads that have exited in the process's
//! total, so a blocking-pool thread that ends during a round still counts
//! (summing each live thread's `schedstat`, as this did before, lost it).
//! The sum of the two is the scheduler's own runtime (the kernel only
//! estimates how it splits between user and system), in clock ticks:
//! `USER_HZ` is 100 on every Linux ABI, so a reading is within 10 ms, and
//! a difference over a round of seconds within a percent.

use std::time::Duration;

/// `USER_HZ`: the unit of `/proc/PID/stat`'s times on Linux, fixed by the
/// ABI whatever the kernel's own tick rate.
const TICKS_PER_SECOND: u64 = 100;

/// Time the threads of process `pid` have run so far, those that have
/// exited included; `None` when it cannot be read (not Linux, no such
/// process).
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu(&stat)
}

/// `utime + stime` of one `/proc/PID/stat` line. The command name (field
/// 2, in parentheses) may hold spaces and parentheses itself, so fields
/// are counted after its last `)`: the state is field 3, `utime` 14,
/// `stime` 15.
fn stat_cpu(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime.checked_add(stime)?;
    Some(Duration::from_millis(
        ticks.checked_mul(1000 / TICKS_PER_SECOND)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::{process_cpu, stat_cpu};
    use std::time::{Duration, Instant};

    /// The fields are counted after the command name, whatever it holds.
    #[test]
    fn utime_and_stime_are_read_after_the_command_name() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 0 0";
        assert_eq!(stat_cpu(line), Some(Duration::from_millis(3250)));
        assert_eq!(stat_cpu("4242 (x) S 1 2"), None, "a cut line");
        assert_eq!(stat_cpu("no parenthesis"), None);
    }

    /// A thread that ran and exited still counts: its process's reading
    /// does not go back when it ends. Summing the live threads' times
    /// lost it. The thread spins until the reading has grown by 50 ms (a
    /// deadline bounds a reading that never moves, not the machine's
    /// speed); other tests' threads only add to the reading.
    #[test]
    fn an_exited_thread_keeps_its_time() {
        let me = std::process::id();
        let Some(before) = process_cpu(me) else {
            // No /proc (not Linux): nothing to check.
            return;
        };
        let spinner = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut x = 0u64;
            loop {
                for _ in 0..100_000 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                let now = process_cpu(me).expect("a reading");
                if now >= before + Duration::from_millis(50) || Instant::now() >= deadline {
                    return now;
                }
            }
        });
        let during = spinner.join().expect("the spinner");
        assert!(
            during >= before + Duration::from_millis(50),
            "30 s of spinning read as {:?}",
            during - before
        );
        let after = process_cpu(me).expect("a reading");
        assert!(
            after >= during,
            "the ended thread's time went missing: {during:?} then {after:?}"
        );
    }

    /// A busy child process's reading grows. A child, so that only its
    /// own loop moves the reading (this process's other tests add to
    /// this process's). The loop waits until the
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
