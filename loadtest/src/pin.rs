//! CPU pinning through `taskset` (util-linux), so the workspace's
//! `unsafe_code = "forbid"` holds: no `sched_setaffinity` by hand.
//!
//! On a small machine the server and the generator fight for the same cores;
//! pinning them apart (server on 0, generator on 1) makes runs comparable,
//! though it also halves what each side can use.

use std::process::Command;

/// Whether `taskset` can be run here.
pub fn available() -> bool {
    Command::new("taskset")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Pins every thread of this process to `cpus`. Call it before starting the
/// runtime: threads made afterwards inherit the affinity.
pub fn pin_self(cpus: &str) -> Result<(), String> {
    if !available() {
        return Err(format!(
            "--pin-client {cpus}: `taskset` is not installed; run the whole command under `taskset -c {cpus}` instead"
        ));
    }
    let out = Command::new("taskset")
        .args(["-a", "-c", "-p", cpus, &std::process::id().to_string()])
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset could not pin to {cpus}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A command that runs `program` pinned to `cpus` when given.
pub fn command(program: &std::path::Path, cpus: Option<&str>) -> Result<Command, String> {
    match cpus {
        None => Ok(Command::new(program)),
        Some(cpus) if available() => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(program);
            Ok(c)
        }
        Some(cpus) => Err(format!("--pin-server {cpus}: `taskset` is not installed")),
    }
}
