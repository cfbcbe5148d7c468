//! The load loop: `connections` tasks, each owning one HTTP/1.1 connection,
//! sending the plan's requests paced as asked, and recording into its own
//! histograms (no shared lock on the hot path; merged at the end).
//!
//! Pacing and coordinated omission:
//! - closed loop: send, wait for the answer, send again; latency from the
//!   actual send. This finds the maximum throughput, but its latencies hide
//!   stalls (a stalled server also stalls the generator).
//! - open loop: requests are due on a global schedule (`rate`/s); each free
//!   connection takes the next due slot, waits for it, and sends. A slot
//!   taken after it was due (every connection was busy behind slow answers)
//!   is measured from its **intended** send time, so the stall counts; with
//!   too few connections for the rate × latency product the queue shows up
//!   as latency, which is true. Slots are released by a [`pacer`] thread
//!   as they come due, not by tokio's timer: that one ticks in milliseconds,
//!   so every connection waiting for a slot in the same millisecond woke at
//!   the same tick and the server saw the rate as one burst a millisecond
//!   (26 requests at once at 26 000/s), queueing behind each other. A free
//!   connection's request is measured from its actual send, at most
//!   [`PACER_LEAD`] early or the pacer's sleep late; that lateness is the
//!   generator's, not the server's.
//! - closed-paced: each connection aims for `rate / connections` per second;
//!   latency from the actual send, recorded with `record_correct` and the
//!   connection's expected interval, HdrHistogram's after-the-fact fix.
//!
//! Warm-up: requests due (open) or sent (closed) before the warm-up ends are
//! answered but not recorded. A request whose transport fails counts as an
//! `io` error and its connection is re-opened; a failed (re)connect counts as
//! a `connect` error. An answer that closes its connection (`connection:
//! close`, HTTP/1.0, a body read to the close) counts by its status, and the
//! next request opens a new connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{sleep_until, Instant};

use crate::plan::Plan;
use crate::raw::RawConn;
use crate::report::{Pacing, RunReport, Tally, MAX_LATENCY_US};

/// How one run is driven.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Label in the progress line and the report.
    pub label: String,
    /// Concurrent connections.
    pub connections: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// How requests are paced.
    pub pacing: Pacing,
    /// Whether to print a progress line every second on stderr.
    pub progress: bool,
    /// The server's process, when known: its CPU time over the measured
    /// time is reported ([`RunReport::server_cpu`]).
    pub server_pid: Option<u32>,
}

/// Counters the progress line reads; updated with relaxed atomics, one
/// increment per answer.
#[derive(Default)]
struct Live {
    done: AtomicU64,
    errors: AtomicU64,
    latency_us_sum: AtomicU64,
    open_connections: AtomicU64,
}

/// Closed-paced: tokio's timer wheel ticks in milliseconds and rounds
/// deadlines up, so a connection that slept until its next send would wake
/// up to a millisecond late. It sends as soon as its time is less than one
/// tick away instead: at most this early, never late for the timer.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);
/// How early the [`pacer`] releases a slot before it is due: about a
/// thread's wake-up, so a free connection sends close to its slot.
const PACER_LEAD: Duration = Duration::from_micros(10);
/// The pacer's shortest sleep: at high rates it releases the slots due
/// meanwhile together, tens of microseconds apart (the kernel's default
/// timer slack is 50 µs), not one wake-up per slot.
const PACER_SLEEP: Duration = Duration::from_micros(20);

