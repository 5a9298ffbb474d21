//! What the benchmark programs share: how they report the machine's load, latency
//! percentiles and CPU time, so their figures are computed the same way, and the second
//! process that the transport benchmarks measure against.

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

pub mod dev;

/// The first three fields of /proc/loadavg (1, 5 and 15 minutes).
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The `p` quantile (0 < p <= 1) of `sorted` by the nearest-rank method; `sorted` must not
/// be empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// User plus system CPU time of this process (all its threads) so far.
pub fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we point it at; RUSAGE_SELF is always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_SELF)");
    // SAFETY: getrusage succeeded, so it initialised the struct.
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The value after `name` in `args`.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

/// The server half of a transport benchmark: this program re-executed with `--serve` and
/// `args`, so that each side's CPU time is its own. The server prints `addr ADDR` once
/// listening (`serve_control` does the rest), answers each `cpu` line on its standard
/// input with `cpu MICROSECONDS`, and ends when its standard input closes (on drop).
pub struct ServerProcess {
    child: Child,
    control: Option<ChildStdin>,
    answers: BufReader<ChildStdout>,
    pub addr: SocketAddr,
}

impl ServerProcess {
    pub fn start(args: &[&str]) -> Result<ServerProcess> {
        let exe = std::env::current_exe().context("find this program")?;
        let mut child = Command::new(exe)
            .arg("--serve")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start the server process")?;
        let control = child.stdin.take();
        let mut answers = BufReader::new(child.stdout.take().context("server stdout")?);
        let mut line = String::new();
        answers.read_line(&mut line)?;
        let addr = line
            .strip_prefix("addr ")
            .with_context(|| format!("the server said '{}'", line.trim()))?
            .trim()
            .parse()?;
        Ok(ServerProcess { child, control, answers, addr })
    }

    /// The server's CPU time so far.
    pub fn cpu(&mut self) -> Result<Duration> {
        let control = self.control.as_mut().context("the server stopped")?;
        writeln!(control, "cpu")?;
        control.flush()?;
        let mut line = String::new();
        self.answers.read_line(&mut line)?;
        let micros: u64 = line
            .strip_prefix("cpu ")
            .with_context(|| format!("the server said '{}'", line.trim()))?
            .trim()
            .parse()?;
        Ok(Duration::from_micros(micros))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Closing its standard input ends it.
        self.control = None;
        let _ = self.child.wait();
    }
}

/// The server process's side of `ServerProcess`: prints `addr`, then answers `cpu` lines
/// until its standard input closes.
pub fn serve_control(addr: SocketAddr) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "addr {addr}")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        if line? == "cpu" {
            writeln!(out, "cpu {}", cpu_time().as_micros())?;
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&ms, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&ms, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&ms[..1], 0.99), Duration::from_millis(1));
    }
}
