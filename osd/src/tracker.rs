//! The client ops an OSD has in flight, so that it can say which are slow (SLOW_OPS),
//! as Ceph's op tracker does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Default)]
pub struct OpTracker {
    next: AtomicU64,
    /// By admission order, so the first entry is the oldest op.
    ops: Mutex<BTreeMap<u64, (Instant, String)>>,
}

/// An op in flight; it leaves the tracker when this is dropped (answered, or abandoned).
pub struct Tracked {
    tracker: Arc<OpTracker>,
    id: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.tracker.ops.lock().expect("op tracker lock").remove(&self.id);
    }
}

/// What the tracker says about the ops in flight.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slow {
    /// Ops in flight for longer than the threshold.
    pub count: u32,
    /// The oldest op in flight (slow or not), its age and what it is.
    pub oldest: Option<(Duration, String)>,
}

impl OpTracker {
    /// Tracks an op from now on; `describe` says what it is (for the health detail).
    pub fn start(self: &Arc<Self>, describe: String) -> Tracked {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.ops.lock().expect("op tracker lock").insert(id, (Instant::now(), describe));
        Tracked { tracker: self.clone(), id }
    }

    /// The ops in flight for longer than `threshold`, as of `now`.
    pub fn slow(&self, threshold: Duration, now: Instant) -> Slow {
        let ops = self.ops.lock().expect("op tracker lock");
        let age = |started: &Instant| now.saturating_duration_since(*started);
        // Admission order is age order, so the slow ones are a prefix.
        let count = ops.values().take_while(|(started, _)| age(started) > threshold).count();
        Slow {
            count: count as u32,
            oldest: ops.values().next().map(|(started, what)| (age(started), what.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_older_than_the_threshold_are_slow_until_answered() {
        let tracker = Arc::new(OpTracker::default());
        let a = tracker.start("op a".into());
        let b = tracker.start("op b".into());
        let later = Instant::now() + Duration::from_secs(40);
        let slow = tracker.slow(Duration::from_secs(30), later);
        assert_eq!(slow.count, 2);
        assert_eq!(slow.oldest.as_ref().map(|(_, what)| what.as_str()), Some("op a"));
        assert!(slow.oldest.unwrap().0 >= Duration::from_secs(40));
        drop(a);
        let slow = tracker.slow(Duration::from_secs(30), later);
        assert_eq!((slow.count, slow.oldest.map(|(_, w)| w)), (1, Some("op b".to_owned())));
        let _c = tracker.start("op c".into());
        // A new op is not slow yet; the older one still is.
        assert_eq!(tracker.slow(Duration::from_secs(30), Instant::now()).count, 0);
        assert_eq!(tracker.slow(Duration::from_secs(30), later).count, 2);
        drop(b);
        assert_eq!(tracker.slow(Duration::ZERO, later).oldest.map(|(_, w)| w), Some("op c".into()));
    }

    #[test]
    fn an_idle_tracker_has_nothing_slow() {
        let tracker = OpTracker::default();
        assert_eq!(tracker.slow(Duration::ZERO, Instant::now()), Slow::default());
    }
}
