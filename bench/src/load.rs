//! The load generators. An *operation* is one scenario step (one HTTP request, or a whole
//! browser journey); its latency is recorded into a [`Histogram`] and its outcome counted.
//!
//! - [`closed_loop`]: `concurrency` virtual users, each sending its next operation as soon as
//!   the previous one answered (finds peak throughput);
//! - [`open_loop`]: operations started on a fixed schedule whatever the answers, latency
//!   measured from the *scheduled* start so a stalled server cannot hide its queue
//!   (coordinated omission), with a bound on operations in flight.
//!
//! Every loop stops at a deadline **and** at a maximum operation count; each request has its
//! own timeout ([`crate::http::REQUEST_TIMEOUT`]), so no loop can run away.

use crate::histogram::Histogram;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Why an operation did not succeed.
#[derive(Debug, Clone)]
pub struct OpError {
    /// The HTTP status that broke the journey; `None` for transport errors and bad bodies.
    pub status: Option<u16>,
    pub detail: String,
}

impl OpError {
    pub fn status(status: u16, detail: impl Into<String>) -> Self {
        Self { status: Some(status), detail: detail.into() }
    }

    pub fn other(detail: impl Into<String>) -> Self {
        Self { status: None, detail: detail.into() }
    }
}

impl From<anyhow::Error> for OpError {
    fn from(e: anyhow::Error) -> Self {
        Self::other(format!("{e:#}"))
    }
}

pub type OpResult = Result<(), OpError>;
pub type OpFuture = Pin<Box<dyn Future<Output = OpResult> + Send>>;
/// An operation: given the virtual user and the operation's sequence number.
pub type Op = Arc<dyn Fn(usize, u64) -> OpFuture + Send + Sync>;

/// When a loop stops: whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub duration: Duration,
    pub max_ops: u64,
}

/// What a loop measured. Latencies are of successful operations only.
#[derive(Clone, Default)]
pub struct LoadStats {
    pub latency: Histogram,
    pub ok: u64,
    pub s2xx: u64,
    pub s3xx: u64,
    pub s4xx: u64,
    pub s5xx: u64,
    pub transport: u64,
    /// Open loop only: scheduled operations skipped because too many were in flight.
    pub dropped: u64,
    pub elapsed: Duration,
    pub first_error: Option<String>,
    /// Open loop with tracing on: every operation's scheduled start and latency, in the order
    /// they finished (see [`TraceEntry`]).
    pub trace: Option<Vec<TraceEntry>>,
}

/// One traced operation: when it was scheduled to start (seconds since the Unix epoch, so
/// that it lines up with server logs and `perf` timestamps), how long it took from then, and
/// whether it succeeded.
#[derive(Debug, Clone, Copy)]
pub struct TraceEntry {
    pub scheduled_unix_secs: f64,
    pub latency: Duration,
    pub ok: bool,
}

impl LoadStats {
    pub fn record(&mut self, result: &OpResult, latency: Duration) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.latency.record(latency);
            }
            Err(e) => {
                match e.status {
                    Some(200..=299) => self.s2xx += 1,
                    Some(300..=399) => self.s3xx += 1,
                    Some(400..=499) => self.s4xx += 1,
                    Some(500..=599) => self.s5xx += 1,
                    _ => self.transport += 1,
                }
                if self.first_error.is_none() {
                    self.first_error = Some(match e.status {
                        Some(s) => format!("HTTP {s}: {}", e.detail),
                        None => e.detail.clone(),
                    });
                }
            }
        }
    }

    pub fn merge(&mut self, other: &LoadStats) {
        self.latency.merge(&other.latency);
        self.ok += other.ok;
        self.s2xx += other.s2xx;
        self.s3xx += other.s3xx;
        self.s4xx += other.s4xx;
        self.s5xx += other.s5xx;
        self.transport += other.transport;
        self.dropped += other.dropped;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    pub fn errors(&self) -> u64 {
        self.s2xx + self.s3xx + self.s4xx + self.s5xx + self.transport
    }

    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.ok as f64 / secs } else { 0.0 }
    }
}

