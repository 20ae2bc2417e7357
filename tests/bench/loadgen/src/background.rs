//! The connections beside the clients during the measured period: snapshot probes (a fresh
//! connection every --probe-interval-ms, timed to its snapshot) and churn (--churn short-lived
//! connections per second). Each runs as a [`Background`] loop that the run stops when the
//! window closes; none of their traffic counts as client traffic.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout_at};

use crate::client::{self, ChurnSample, ProbeSample, SubSpec};
use crate::net::Target;
use crate::report::{ChurnStats, ProbeStats, percentile};

/// A probe that has not seen its snapshot after this long is counted as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection loop running beside the clients during the measured period (probes, churn),
/// told when to stop by a deadline for the connections it still has in flight.
pub struct Background<T> {
    stop: oneshot::Sender<Instant>,
    task: JoinHandle<T>,
}

impl<T: Send + 'static> Background<T> {
    pub fn spawn<F: Future<Output = T> + Send + 'static>(start: impl FnOnce(oneshot::Receiver<Instant>) -> F) -> Background<T> {
        let (stop, stop_rx) = oneshot::channel();
        Background { stop, task: tokio::spawn(start(stop_rx)) }
    }

    /// Stops starting connections; those in flight get until `deadline`.
    pub fn stop(self, deadline: Instant) -> JoinHandle<T> {
        let _ = self.stop.send(deadline);
        self.task
    }
}

/// Starts a probe every `interval` until told to stop, then waits for the ones still running
/// until the given deadline (the rest count as failed).
pub async fn probe_loop(target: Arc<Target>, specs: Vec<SubSpec>, interval: Duration, mut stop: oneshot::Receiver<Instant>) -> Vec<ProbeSample> {
    let mut tick = tokio::time::interval(interval);
    // A slow server must not cause a burst of catch-up probes.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut running = JoinSet::new();
    let mut samples = Vec::new();
    let mut n = 0usize;
    let deadline = loop {
        tokio::select! {
            d = &mut stop => break d.unwrap_or_else(|_| Instant::now()),
            _ = tick.tick() => {
                let target = target.clone();
                let spec = specs[n % specs.len()].clone();
                n += 1;
                running.spawn(async move { client::probe_once(&target, &spec, PROBE_TIMEOUT).await });
            }
            Some(Ok(s)) = running.join_next(), if !running.is_empty() => samples.push(s),
        }
    };
    finish_samples(&mut running, &mut samples, deadline, |error| ProbeSample { error: Some(error), ..Default::default() }).await;
    samples
}

/// Sums up the probe samples; a probe slower than `slow_ms` to its snapshot is slow.
pub fn probe_stats(samples: &[ProbeSample], slow_ms: u64) -> ProbeStats {
    let sorted_ms = |f: &dyn Fn(&ProbeSample) -> Option<Duration>| {
        let mut v: Vec<f64> = samples.iter().filter_map(f).map(|d| d.as_secs_f64() * 1000.0).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let welcome = sorted_ms(&|s| s.welcome);
    let ack = sorted_ms(&|s| s.ack);
    let snap = sorted_ms(&|s| s.snapshot);
    let mut errors: Vec<String> = samples.iter().filter_map(|s| s.error.clone()).collect();
    let failed = errors.len();
    errors.truncate(5);
    ProbeStats {
        count: samples.len(),
        ok: snap.len(),
        failed,
        no_snapshot: samples.iter().filter(|s| s.no_snapshot && s.error.is_none()).count(),
        slow: snap.iter().filter(|&&x| x > slow_ms as f64).count()
            // A probe that timed out after the subscribe was sent was certainly slow too.
            + samples.iter().filter(|s| s.snapshot.is_none() && s.ack.is_some() && s.error.is_some()).count(),
        slow_threshold_ms: slow_ms,
        welcome_p50_ms: percentile(&welcome, 0.5),
        welcome_max_ms: welcome.last().copied(),
        ack_p50_ms: percentile(&ack, 0.5),
        ack_max_ms: ack.last().copied(),
        snapshot_p50_ms: percentile(&snap, 0.5),
        snapshot_max_ms: snap.last().copied(),
        errors,
    }
}

/// Opens `rate` churn connections per second (on a fixed schedule: a late start is followed
/// at once by the next, so the average rate holds on a busy machine) until told to stop; then
/// waits for those in flight until the stop's deadline. Returns (connections started, samples);
/// connections still running at the deadline are samples with an "unfinished" error.
pub async fn churn_loop(target: Arc<Target>, specs: Vec<SubSpec>, rate: f64, limit: Duration, mut stop: oneshot::Receiver<Instant>) -> (u64, Vec<ChurnSample>) {
    let start = Instant::now();
    let mut running = JoinSet::new();
    let mut samples = Vec::new();
    let mut started = 0u64;
    let deadline = loop {
        let next = start + Duration::from_secs_f64(started as f64 / rate);
        tokio::select! {
            biased;
            d = &mut stop => break d.unwrap_or_else(|_| Instant::now()),
            Some(Ok(s)) = running.join_next(), if !running.is_empty() => samples.push(s),
            _ = sleep_until(next) => {
                let target = target.clone();
                let spec = specs[started as usize % specs.len()].clone();
                started += 1;
                running.spawn(async move { client::churn_once(&target, &spec, limit).await });
            }
        }
    };
    finish_samples(&mut running, &mut samples, deadline, |error| ChurnSample { error: Some(error), ..Default::default() }).await;
    (started, samples)
}

/// Sums up the churn samples of a measured period of `measured_s` seconds.
pub fn churn_stats(rate: f64, attempted: u64, samples: &[ChurnSample], measured_s: f64) -> ChurnStats {
    let mut setup: Vec<f64> = samples.iter().filter_map(|s| s.setup).map(|d| d.as_secs_f64() * 1000.0).collect();
    setup.sort_by(f64::total_cmp);
    let mut kinds = std::collections::BTreeMap::new();
    let mut errors = Vec::new();
    for e in samples.iter().filter_map(|s| s.error.as_deref()) {
        *kinds.entry(client::failure_kind(e).to_string()).or_insert(0u64) += 1;
        if errors.len() < 5 {
            errors.push(e.to_string());
        }
    }
    let failed = kinds.values().sum::<u64>();
    ChurnStats {
        rate,
        attempted,
        attempted_per_s: attempted as f64 / measured_s.max(1e-6),
        ok: setup.len() as u64,
        failed,
        failure_kinds: kinds,
        errors,
        unclean_closes: samples.iter().filter(|s| s.setup.is_some() && !s.clean_close).count() as u64,
        setup_p50_ms: percentile(&setup, 0.5),
        setup_p99_ms: percentile(&setup, 0.99),
        setup_max_ms: setup.last().copied(),
    }
}

/// Collects the samples of connections that finish by `deadline`; each one still running then
/// is recorded as a failure (made by `unfinished`) and aborted, so none is silently lost.
async fn finish_samples<T: 'static>(running: &mut JoinSet<T>, samples: &mut Vec<T>, deadline: Instant, unfinished: impl Fn(String) -> T) {
    while let Ok(Some(r)) = timeout_at(deadline, running.join_next()).await {
        if let Ok(s) = r {
            samples.push(s);
        }
    }
    for _ in 0..running.len() {
        samples.push(unfinished("still running at the end of the measured period".into()));
    }
    running.abort_all();
}
