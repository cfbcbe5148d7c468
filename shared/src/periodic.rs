//! The engine's background loops (heartbeat, pull, traffic report, limit
//! sync) all do one thing every so often until shutdown. [`Periodic`] is
//! that shape once: a Tokio interval that does not burst to catch up after
//! a slow round (`MissedTickBehavior::Delay`: a stalled admin or store must
//! not be answered with a volley of calls), raced against the shutdown
//! future.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};

/// Ticks every `every` until `shutdown` resolves.
pub struct Periodic<S> {
    ticks: Interval,
    shutdown: Pin<Box<S>>,
    stopped: bool,
}

impl<S: Future<Output = ()>> Periodic<S> {
    /// The first tick is immediate, as [`tokio::time::interval`]'s.
    pub fn new(every: Duration, shutdown: S) -> Self {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            ticks,
            shutdown: Box::pin(shutdown),
            stopped: false,
        }
    }

    /// Waits for the next tick; `false` once shutdown was asked for (and
    /// every call after).
    pub async fn tick(&mut self) -> bool {
        self.tick_or(std::future::pending::<()>()).await
    }

    /// Like [`Periodic::tick`], also woken early by `early` (a heartbeat
    /// telling the pull loop that admin has a newer version).
    pub async fn tick_or(&mut self, early: impl Future<Output = ()>) -> bool {
        if self.stopped {
            return false;
        }
        tokio::select! {
            _ = &mut self.shutdown => {
                self.stopped = true;
                false
            }
            _ = self.ticks.tick() => true,
            _ = early => true,
        }
    }

    /// Races `work` against shutdown: `None` when shutdown came first (the
    /// work is dropped; every later call answers `None` too).
    pub async fn unless_stopped<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        if self.stopped {
            return None;
        }
        tokio::select! {
            _ = &mut self.shutdown => {
                self.stopped = true;
                None
            }
            out = work => Some(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_until_shutdown_then_stays_stopped() {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut p = Periodic::new(Duration::from_millis(5), async {
            let _ = stopped.await;
        });
        assert!(p.tick().await, "the first tick is immediate");
        assert!(p.tick().await);
        let woke = tokio::sync::Notify::new();
        woke.notify_one();
        assert!(p.tick_or(woke.notified()).await, "woken early");
        assert_eq!(p.unless_stopped(async { 1 }).await, Some(1));
        drop(stop);
        assert!(!p.tick().await);
        assert!(!p.tick().await, "stays stopped");
        assert_eq!(p.unless_stopped(async { 1 }).await, None);
    }
}
