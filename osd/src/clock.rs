//! The OSD's wall clock, passed in (`daemon::Parts`), so that a test or a simulation runs
//! OSDs on time it controls. Wall time, in ms since the Unix epoch, is for times that leave
//! the process: scrub stamps, object mtimes, pongs, the last recovery. Intervals (timeouts,
//! graces, slow-op ages) are measured on tokio's clock (`tokio::time::Instant`), which a
//! paused runtime (tokio's `test-util`, not enabled here yet) can drive.

/// Wall time for an OSD.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system's wall clock, shifted by `CAIRN_CLOCK_OFFSET_MS` (a test hook, as the
/// monitors have, to exercise CLOCK_SKEW).
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
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        since_epoch + self.offset_ms
    }
}
