//! Operating-system helpers: file-descriptor limit, own CPU time, another process's RSS.

use std::time::Duration;

use anyhow::{Result, bail};

/// Descriptors kept free for things other than client sockets: stdio, the runtime's epoll and
/// eventfd, probes, the symbol fetch, the JSON file, /proc reads.
pub const FD_RESERVE: u64 = 64;

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the resulting soft limit.
pub fn raise_nofile_limit() -> Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: plain syscall with a struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
        // On failure we simply keep the old soft limit; the caller checks it against need.
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    Ok(lim.rlim_cur as u64)
}

/// Linux's ephemeral port range (all connections go to one server ip:port, so each needs
/// its own local port). `None` where unavailable.
pub fn ephemeral_ports() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<u64>());
    let (lo, hi) = (it.next()?.ok()?, it.next()?.ok()?);
    Some(hi.saturating_sub(lo) + 1)
}

/// User and system CPU time of this process (all threads).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    pub user: Duration,
    pub sys: Duration,
}

pub fn cpu_times() -> CpuTimes {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    CpuTimes { user: tv(ru.ru_utime), sys: tv(ru.ru_stime) }
}

/// VmRSS of `pid` in bytes, or `None` if the process is gone or the field missing.
pub fn vm_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// Parses the `VmRSS:   123456 kB` line of /proc/PID/status.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut it = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = it.next()?.parse().ok()?;
    let unit = match it.next() {
        Some("kB") | None => 1024,
        Some("mB") | Some("MB") => 1024 * 1024,
        Some(_) => 1,
    };
    Some(value * unit)
}

/// Clock ticks per second of the times in /proc/PID/stat (`sysconf(_SC_CLK_TCK)`, 100 on
/// every Linux we run on).
pub fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// CPU seconds (user + system, all threads) that `pid` has used so far, from /proc/PID/stat;
/// `None` if the process is gone. Resolution: one clock tick (10 ms).
pub fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (utime, stime) = parse_stat_cpu_ticks(&stat)?;
    Some((utime + stime) as f64 / clock_ticks_per_s() as f64)
}

/// `utime` and `stime` (fields 14 and 15, in clock ticks) of a /proc/PID/stat line. The
/// command name (field 2) is in parentheses and may itself contain spaces and parentheses,
/// so the fields are counted from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so utime (14) is index 11, stime (15) 12.
    let mut fields = rest.split_whitespace().skip(11);
    let utime = fields.next()?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}
