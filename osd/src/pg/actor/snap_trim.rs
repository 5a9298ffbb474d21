//! Snapshot trimming on the primary, as Ceph's snap trimmer: once the pool's map lists
//! snapshot ids removed since this copy was last trimmed, the PG walks its heads a batch
//! at a time, `osd.snap_trim_sleep_ms` apart, and each object whose snap set names a
//! removed snapshot gets a write of its own (`ops::trim`): clones no living snapshot needs
//! removed, the snap set updated, a whiteout left without clones removed. The writes are
//! logged and replicated as client writes are, so recovery and peering carry them; an
//! object busy with a client op is left for the next batch. The PG's state says
//! `snaptrim` meanwhile.

use placement::snaps::SnapIntervals;

use super::*;

/// Heads one batch of trimming looks at.
const TRIM_BATCH: usize = 16;

/// A walk of the PG's heads for the removed snapshots `removed`, after `after`.
pub struct Trim {
    removed: SnapIntervals,
    after: Option<objectstore::ObjectId>,
    /// Clones removed so far by this walk.
    clones: u64,
}

impl Pg {
    /// Starts trimming if the pool has removed snapshots this copy was not trimmed of
    /// (a replicated PG's active primary).
    pub(super) fn snap_trim_check(&mut self) {
        if !self.is_primary() || self.state != State::Active || self.ec.is_some() {
            return;
        }
        let Some(pool) = self.map.pool(self.id.pool) else { return };
        if self.trim.is_some() || pool.snaps.removed == self.trimmed {
            return;
        }
        tracing::info!(pg = %self.id, "trimming removed snapshots");
        self.trim = Some(Trim { removed: pool.snaps.removed.clone(), after: None, clones: 0 });
        self.snap_trim_after(Duration::ZERO);
    }

    fn snap_trim_after(&self, pause: Duration) {
        let (interval, inbox) = (self.interval, self.inbox.clone());
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            let _ = inbox.send(Event::SnapTrim { interval }).await;
        });
    }

    /// Trims one object: the clones it dropped, or `None` if its write failed and it is
    /// to be tried again (an object whose snap set cannot be read keeps its clones).
    fn trim_object(&mut self, name: &ObjectName, removed: &SnapIntervals) -> Option<u64> {
        let store = self.shared.store.as_ref();
        let executed = match ops::trim(store, self.c, name, |s| removed.contains(s)) {
            Ok(Some(executed)) => executed,
            Ok(None) => return Some(0),
            Err(e) => {
                tracing::warn!(pg = %self.id, object = %name, error = %e.message, "cannot trim an object's snapshots; it keeps its clones");
                return Some(0);
            }
        };
        let dropped = executed
            .rep_ops
            .iter()
            .filter(|op| matches!(op, proto::osd::RepOp::RemoveClone { .. }))
            .count() as u64;
        let reqid =
            ReqId { client: format!("osd.{}", self.me()), id: proto::reqid::new_request_id() };
        match self.apply_write(name, reqid, executed) {
            Ok(applied) => {
                // No one waits for the answer: the write commits as any does.
                let (reply, _) = oneshot::channel();
                self.send_applied(applied, reply);
                Some(dropped)
            }
            Err(e) => {
                tracing::warn!(pg = %self.id, object = %name, error = %e.message, "snapshot trimming of an object failed; retrying");
                None
            }
        }
    }

    /// One batch of trimming.
    pub(super) fn snap_trim_batch(&mut self) {
        if !self.is_primary() || self.state != State::Active {
            self.trim = None;
            return;
        }
        let Some(trim) = self.trim.as_ref() else { return };
        let (removed, mut after) = (trim.removed.clone(), trim.after.clone());
        let page = match self.shared.store.list_heads(self.c, after.as_ref(), TRIM_BATCH) {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(pg = %self.id, error = %e, "snapshot trimming cannot list objects; retrying");
                return self.snap_trim_after(Duration::from_secs(1));
            }
        };
        let mut done = page.len() < TRIM_BATCH;
        let mut clones = 0u64;
        for (oid, _) in &page {
            let name = object_name(oid);
            let view = self.admission_view(&name);
            if !admission::may_release(&view) || view.held > 0 {
                // Busy with a client op: next batch.
                done = false;
                break;
            }
            match self.trim_object(&name, &removed) {
                Some(dropped) => clones += dropped,
                None => {
                    done = false;
                    break;
                }
            }
            after = Some(oid.clone());
        }
        let Some(trim) = self.trim.as_mut() else { return };
        trim.after = after;
        trim.clones += clones;
        if done {
            tracing::info!(pg = %self.id, clones = trim.clones, "removed snapshots trimmed");
            self.trimmed = trim.removed.clone();
            self.trim = None;
            return;
        }
        let pause = self.shared.snap_trim_sleep_ms.load(Ordering::Relaxed);
        self.snap_trim_after(Duration::from_millis(pause));
    }
}
