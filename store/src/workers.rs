//! Whether the async runtime's worker threads have work: the anti-ATO
//! journal waits for a larger group while they do, and commits at once
//! when they have nothing left to run (`embedded/ato_writer.rs`).
//!
//! A binary opts in by giving the runtime's builder [`parked`] and
//! [`unparked`] as its park hooks. Without them no worker ever counts as
//! busy, so the journal never waits.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::thread::Thread;

/// Workers running tasks.
static BUSY: AtomicUsize = AtomicUsize::new(0);
/// Threads waiting for the workers to go idle, and how many.
static WAITING: Mutex<Vec<Thread>> = Mutex::new(Vec::new());
static WAITERS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this worker is counted in [`BUSY`].
    static RUNNING: Cell<bool> = const { Cell::new(false) };
}

/// The runtime's `on_thread_unpark` hook: this worker has work.
pub fn unparked() {
    RUNNING.with(|r| {
        if !r.replace(true) {
            BUSY.fetch_add(1, SeqCst);
        }
    });
}

/// The runtime's `on_thread_park` hook: this worker has nothing to run.
/// The last one to park wakes whoever waits for that.
pub fn parked() {
    RUNNING.with(|r| {
        if r.replace(false) && BUSY.fetch_sub(1, SeqCst) == 1 && WAITERS.load(SeqCst) > 0 {
            for t in WAITING.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                t.unpark();
            }
        }
    });
}

/// Whether no worker has work.
pub(crate) fn idle() -> bool {
    BUSY.load(SeqCst) == 0
}

/// While held, the current thread is unparked when the workers go idle.
pub(crate) struct Waiting(());

impl Waiting {
    pub(crate) fn register() -> Self {
        WAITING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(std::thread::current());
        WAITERS.fetch_add(1, SeqCst);
        Waiting(())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let me = std::thread::current().id();
        let mut w = WAITING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = w.iter().position(|t| t.id() == me) {
            w.swap_remove(i);
        }
        WAITERS.fetch_sub(1, SeqCst);
    }
}

/// Serialises the tests that mark a thread busy: [`BUSY`] is one per
/// process.
#[cfg(test)]
pub(crate) static TEST_LOCK: Mutex<()> = Mutex::new(());

/// A thread that counts as a busy worker until [`BusyWorker::park`].
#[cfg(test)]
pub(crate) struct BusyWorker {
    park: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(test)]
impl BusyWorker {
    pub(crate) fn start() -> Self {
        let (park, parked_rx) = std::sync::mpsc::channel();
        let (started, started_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            unparked();
            let _ = started.send(());
            let _ = parked_rx.recv();
            parked();
        });
        started_rx.recv().expect("worker started");
        Self {
            park,
            thread: Some(thread),
        }
    }

    /// The worker parks, and is gone once this returns.
    pub(crate) fn park(mut self) {
        let _ = self.park.send(());
        if let Some(t) = self.thread.take() {
            t.join().expect("worker");
        }
    }
}

#[cfg(test)]
impl Drop for BusyWorker {
    fn drop(&mut self) {
        let _ = self.park.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker counts as busy from its unpark to its park, counted once
    /// however often the hooks repeat, and the last one to park wakes a
    /// waiting thread.
    #[test]
    fn busy_from_unpark_to_park_and_the_last_park_wakes_the_waiter() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        assert!(idle());
        // Hooks called again count once; a park before any unpark counts
        // nothing.
        parked();
        assert!(idle());
        unparked();
        unparked();
        assert!(!idle());
        parked();
        assert!(idle());
        let a = BusyWorker::start();
        let b = BusyWorker::start();
        assert!(!idle());
        let waiter = std::thread::spawn(|| {
            let _w = Waiting::register();
            while !idle() {
                std::thread::park();
            }
        });
        a.park();
        assert!(!idle(), "one worker still busy");
        b.park();
        assert!(idle());
        // Returns only once unparked by the last park (or if it registered
        // after it, at once).
        waiter.join().expect("waiter");
        assert_eq!(WAITERS.load(SeqCst), 0);
    }
}
