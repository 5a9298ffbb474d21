//! How full this OSD is, and which others are: what keeps a full disk from losing data.
//!
//! An OSD's space is its configured capacity (`capacity_bytes` in osd.toml) or else the
//! filesystem its store is on; what is not free of it is used, so anything else filling
//! the same filesystem counts too. The OSD measures itself every `MEASURE_INTERVAL` and
//! counts the bytes written since, so its own level is never a whole interval behind. It
//! learns the others' levels from the monitors with each beacon's answer.
//!
//! A primary refuses a write (`NoSpace`) when it, or any OSD of the acting set, is full;
//! ops that only free space (removes, truncates, omap and xattr removals) still go through.
//! Backfill does not move data onto an OSD at backfillfull or above: the primary stops
//! when the monitors say so, or when a push's answer says the target got there, and a
//! target at that level refuses the scan that begins each batch.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use objectstore::ObjectStore;
use proto::osd::{Fill, FullRatios, OsdConfig, used_percent};

/// How often the OSD measures its own space.
pub const MEASURE_INTERVAL: Duration = Duration::from_secs(1);

/// How long an OSD that answered a backfill push with "backfillfull" counts as such
/// without the monitors saying so (their word lags by a report and a beacon).
pub const LEARNED_FOR: Duration = Duration::from_secs(10);

/// What the monitors last said about fill levels, and what pushes taught since.
#[derive(Debug, Default)]
struct Levels {
    ratios: FullRatios,
    full: Vec<u32>,
    backfillfull: Vec<u32>,
    learned: Vec<(u32, Instant)>,
}

pub struct Space {
    me: u32,
    dir: PathBuf,
    capacity: Option<u64>,
    /// At the last measurement: the space, and what was free of it.
    total: AtomicU64,
    avail: AtomicU64,
    /// Bytes written since the last measurement.
    written: AtomicU64,
    levels: Mutex<Levels>,
}

impl Space {
    pub fn new(me: u32, dir: PathBuf, capacity: Option<u64>) -> Space {
        Space {
            me,
            dir,
            capacity,
            total: AtomicU64::new(0),
            avail: AtomicU64::new(0),
            written: AtomicU64::new(0),
            levels: Mutex::default(),
        }
    }

    fn levels(&self) -> std::sync::MutexGuard<'_, Levels> {
        self.levels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the ratios and the others' levels from the monitors' answer.
    pub fn configure(&self, config: &OsdConfig) {
        let mut levels = self.levels();
        levels.ratios = config.ratios;
        levels.full.clone_from(&config.full_osds);
        levels.backfillfull.clone_from(&config.backfillfull_osds);
    }

    /// Measures the space now: `(total, avail)` in bytes, as the OSD reports them.
    pub fn measure(&self, store: &dyn ObjectStore) -> (u64, u64) {
        let (fs_total, fs_avail) = filesystem_space(&self.dir).unwrap_or((0, 0));
        let (total, avail) = match self.capacity {
            Some(capacity) => (capacity, fs_avail.min(capacity.saturating_sub(store.used_bytes()))),
            None => (fs_total, fs_avail),
        };
        self.written.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        self.avail.store(avail, Ordering::Relaxed);
        (total, avail)
    }

    /// The space and what was free of it at the last measurement.
    pub fn last(&self) -> (u64, u64) {
        (self.total.load(Ordering::Relaxed), self.avail.load(Ordering::Relaxed))
    }

    /// Counts bytes about to be written (they are not in the last measurement).
    pub fn wrote(&self, bytes: u64) {
        self.written.fetch_add(bytes, Ordering::Relaxed);
    }

    /// This OSD's used space in percent, counting what was written since it was measured.
    pub fn used_percent(&self) -> f64 {
        let avail = self.avail.load(Ordering::Relaxed);
        let written = self.written.load(Ordering::Relaxed);
        used_percent(self.total.load(Ordering::Relaxed), avail.saturating_sub(written))
    }

    /// Why a write onto `acting` must be refused, if it must: this OSD or one of them is
    /// full.
    pub fn refuse_write(&self, acting: &[u32]) -> Option<String> {
        let levels = self.levels();
        let used = self.used_percent();
        if levels.ratios.fill(used) == Fill::Full {
            return Some(format!(
                "osd.{} is full ({used:.1}% used, full at {}%): writes are refused until \
                 space is freed (deletes work) or added",
                self.me, levels.ratios.full
            ));
        }
        let full = acting.iter().find(|osd| levels.full.contains(osd))?;
        Some(format!(
            "osd.{full} is full (at or above {}% used): writes are refused until space is \
             freed (deletes work) or added",
            levels.ratios.full
        ))
    }