/// Releases an open loop's slots as they come due, from a thread of its
/// own, as permits of a semaphore the connections take in turn (FIFO).
///
/// tokio's timer wheel ticks in milliseconds and rounds deadlines up:
/// connections that slept until their slots woke together at each tick
/// and sent a millisecond's requests as one burst. A thread sleeping with
/// the kernel's high-resolution timer releases them tens of microseconds
/// apart. Slots no connection is free to take stay released (the permits
/// add up), so a stalled server still finds them overdue, measured from
/// their intended time. The semaphore closes at the run's end.
fn pacer(clock: Clock, rate: f64) -> Result<Arc<Semaphore>, String> {
    let permits = Arc::new(Semaphore::new(0));
    let p = Arc::clone(&permits);
    let (start, end) = (clock.start.into_std(), clock.end.into_std());
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let mut released: u64 = 0;
            loop {
                let now = std::time::Instant::now();
                if now >= end {
                    break;
                }
                let due = due_by(now - start, rate);
                if due > released {
                    // A semaphore holds at most `MAX_PERMITS`; a run never
                    // releases nearly that many.
                    let add = (due - released).min(Semaphore::MAX_PERMITS as u64 / 2);
                    p.add_permits(add as usize);
                    released = due;
                }
                std::thread::sleep(pacer_sleep(now - start, released, rate).min(end - now));
            }
            p.close();
        })
        .map_err(|e| format!("cannot start the pacer thread: {e}"))?;
    Ok(permits)
}

/// How many slots of a schedule of `rate` per second are due `elapsed`
/// after its start, released [`PACER_LEAD`] early (slot 0 at the start).
fn due_by(elapsed: Duration, rate: f64) -> u64 {
    ((elapsed + PACER_LEAD).as_secs_f64() * rate) as u64 + 1
}

/// How long the pacer sleeps at `elapsed` with `released` slots out:
/// until the next one is due (less the lead), at least [`PACER_SLEEP`].
fn pacer_sleep(elapsed: Duration, released: u64, rate: f64) -> Duration {
    let next = Duration::from_secs_f64(released as f64 / rate);
    next.saturating_sub(elapsed + PACER_LEAD).max(PACER_SLEEP)
}

/// The time slot of request `k` on a schedule of `rate` per second.
pub fn slot(start: Instant, rate: f64, k: u64) -> Instant {
    start + Duration::from_secs_f64(k as f64 / rate)
}

/// The instant a request's latency is measured from (see the module docs):
/// the intended send time for an open-loop slot taken after it was due, the
/// actual send time otherwise.
pub fn latency_origin(
    pacing: Pacing,
    due: Option<Instant>,
    claimed_at: Instant,
    sent_at: Instant,
) -> Instant {
    match (pacing, due) {
        // Busy past its slot: the wait behind slow answers counts.
        (Pacing::Open { .. }, Some(due)) if claimed_at >= due => due,
        // Free before its slot: any lateness is the timer's, not the server's.
        _ => sent_at,
    }
}