/// `concurrency` virtual users, each running `op` back to back until the limits.
pub async fn closed_loop(concurrency: usize, limits: Limits, op: Op) -> LoadStats {
    let started = Instant::now();
    let deadline = started + limits.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let mut users = JoinSet::new();
    for vu in 0..concurrency.max(1) {
        let op = op.clone();
        let issued = issued.clone();
        users.spawn(async move {
            let mut stats = LoadStats::default();
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= limits.max_ops {
                    break;
                }
                let t0 = Instant::now();
                let result = op(vu, n).await;
                stats.record(&result, t0.elapsed());
            }
            stats
        });
    }
    let mut total = LoadStats::default();
    while let Some(joined) = users.join_next().await {
        match joined {
            Ok(stats) => total.merge(&stats),
            Err(e) => total.record(&Err(OpError::other(format!("virtual user panicked: {e}"))), Duration::ZERO),
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Starts `op` `rate` times per second on a fixed schedule until the limits, with at most
/// `max_in_flight` started and unfinished (further starts are counted as dropped). Latency runs
/// from the scheduled start. `vus` is how many virtual-user slots `op` is given, round robin.
///
/// `trace`: also keep every operation's scheduled start and latency (`LoadStats::trace`).
///
/// `connections`: `Some(c)` runs at most `c` operations at once, as a client with `c`
/// keep-alive connections does (wrk2's model): a start that finds them all busy waits for one,
/// and that wait counts in its latency. Without the bound, a hiccup of a few milliseconds
/// makes the client open dozens of new connections at once, and the handshakes and teardowns
/// of that storm — the harness's doing — stretch the hiccup into a stall of tens of
/// milliseconds. `None` runs every start at once (the sign-up spike: many separate clients).
#[allow(clippy::too_many_arguments)]
pub async fn open_loop(
    rate: f64,
    max_in_flight: usize,
    connections: Option<usize>,
    vus: usize,
    limits: Limits,
    trace: bool,
    op: Op,
) -> LoadStats {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let deadline = started + limits.duration;
    let mut starts = schedule(started, period, deadline, limits.max_ops);
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let busy = connections.map(|c| Arc::new(Semaphore::new(c.max(1))));
    let mut running: JoinSet<(OpResult, Duration, Instant)> = JoinSet::new();
    let mut total = LoadStats { trace: trace.then(Vec::new), ..LoadStats::default() };
    let collect = |total: &mut LoadStats, done: Result<(OpResult, Duration, Instant), tokio::task::JoinError>| match done {
        Ok((result, latency, scheduled)) => {
            if let Some(trace) = total.trace.as_mut() {
                let scheduled_unix_secs = started_unix + (scheduled - started).as_secs_f64();
                trace.push(TraceEntry { scheduled_unix_secs, latency, ok: result.is_ok() });
            }
            total.record(&result, latency);
        }
        Err(e) => total.record(&Err(OpError::other(format!("operation panicked: {e}"))), Duration::ZERO),
    };
    let mut n: u64 = 0;
    while let Some(scheduled) = starts.recv().await {
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let op = op.clone();
                let busy = busy.clone();
                let vu = (n % vus.max(1) as u64) as usize;
                running.spawn(async move {
                    let connection = match busy {
                        Some(busy) => busy.acquire_owned().await.ok(),
                        None => None,
                    };
                    let result = op(vu, n).await;
                    drop((connection, permit));
                    (result, scheduled.elapsed(), scheduled)
                });
            }
            Err(_) => total.dropped += 1,
        }
        n += 1;
        while let Some(done) = running.try_join_next() {
            collect(&mut total, done);
        }
    }
    while let Some(done) = running.join_next().await {
        collect(&mut total, done);
    }
    total.elapsed = started.elapsed();
    total
}

/// How slow one traced operation must be to count as late in [`trace_summary`], and the
/// windows in which late ones are grouped.
const LATE: Duration = Duration::from_millis(5);
const WINDOW_SECS: f64 = 0.1;

/// The operations over [`LATE`], and in how many 100-ms windows of their scheduled starts
/// they fell: a few windows mean a few stalls, many mean a tail spread over the run.
pub fn trace_summary(trace: &[TraceEntry]) -> String {
    let late: Vec<&TraceEntry> = trace.iter().filter(|e| e.latency > LATE).collect();
    let mut windows: Vec<i64> = late.iter().map(|e| (e.scheduled_unix_secs / WINDOW_SECS).floor() as i64).collect();
    windows.sort_unstable();
    windows.dedup();
    let worst = late.iter().map(|e| e.latency).max().unwrap_or_default();
    format!(
        "{} operations, {} over {} ms in {} window(s) of {} ms, the slowest {:.1} ms",
        trace.len(),
        late.len(),
        LATE.as_millis(),
        windows.len(),
        (WINDOW_SECS * 1000.0) as u64,
        worst.as_secs_f64() * 1000.0
    )
}

