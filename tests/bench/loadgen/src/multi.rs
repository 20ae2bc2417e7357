//! `--processes N`: the parent spawns N−1 children of the same binary, each running a share
//! of the reading clients; all of them measure the same wall-clock window and the parent
//! merges their raw results (counters, histograms, CPU) into one report.
//!
//! Protocol between parent and child (stdin/stdout of the child, one line each):
//! - the child's arguments travel in the `LOADGEN_CHILD_ARGS` environment variable (JSON of
//!   [`Args`]), with `--child-index I --child-json FILE` on its command line;
//! - child → parent `READY` once all its clients are subscribed (or failed);
//! - parent → child `START <µs since epoch>` once every process is ready (and, with
//!   `--resume-feed`, the feed resumed): the common start of the measured window (now +
//!   warm-up);
//! - the child measures, closes, writes its [`ProcResult`] to FILE and exits.
//!
//! `--stall`, the probes, the observer and the server RSS sampler stay in the parent.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::cli::Args;
use crate::frame::Welcome;
use crate::stats::{self, ConnectionCounts, Counters};

/// Environment variable carrying a child's arguments.
pub const CHILD_ARGS_ENV: &str = "LOADGEN_CHILD_ARGS";

/// One process's raw results: what the parent needs to merge.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct ProcResult {
    pub measured_s: f64,
    /// Counters of the measured period, and over the whole run.
    pub measured: Counters,
    pub total: Counters,
    /// Histograms as (value, count) pairs (see [`stats::histogram_to_pairs`]), µs.
    pub latency: Vec<[u64; 2]>,
    pub latency_throttled: Vec<[u64; 2]>,
    pub staleness: Vec<[u64; 2]>,
    pub connections: ConnectionCounts,
    pub ramp_s: f64,
    /// getrusage of the measured period and of the whole process, seconds.
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    pub cpu_total_s: f64,
    pub threads: usize,
    pub welcome: Option<Welcome>,
}

/// Merged results of all processes (the parent first).
pub struct Merged {
    pub measured: Counters,
    pub total: Counters,
    pub latency: Histogram<u64>,
    pub latency_throttled: Histogram<u64>,
    pub staleness: Histogram<u64>,
    pub connections: ConnectionCounts,
    /// The slowest process's ramp.
    pub ramp_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    pub cpu_total_s: f64,
    /// Highest CPU share of one process, % of one core (measured period).
    pub cpu_pct_max_process: f64,
    /// Some process used ≥ `bound_pct` × its threads.
    pub client_bound: bool,
    pub welcome: Option<Welcome>,
}

/// Sums counters, merges histograms and CPU; the measured window is the parent's.
pub fn merge(results: &[ProcResult], measured_s: f64, bound_pct: f64) -> Merged {
    let mut m = Merged {
        measured: Counters::default(),
        total: Counters::default(),
        latency: stats::new_latency_histogram(),
        latency_throttled: stats::new_latency_histogram(),
        staleness: stats::new_latency_histogram(),
        connections: ConnectionCounts::default(),
        ramp_s: 0.0,
        cpu_user_s: 0.0,
        cpu_sys_s: 0.0,
        cpu_total_s: 0.0,
        cpu_pct_max_process: 0.0,
        client_bound: false,
        welcome: None,
    };
    for r in results {
        m.measured.add(&r.measured);
        m.total.add(&r.total);
        stats::add_pairs(&mut m.latency, &r.latency);
        stats::add_pairs(&mut m.latency_throttled, &r.latency_throttled);
        stats::add_pairs(&mut m.staleness, &r.staleness);
        m.connections.add(&r.connections);
        m.ramp_s = m.ramp_s.max(r.ramp_s);
        m.cpu_user_s += r.cpu_user_s;
        m.cpu_sys_s += r.cpu_sys_s;
        m.cpu_total_s += r.cpu_total_s;
        let pct = 100.0 * (r.cpu_user_s + r.cpu_sys_s) / measured_s.max(1e-6);
        m.cpu_pct_max_process = m.cpu_pct_max_process.max(pct);
        m.client_bound |= pct >= bound_pct * r.threads.max(1) as f64;
        if m.welcome.is_none() {
            m.welcome = r.welcome.clone();
        }
    }
    m
}

/// A running child.
pub struct ChildProc {
    pub index: usize,
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub json: PathBuf,
}

/// Share of `total` clients of process `k` of `n` (the first ones get one more).
pub fn share(total: usize, n: usize, k: usize) -> usize {
    total / n + usize::from(k < total % n)
}