/// Runs the plan with this spec and reports.
pub async fn run(plan: Arc<Plan>, spec: &LoadSpec) -> Result<RunReport, String> {
    let addr = tokio::net::lookup_host(&plan.target.authority)
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", plan.target.authority))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", plan.target.authority))?;
    let start = Instant::now();
    let clock = Clock {
        start,
        measure_from: start + spec.warmup,
        end: start + spec.warmup + spec.duration,
    };
    let live = Arc::new(Live::default());
    let slots = Arc::new(AtomicU64::new(0));
    let permits = match spec.pacing {
        Pacing::Open { rate } => Some(pacer(clock, rate)?),
        _ => None,
    };
    let tasks: Vec<_> = (0..spec.connections)
        .map(|i| {
            let conn = Connection {
                plan: Arc::clone(&plan),
                live: Arc::clone(&live),
                slots: Arc::clone(&slots),
                permits: permits.clone(),
                addr,
                clock,
                pacing: spec.pacing,
                index: i,
                connections: spec.connections,
            };
            tokio::spawn(conn.drive())
        })
        .collect();
    let progress = spec
        .progress
        .then(|| tokio::spawn(progress(spec.label.clone(), Arc::clone(&live), clock)));
    // Read at the measured time's two ends, on the runtime's timer (a
    // millisecond late at most, against windows of seconds).
    let cpu = spec.server_pid.map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep_until(clock.measure_from).await;
            let from = crate::cpu::process_cpu(pid)?;
            tokio::time::sleep_until(clock.end).await;
            Some(crate::cpu::process_cpu(pid)?.saturating_sub(from))
        })
    });

    let mut total = Tally::default();
    let mut entries = vec![Tally::default(); plan.entries.len()];
    for t in tasks {
        let per_entry = t
            .await
            .map_err(|e| format!("a connection task failed: {e}"))?;
        for (sum, t) in entries.iter_mut().zip(&per_entry) {
            sum.merge(t);
            total.merge(t);
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    let server_cpu = match cpu {
        Some(t) => t.await.ok().flatten(),
        None => None,
    };
    Ok(RunReport {
        label: spec.label.clone(),
        target: plan.target.url(),
        pacing: spec.pacing,
        connections: spec.connections,
        duration: spec.duration,
        warmup: spec.warmup,
        total,
        server_cpu,
        entries: if plan.entries.len() > 1 {
            plan.entries
                .iter()
                .map(|e| e.name.clone())
                .zip(entries)
                .collect()
        } else {
            Vec::new()
        },
    })
}

/// The run's three instants.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

struct Connection {
    plan: Arc<Plan>,
    live: Arc<Live>,
    slots: Arc<AtomicU64>,
    /// Open loop: the [`pacer`]'s released slots.
    permits: Option<Arc<Semaphore>>,
    addr: std::net::SocketAddr,
    clock: Clock,
    pacing: Pacing,
    index: usize,
    connections: usize,
}

impl Connection {
    /// Sends until the run ends; returns one tally per plan entry.
    async fn drive(self) -> Vec<Tally> {
        let mut tallies = vec![Tally::default(); self.plan.entries.len()];
        let mut sender: Option<RawConn> = None;
        let mut sent: u64 = 0;
        // Closed-paced: this connection's own schedule, staggered so the
        // connections do not fire in bursts.
        let per_conn = match self.pacing {
            Pacing::ClosedPaced { rate } => Some(self.connections as f64 / rate),
            _ => None,
        };
        let mut next_paced = per_conn.map(|iv| {
            self.clock.start
                + Duration::from_secs_f64(iv * self.index as f64 / self.connections as f64)
        });
        loop {
            let claimed_at = Instant::now();
            let due = match (self.pacing, &self.permits) {
                (Pacing::Open { rate }, Some(permits)) => {
                    // Closed at the run's end.
                    let Ok(p) = permits.acquire().await else {
                        break;
                    };
                    p.forget();
                    Some(slot(
                        self.clock.start,
                        rate,
                        self.slots.fetch_add(1, Ordering::Relaxed),
                    ))
                }
                (Pacing::ClosedPaced { .. }, _) => next_paced,
                _ => None,
            };
            if let Some(due) = due {
                if due >= self.clock.end {
                    break;
                }
                if let Pacing::ClosedPaced { .. } = self.pacing {
                    if due > claimed_at + TIMER_RESOLUTION {
                        sleep_until(due - TIMER_RESOLUTION).await;
                    }
                }
            }
            if Instant::now() >= self.clock.end {
                break;
            }
            let mut s = match sender.take() {
                Some(s) => s,
                None => match self.connect().await {
                    Some(s) => s,
                    None => {
                        if Instant::now() >= self.clock.measure_from {
                            let n = sent * self.connections as u64 + self.index as u64;
                            let t = &mut tallies[self.plan.pick(n)];
                            *t.status.entry("connect".to_owned()).or_default() += 1;
                        }
                        continue;
                    }
                },
            };
            // The run's global send number: connections interleave, so
            // together they walk the schedule (and an entry's variants)
            // once rather than each repeating the same requests.
            let n = sent * self.connections as u64 + self.index as u64;
            let entry = self.plan.pick(n);
            sent += 1;
            let sent_at = Instant::now();
            let outcome = s.send(&self.plan, entry, n, None).await;
            let done = Instant::now();
            let from = latency_origin(self.pacing, due, claimed_at, sent_at);
            if let (Some(iv), Some(n)) = (per_conn, next_paced.as_mut()) {
                *n += Duration::from_secs_f64(iv);
            }
            let measured = from >= self.clock.measure_from;
            let key = match &outcome {
                Ok(answer) => answer.status.to_string(),
                Err(_) => "io".to_owned(),
            };
            let failed = !key.starts_with('2') && !key.starts_with('3');
            let us = (done - from)
                .as_micros()
                .clamp(1, u128::from(MAX_LATENCY_US)) as u64;
            self.live.done.fetch_add(1, Ordering::Relaxed);
            self.live.latency_us_sum.fetch_add(us, Ordering::Relaxed);
            if failed {
                self.live.errors.fetch_add(1, Ordering::Relaxed);
            }
            if measured {
                let t = &mut tallies[entry];
                *t.status.entry(key).or_default() += 1;
                if outcome.is_ok() {
                    let interval = per_conn.map_or(0, |iv| (iv * 1e6) as u64);
                    // Within bounds by the clamp above, so neither can fail.
                    let _ = if interval > 0 {
                        t.latency.record_correct(us, interval)
                    } else {
                        t.latency.record(us)
                    };
                }
            }
            // A connection the answer closed (or that failed) is opened
            // again for the next request.
            if outcome.is_ok_and(|a| a.keep_alive) {
                sender = Some(s);
            } else {
                self.live.open_connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if sender.is_some() {
            self.live.open_connections.fetch_sub(1, Ordering::Relaxed);
        }
        tallies
    }

    /// Opens the connection; on failure counts an error and backs off a
    /// little so a refused port does not turn into a busy loop.
    async fn connect(&self) -> Option<RawConn> {
        match RawConn::connect(self.addr).await {
            Ok(s) => {
                self.live.open_connections.fetch_add(1, Ordering::Relaxed);
                Some(s)
            }
            Err(_) => {
                self.live.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                None
            }
        }
    }
}

/// Sends the plan's first request once on a fresh connection: a refused
/// port or a wrong path is reported before a whole run is spent on it.
pub async fn probe(plan: &Plan) -> Result<u16, String> {
    let stream = TcpStream::connect(&plan.target.authority)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", plan.target.authority))?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{}: {e}", plan.target.authority))?;
    let driver = tokio::spawn(conn);
    let status = send(&mut sender, plan.request(plan.pick(0)))
        .await
        .map_err(|e| format!("{}: {e}", plan.target.url()));
    drop(sender);
    let _ = driver.await;
    status
}

/// One request on an open connection: the status once the whole body is in.
/// Sends the plan's `n`th request on a fresh connection and returns the
/// status and body: the sanity check that a scenario gets the answer it
/// means to measure.
pub async fn fetch(plan: &Plan, n: u64) -> Result<(u16, bytes::Bytes), String> {
    let stream = TcpStream::connect(&plan.target.authority)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", plan.target.authority))?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{}: {e}", plan.target.authority))?;
    let driver = tokio::spawn(conn);
    let answer = async {
        sender.ready().await?;
        let res = sender.send_request(plan.request_n(plan.pick(n), n)).await?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    }
    .await
    .map_err(|e| format!("{}: {e}", plan.target.url()));
    drop(sender);
    let _ = driver.await;
    answer
}