    /// `osd` answered a backfill push at backfillfull or above.
    pub fn learned_backfillfull(&self, osd: u32) {
        let mut levels = self.levels();
        levels.learned.retain(|(o, _)| *o != osd);
        levels.learned.push((osd, Instant::now()));
    }

    /// A backfill target at backfillfull or above, as the monitors say or a push told.
    pub fn backfillfull_among(&self, targets: &[u32]) -> Option<u32> {
        let mut levels = self.levels();
        levels.learned.retain(|(_, at)| at.elapsed() < LEARNED_FOR);
        let levels = &*levels;
        targets.iter().copied().find(|osd| {
            levels.backfillfull.contains(osd) || levels.learned.iter().any(|(o, _)| o == osd)
        })
    }

    /// Why this OSD refuses to be a backfill target, if it does.
    pub fn refuse_backfill(&self) -> Option<String> {
        let ratios = self.levels().ratios;
        let used = self.used_percent();
        (ratios.fill(used) >= Fill::Backfillfull).then(|| {
            format!(
                "osd.{} is backfillfull ({used:.1}% used, backfillfull at {}%)",
                self.me, ratios.backfillfull
            )
        })
    }
}

/// The size of the filesystem holding `path`, and the bytes free on it for us.
fn filesystem_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a valid out-pointer for the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frag = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frag, st.f_bavail as u64 * frag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use objectstore::{KvObjectStore, MemoryEngine};

    fn config(full_osds: Vec<u32>, backfillfull_osds: Vec<u32>) -> OsdConfig {
        OsdConfig {
            recovery_max_active: 1,
            backfill_max_active: 1,
            ratios: FullRatios::default(),
            full_osds,
            backfillfull_osds,
            scrub_interval_s: 1,
            deep_scrub_interval_s: 1,
            scrub_sleep_ms: 0,
            snap_trim_sleep_ms: 0,
            op_complaint_time_s: 30,
            scrub_load_threshold_percent: 50,
        }
    }

    #[test]
    fn writes_since_the_last_measurement_count_and_full_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvObjectStore::new(MemoryEngine::new());
        let space = Space::new(7, dir.path().to_owned(), Some(1000));
        assert_eq!(space.measure(&store), (1000, 1000));
        assert_eq!(space.last(), (1000, 1000));
        assert_eq!(space.used_percent(), 0.0);
        assert_eq!(space.refuse_write(&[7, 1, 2]), None);
        space.wrote(900);
        assert_eq!(
            space.refuse_backfill().unwrap(),
            "osd.7 is backfillfull (90.0% used, backfillfull at 90%)"
        );
        assert_eq!(space.refuse_write(&[7]), None);
        space.wrote(50);
        let why = space.refuse_write(&[7, 1, 2]).expect("full");
        assert!(why.starts_with("osd.7 is full (95.0% used, full at 95%)"), "{why}");
        // Measuring again starts the count over from what the store holds (nothing here).
        space.measure(&store);
        assert_eq!(space.refuse_write(&[7]), None);
    }

    #[test]
    fn the_monitors_say_which_others_are_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvObjectStore::new(MemoryEngine::new());
        let space = Space::new(0, dir.path().to_owned(), None);
        let (total, avail) = space.measure(&store);
        assert!(total > 0 && avail <= total, "the filesystem's size: {total} {avail}");
        space.configure(&config(vec![2], vec![2, 3]));
        assert_eq!(space.refuse_write(&[0, 1]), None);
        let why = space.refuse_write(&[0, 2]).expect("osd.2 is full");
        assert!(why.starts_with("osd.2 is full (at or above 95% used)"), "{why}");
        assert_eq!(space.backfillfull_among(&[1, 3]), Some(3));
        assert_eq!(space.backfillfull_among(&[1]), None);
        // A push's answer counts before the monitors have heard.
        space.learned_backfillfull(1);
        assert_eq!(space.backfillfull_among(&[1]), Some(1));
    }
}
