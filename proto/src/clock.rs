//! The clock the daemons read time from, given to them (their `Parts`) so that a test or a
//! simulation can run them on time it controls. Wall time, in ms since the Unix epoch, is
//! what every `*_ms` time on the wire carries (stamps, mtimes, pings, clock offsets);
//! intervals (graces, silences, ages) are measured on a monotonic clock, so a step of the
//! wall clock (NTP after a VM resumes) cannot make every peer look silent at once.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Wall and monotonic time for a daemon.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch: for times that leave the process.
    fn now_ms(&self) -> i64;

    /// Milliseconds on a monotonic clock since a fixed moment of this process: for
    /// intervals.
    fn mono_ms(&self) -> i64 {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_millis() as i64
    }
}

/// The system's clocks, the wall clock shifted by `offset_ms` (`CAIRN_CLOCK_OFFSET_MS`: a
/// test hook, to exercise CLOCK_SKEW).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock {
    pub offset_ms: i64,
}

impl SystemClock {
    pub fn from_env() -> SystemClock {
        let offset_ms =
            std::env::var("CAIRN_CLOCK_OFFSET_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        SystemClock { offset_ms }
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let since_epoch =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        since_epoch + self.offset_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_shifts_wall_time_and_not_intervals() {
        let (plain, shifted) = (SystemClock::default(), SystemClock { offset_ms: 60_000 });
        let (a, b) = (plain.now_ms(), shifted.now_ms());
        // The two reads are apart by far less than a minute.
        assert!((b - a - 60_000).abs() < 1_000, "{a} {b}");
        let (m1, m2) = (plain.mono_ms(), shifted.mono_ms());
        assert!(m2 >= m1 && m2 - m1 < 1_000, "{m1} {m2}");
    }
}