async fn send(
    sender: &mut http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<u16, hyper::Error> {
    sender.ready().await?;
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}

/// Prints a line a second: phase, requests/s and mean latency over the last
/// second, errors so far (transport and non-2xx/3xx, warm-up included), open
/// connections.
async fn progress(label: String, live: Arc<Live>, clock: Clock) {
    let mut tick =
        tokio::time::interval_at(clock.start + Duration::from_secs(1), Duration::from_secs(1));
    let (mut last_done, mut last_sum) = (0u64, 0u64);
    // Aborted by `run` once every connection has finished.
    loop {
        let now = tick.tick().await;
        let done = live.done.load(Ordering::Relaxed);
        let sum = live.latency_us_sum.load(Ordering::Relaxed);
        let (n, s) = (done - last_done, sum - last_sum);
        (last_done, last_sum) = (done, sum);
        // The phase of the second that just ended.
        let phase = if now - Duration::from_secs(1) < clock.measure_from {
            "warm-up"
        } else {
            "measure"
        };
        let mean_ms = if n == 0 {
            0.0
        } else {
            s as f64 / n as f64 / 1000.0
        };
        eprintln!(
            "[{label} {:>5.1}s {phase}] {n:>7} req/s  mean {mean_ms:>7.3} ms  errors {:>5}  connections {}",
            (now - clock.start).as_secs_f64(),
            live.errors.load(Ordering::Relaxed),
            live.open_connections.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_slots_count_from_their_intended_time_early_ones_from_the_send() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let open = Pacing::Open { rate: 1000.0 };
        // Taken 5 ms after it was due (all connections busy): the 5 ms count.
        assert_eq!(latency_origin(open, Some(t0), t0 + ms(5), t0 + ms(5)), t0);
        // Taken early, timer woke 1 ms late: only the send counts.
        assert_eq!(
            latency_origin(open, Some(t0 + ms(2)), t0, t0 + ms(3)),
            t0 + ms(3)
        );
        // Closed loops always measure from the send.
        let paced = Pacing::ClosedPaced { rate: 1000.0 };
        assert_eq!(
            latency_origin(paced, Some(t0), t0 + ms(5), t0 + ms(5)),
            t0 + ms(5)
        );
        assert_eq!(
            latency_origin(Pacing::Closed, None, t0, t0 + ms(1)),
            t0 + ms(1)
        );
    }

    /// The pacer releases each slot when it is due (less the lead), one
    /// sleep at a time, and never sleeps less than its floor.
    #[test]
    fn the_pacer_releases_slots_as_they_come_due() {
        let us = Duration::from_micros;
        // Slot 0 at the start; slot 1 of 1000/s once 1 ms less the lead.
        assert_eq!(due_by(Duration::ZERO, 1000.0), 1);
        assert_eq!(due_by(us(989), 1000.0), 1);
        assert_eq!(due_by(us(990), 1000.0), 2);
        assert_eq!(due_by(Duration::from_secs(1), 1000.0), 1001);
        // 26 000/s: a millisecond's 26 slots are due over it, not at once.
        assert_eq!(
            due_by(us(500), 26_000.0) - due_by(Duration::ZERO, 26_000.0),
            13
        );
        // One slot out at 1000/s: sleep until the next, less the lead.
        assert_eq!(pacer_sleep(Duration::ZERO, 1, 1000.0), us(990));
        assert_eq!(pacer_sleep(us(400), 1, 1000.0), us(590));
        // Faster than the floor: slots come due during the floor's sleep
        // and go out together at the next wake-up.
        assert_eq!(pacer_sleep(Duration::ZERO, 1, 100_000.0), PACER_SLEEP);
        // Behind (a late wake-up): the floor, never zero.
        assert_eq!(pacer_sleep(us(5000), 2, 1000.0), PACER_SLEEP);
    }

    /// The pacer thread never releases a slot before it is due (less the
    /// lead): sampled while it runs, what it has released is at most what
    /// is due by then; it releases them all by the end and then closes.
    #[test]
    fn the_pacer_thread_releases_no_slot_early() {
        let start = Instant::now();
        let clock = Clock {
            start,
            measure_from: start,
            end: start + Duration::from_millis(200),
        };
        let rate = 2000.0;
        let permits = pacer(clock, rate).expect("pacer");
        let mut seen = 0;
        while !permits.is_closed() {
            let released = permits.available_permits() as u64;
            assert!(
                released <= due_by(start.elapsed(), rate),
                "{released} released after {:?}",
                start.elapsed()
            );
            seen = seen.max(released);
            std::thread::sleep(Duration::from_micros(300));
        }
        assert!(seen >= 1, "slot 0 goes at the start");
        assert!(permits.available_permits() as u64 <= due_by(Duration::from_millis(200), rate));
    }

    #[test]
    fn slots_follow_the_rate() {
        let t0 = Instant::now();
        assert_eq!(slot(t0, 1000.0, 0), t0);
        assert_eq!(slot(t0, 1000.0, 1500), t0 + Duration::from_millis(1500));
        assert_eq!(slot(t0, 4.0, 2), t0 + Duration::from_millis(500));
    }
}