/// Spawns the children; returns the parent's own arguments (its share of the clients) and the
/// children. Each process connects at `--connect-rate / N`, so the total rate is unchanged.
pub fn spawn_children(args: &Args) -> Result<(Args, Vec<ChildProc>)> {
    let n = args.processes;
    let exe = std::env::current_exe().context("locating the loadgen binary")?;
    let rate = args.connect_rate / n as f64;
    let mut own = args.clone();
    own.clients = share(args.clients, n, 0);
    own.clients_total = args.clients;
    own.connect_rate = rate;
    let mut offset = own.clients;
    let mut children = Vec::new();
    for i in 1..n {
        let json = std::env::temp_dir().join(format!("loadgen-{}-child{i}.json", std::process::id()));
        let _ = std::fs::remove_file(&json);
        let c = child_share(args, i, offset, json.clone());
        offset += c.clients;
        let mut child = tokio::process::Command::new(&exe)
            .arg("--child-index")
            .arg(i.to_string())
            .arg("--child-json")
            .arg(&json)
            .env(CHILD_ARGS_ENV, serde_json::to_string(&c)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning child {i} ({})", exe.display()))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        children.push(ChildProc { index: i, child, stdin, stdout, json });
    }
    Ok((own, children))
}

/// The arguments of child `i` of a `--processes` run, whose first client has the global index
/// `offset`: its share of the reading clients, nothing that belongs to the parent alone.
pub fn child_share(args: &Args, i: usize, offset: usize, json: PathBuf) -> Args {
    let n = args.processes;
    let mut c = args.clone();
    c.clients = share(args.clients, n, i);
    c.client_offset = offset;
    c.clients_total = args.clients;
    c.connect_rate = args.connect_rate / n as f64;
    c.stall = 0;
    c.probe_interval_ms = 0;
    // Churn belongs to the parent, like the probes; --settle stays, so a child's clients are
    // still connected when the parent samples RSS after it.
    c.churn = 0.0;
    c.resume_feed = None; // the parent resumes it, once, when every process is ready
    c.server_pid = None;
    c.json = None;
    c.processes = 1;
    c.child_index = Some(i);
    c.child_json = Some(json);
    c.quiet = true;
    c.observer = false;
    c.no_observer = true;
    c.allow_errors = true;
    c
}

/// The arguments of a child: from [`CHILD_ARGS_ENV`], with the command line's child fields.
pub fn child_args(cli: &Args) -> Result<Args> {
    let text = std::env::var(CHILD_ARGS_ENV).with_context(|| format!("--child-index without {CHILD_ARGS_ENV}"))?;
    let mut a: Args = serde_json::from_str(&text).context("parsing the child arguments")?;
    a.child_index = cli.child_index;
    a.child_json = cli.child_json.clone().or(a.child_json);
    Ok(a)
}

/// Parent: waits for every child's `READY`.
pub async fn wait_ready(children: &mut [ChildProc]) -> Result<()> {
    for c in children.iter_mut() {
        let mut line = String::new();
        loop {
            line.clear();
            if c.stdout.read_line(&mut line).await? == 0 {
                bail!("child {} exited before it was ready", c.index);
            }
            if line.trim() == "READY" {
                break;
            }
        }
    }
    Ok(())
}

/// Parent: tells every child when the measured window starts.
pub async fn send_start(children: &mut [ChildProc], start_us: i64) -> Result<()> {
    for c in children.iter_mut() {
        c.stdin.write_all(format!("START {start_us}\n").as_bytes()).await.with_context(|| format!("telling child {} to start", c.index))?;
        c.stdin.flush().await?;
    }
    Ok(())
}

/// Child: says `READY` and waits for `START <µs>`.
pub async fn child_ready_and_wait() -> Result<i64> {
    let mut out = tokio::io::stdout();
    out.write_all(b"READY\n").await?;
    out.flush().await?;
    let mut line = String::new();
    let mut stdin = BufReader::new(tokio::io::stdin());
    loop {
        line.clear();
        if stdin.read_line(&mut line).await? == 0 {
            bail!("the parent went away before START");
        }
        if let Some(t) = line.trim().strip_prefix("START ") {
            return t.parse().map_err(|e| anyhow!("bad START line {line:?}: {e}"));
        }
    }
}

/// Parent: waits for the children to exit and reads their results.
pub async fn collect(children: Vec<ChildProc>, limit: Duration) -> Result<Vec<ProcResult>> {
    let mut out = Vec::new();
    for mut c in children {
        drop(c.stdin);
        match tokio::time::timeout(limit, c.child.wait()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("waiting for child {}: {e}", c.index),
            Err(_) => bail!("child {} did not finish within {limit:?}", c.index),
        }
        let text = std::fs::read_to_string(&c.json).with_context(|| format!("reading child {}'s results {}", c.index, c.json.display()))?;
        let _ = std::fs::remove_file(&c.json);
        out.push(serde_json::from_str(&text).with_context(|| format!("parsing child {}'s results", c.index))?);
    }
    Ok(out)
}

/// Child: writes its results for the parent.
pub fn write_result(path: &std::path::Path, r: &ProcResult) -> Result<()> {
    std::fs::write(path, serde_json::to_vec(r)?).with_context(|| format!("writing {}", path.display()))
}