/// One line per operation: scheduled start (Unix seconds), latency (ms), 1 or 0 for ok.
pub fn write_trace(path: &std::path::Path, trace: &[TraceEntry]) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut text = String::from("# scheduled_start_unix_secs latency_ms ok\n");
    for e in trace {
        let _ = writeln!(text, "{:.6} {:.3} {}", e.scheduled_unix_secs, e.latency.as_secs_f64() * 1000.0, u8::from(e.ok));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// How long the schedule thread sleeps at least: starts due within it go together, which
/// bounds the thread's wake-ups (and the CPU the generator takes from the server on a small
/// machine) at the price of starting up to this much late — still measured from the schedule.
const SCHEDULE_QUANTUM: Duration = Duration::from_micros(200);

/// The start instants `started + k × period` before `deadline` (at most `max_ops`), each sent
/// when it comes. A thread of its own keeps the schedule: tokio's timer has a resolution of
/// 1 ms, so at thousands of starts a second its ticks would come in bursts up to 1 ms late,
/// and that lateness — the generator's, not the server's — would count as latency. Starts the
/// thread is late for (the machine is busy) are sent at once and still measured from their
/// scheduled instants.
fn schedule(started: Instant, period: Duration, deadline: Instant, max_ops: u64) -> tokio::sync::mpsc::UnboundedReceiver<Instant> {
    let (starts, received) = tokio::sync::mpsc::unbounded_channel();
    let (started, deadline) = (started.into_std(), deadline.into_std());
    std::thread::spawn(move || {
        let start_of = |k: u64| Some(started + period.mul_f64(k as f64)).filter(|at| k < max_ops && *at < deadline);
        let mut k = 0;
        while let Some(next) = start_of(k) {
            std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()).max(SCHEDULE_QUANTUM));
            let now = std::time::Instant::now();
            while let Some(at) = start_of(k).filter(|at| *at <= now) {
                if starts.send(Instant::from_std(at)).is_err() {
                    return;
                }
                k += 1;
            }
        }
    });
    received
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op_sleeping(ms: u64, fail_every: u64) -> Op {
        Arc::new(move |_vu, n| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if fail_every > 0 && n % fail_every == 0 { Err(OpError::status(503, "busy")) } else { Ok(()) }
            })
        })
    }

    #[tokio::test]
    async fn closed_loop_stops_at_the_count() {
        let stats = closed_loop(4, Limits { duration: Duration::from_secs(10), max_ops: 40 }, op_sleeping(1, 10)).await;
        assert_eq!(stats.ok + stats.errors(), 40);
        assert_eq!(stats.s5xx, 4);
        assert!(stats.elapsed < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn open_loop_keeps_its_schedule_and_bounds() {
        let limits = Limits { duration: Duration::from_millis(500), max_ops: 1_000_000 };
        let stats = open_loop(200.0, 1000, None, 4, limits, false, op_sleeping(2, 0)).await;
        let started = stats.ok + stats.dropped;
        assert!((80..=120).contains(&started), "started {started}");
        assert!(stats.latency.quantile_ms(0.5).expect("p50") >= 2.0);
        // One slot and slow operations: most starts are dropped, never queued.
        let stats = open_loop(200.0, 1, None, 1, limits, false, op_sleeping(50, 0)).await;
        assert!(stats.dropped > stats.ok, "{} dropped, {} ok", stats.dropped, stats.ok);
        // One connection and slow operations: starts queue for it, nothing is dropped, and the
        // wait counts in the latency.
        let stats = open_loop(100.0, 1000, Some(1), 1, limits, false, op_sleeping(20, 0)).await;
        assert_eq!(stats.dropped, 0);
        assert!(stats.latency.quantile_ms(0.99).expect("p99") >= 100.0, "queued starts must count their wait");
    }

    #[tokio::test]
    async fn a_traced_open_loop_keeps_every_start_and_latency() {
        let limits = Limits { duration: Duration::from_millis(300), max_ops: 1_000_000 };
        let stats = open_loop(100.0, 1000, Some(2), 2, limits, true, op_sleeping(3, 5)).await;
        let trace = stats.trace.clone().expect("a trace");
        assert_eq!(trace.len() as u64, stats.ok + stats.errors(), "one entry per finished operation");
        assert_eq!(trace.iter().filter(|e| !e.ok).count() as u64, stats.errors());
        let mut starts: Vec<f64> = trace.iter().map(|e| e.scheduled_unix_secs).collect();
        starts.sort_by(f64::total_cmp);
        let spread = starts.last().expect("entries") - starts.first().expect("entries");
        assert!((0.2..0.35).contains(&spread), "starts spread over the run: {spread}");
        assert!(trace.iter().all(|e| e.latency >= Duration::from_millis(3)), "latency counts from the scheduled start");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
        assert!((now - starts[0]).abs() < 5.0, "wall-clock times");
    }

    #[test]
    fn the_summary_tells_a_stall_from_a_spread_tail() {
        let entry = |at: f64, ms: u64| TraceEntry { scheduled_unix_secs: at, latency: Duration::from_millis(ms), ok: true };
        let stall: Vec<TraceEntry> =
            (0..100).map(|i| entry(1000.0 + f64::from(i) * 0.01, if (40..45).contains(&i) { 30 } else { 1 })).collect();
        assert!(trace_summary(&stall).contains("5 over 5 ms in 1 window(s)"), "{}", trace_summary(&stall));
        let spread: Vec<TraceEntry> = (0..100).map(|i| entry(1000.0 + f64::from(i) * 0.01, if i % 20 == 0 { 8 } else { 1 })).collect();
        assert!(trace_summary(&spread).contains("5 over 5 ms in 5 window(s)"), "{}", trace_summary(&spread));
        assert!(trace_summary(&stall).ends_with("the slowest 30.0 ms"));
    }
}
