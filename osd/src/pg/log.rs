//! The PG log: the ordered history of changes to a PG's objects, newest last, with the
//! request ids that made them (so a resend is answered, not applied twice). Pure: the
//! shell persists entries as the log changes.
//!
//! `merge_authoritative` is the heart of log-based recovery: given the authoritative
//! history, it finds this copy's divergent entries (changes no one else saw), rewinds
//! them, adopts the rest, and says which objects this copy must recover, at which version.

use std::collections::{BTreeMap, HashMap, VecDeque};

use placement::Version;
use proto::osd::{LogEntry, LogOp, ObjectName, ReqId};

/// Entries a log keeps once the PG is clean; older ones are trimmed (Ceph's
/// `osd_min_pg_log_entries`). A copy that falls further behind is backfilled.
pub const LOG_ENTRIES_KEPT: usize = 3000;
/// Entries a log keeps at most while the PG is not clean.
pub const LOG_ENTRIES_MAX: usize = 10_000;

/// How many entries a log of `len` entries keeps when one more is appended, if it is to
/// be trimmed now. A clean PG's log is trimmed to `LOG_ENTRIES_KEPT` once it holds twice
/// that (one range delete per `LOG_ENTRIES_KEPT` writes); any other's once it passes
/// `LOG_ENTRIES_MAX`, by as much. Either way the log stays bounded however long writes go
/// on, and keeps far more entries than writes can be in flight, so only entries every
/// copy committed are trimmed. A copy the trim leaves behind is backfilled.
pub fn trim_keep(len: usize, clean: bool) -> Option<usize> {
    if clean {
        (len > 2 * LOG_ENTRIES_KEPT).then_some(LOG_ENTRIES_KEPT)
    } else {
        (len > LOG_ENTRIES_MAX).then_some(LOG_ENTRIES_MAX - LOG_ENTRIES_KEPT)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgLog {
    /// Entries after this version are in the log.
    tail: Version,
    entries: VecDeque<LogEntry>,
    reqids: HashMap<ReqId, Version>,
}

/// What merging an authoritative log did to this copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merge {
    /// Objects this copy must recover, with the version it needs.
    pub missing: BTreeMap<ObjectName, Version>,
    /// Objects that must not exist here at the merged version (delete them now).
    pub remove: Vec<ObjectName>,
    /// Entries dropped from this copy's log (divergent).
    pub divergent: Vec<LogEntry>,
}

impl PgLog {
    pub fn new(tail: Version, entries: Vec<LogEntry>) -> PgLog {
        let mut log = PgLog { tail, entries: VecDeque::new(), reqids: HashMap::new() };
        for entry in entries {
            log.append(entry);
        }
        log
    }

    pub fn tail(&self) -> Version {
        self.tail
    }

    pub fn head(&self) -> Version {
        self.entries.back().map(|e| e.version).unwrap_or(self.tail)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &LogEntry> {
        self.entries.iter()
    }

    /// Appends an entry newer than the head.
    pub fn append(&mut self, entry: LogEntry) {
        assert!(
            entry.version > self.head(),
            "log entry {} not after {}",
            entry.version,
            self.head()
        );
        if let Some(reqid) = &entry.reqid {
            self.reqids.insert(reqid.clone(), entry.version);
        }
        self.entries.push_back(entry);
    }

    /// The version a request made, if the log still holds it.
    pub fn find_reqid(&self, reqid: &ReqId) -> Option<Version> {
        self.reqids.get(reqid).copied()
    }

    /// Entries after `after`, at most `max` (at least one), and whether more follow them.
    pub fn page_after(&self, after: Version, max: usize) -> (Vec<LogEntry>, bool) {
        let page: Vec<LogEntry> =
            self.entries.iter().filter(|e| e.version > after).take(max.max(1)).cloned().collect();
        let more = page.last().is_some_and(|last| last.version < self.head());
        (page, more)
    }

    /// Whether this log can bring a copy at `last_update` up to the head.
    pub fn reaches(&self, last_update: Version) -> bool {
        last_update >= self.tail
    }

    /// Drops entries beyond `keep` from the front; returns the new tail.
    pub fn trim(&mut self, keep: usize) -> Version {
        while self.entries.len() > keep {
            let entry = self.entries.pop_front().expect("longer than keep");
            if let Some(reqid) = &entry.reqid
                && self.reqids.get(reqid) == Some(&entry.version)
            {
                self.reqids.remove(reqid);
            }
            self.tail = entry.version;
        }
        self.tail
    }

    /// Adopts the authoritative history `auth` (entries after `auth_tail`, in order):
    /// entries of ours it does not have are divergent and rewound, its entries we lack are
    /// appended, and the objects they touch become missing (or removed, if the
    /// authoritative history deletes them).
    ///
    /// `auth_tail` must not be newer than our head, or our log cannot be merged (backfill).
    pub fn merge_authoritative(&mut self, auth_tail: Version, auth: &[LogEntry]) -> Merge {
        assert!(auth_tail <= self.head(), "merge without overlap: backfill instead");
        let auth_versions: std::collections::HashSet<Version> =
            auth.iter().map(|e| e.version).collect();
        // The common point: our newest entry the authority also has (entries at or before
        // its tail count as shared history).
        let mut common = self.tail.max(auth_tail);
        if let Some(shared) = self
            .entries
            .iter()
            .rev()
            .find(|e| e.version <= auth_tail || auth_versions.contains(&e.version))
        {
            common = common.max(shared.version);
        }
        let mut merge = Merge::default();
        // Rewind divergent entries, newest first: each object goes back to its prior version.
        let mut rewound: BTreeMap<ObjectName, Version> = BTreeMap::new();
        while self.entries.back().is_some_and(|e| e.version > common) {
            let entry = self.entries.pop_back().expect("checked");
            if let Some(reqid) = &entry.reqid {
                self.reqids.remove(reqid);
            }
            rewound.insert(entry.object.clone(), entry.prior_version);
            merge.divergent.push(entry);
        }
        for (object, prior) in rewound {
            if prior == Version::ZERO {
                merge.remove.push(object);
            } else {
                merge.missing.insert(object, prior);
            }
        }
        // Adopt the authority's newer entries: the last change to each object decides.
        for entry in auth.iter().filter(|e| e.version > common) {
            match entry.op {
                LogOp::Modify => {
                    merge.remove.retain(|o| *o != entry.object);
                    merge.missing.insert(entry.object.clone(), entry.version);
                }
                LogOp::Delete => {
                    merge.missing.remove(&entry.object);
                    if !merge.remove.contains(&entry.object) {
                        merge.remove.push(entry.object.clone());
                    }
                }
            }
            self.append(entry.clone());
        }
        merge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn entry(
        epoch: u64,
        seq: u64,
        object: &str,
        prior: (u64, u64),
        op: LogOp,
    ) -> LogEntry {
        LogEntry {
            version: Version::new(epoch, seq),
            prior_version: Version::new(prior.0, prior.1),
            object: ObjectName::new(object),
            op,
            reqid: Some(ReqId { client: "client.t".into(), id: epoch * 1000 + seq }),
            delta: Default::default(),
        }
    }

    #[test]
    fn a_log_is_read_in_pages_that_say_whether_more_follow() {
        let mut log = PgLog::default();
        for seq in 1..=5 {
            log.append(entry(1, seq, "o", (1, seq - 1), LogOp::Modify));
        }
        let versions = |page: &[LogEntry]| page.iter().map(|e| e.version.seq).collect::<Vec<_>>();
        let (page, more) = log.page_after(Version::ZERO, 2);
        assert_eq!((versions(&page), more), (vec![1, 2], true));
        let (page, more) = log.page_after(Version::new(1, 2), 2);
        assert_eq!((versions(&page), more), (vec![3, 4], true));
        let (page, more) = log.page_after(Version::new(1, 4), 2);
        assert_eq!((versions(&page), more), (vec![5], false));
        // A page that ends at the head says so, however large the page asked for.
        let (page, more) = log.page_after(Version::new(1, 3), 2);
        assert_eq!((versions(&page), more), (vec![4, 5], false));
        assert_eq!(log.page_after(Version::new(1, 5), 2), (Vec::new(), false));
        // A page is never empty while entries remain, even if asked for none.
        assert_eq!(versions(&log.page_after(Version::ZERO, 0).0), vec![1]);
    }

    #[test]
    fn a_log_is_trimmed_in_steps_and_stays_bounded() {
        assert_eq!(trim_keep(2 * LOG_ENTRIES_KEPT, true), None);
        assert_eq!(trim_keep(2 * LOG_ENTRIES_KEPT + 1, true), Some(LOG_ENTRIES_KEPT));
        assert_eq!(trim_keep(2 * LOG_ENTRIES_KEPT + 1, false), None);
        assert_eq!(trim_keep(LOG_ENTRIES_MAX + 1, false), Some(LOG_ENTRIES_MAX - LOG_ENTRIES_KEPT));
        // Appending forever to a clean PG's log never holds more than twice what it keeps.
        let mut log = PgLog::default();
        for seq in 1..=5 * LOG_ENTRIES_KEPT as u64 {
            log.append(entry(1, seq, "o", (1, seq - 1), LogOp::Modify));
            if let Some(keep) = trim_keep(log.len(), true) {
                log.trim(keep);
            }
            assert!(log.len() <= 2 * LOG_ENTRIES_KEPT);
        }
        assert!(log.len() >= LOG_ENTRIES_KEPT);
        assert_eq!(log.head(), Version::new(1, 5 * LOG_ENTRIES_KEPT as u64));
    }

    #[test]
    fn resends_are_found_until_trimmed() {
        let mut log = PgLog::default();
        log.append(entry(1, 1, "a", (0, 0), LogOp::Modify));
        log.append(entry(1, 2, "b", (0, 0), LogOp::Modify));
        let reqid = ReqId { client: "client.t".into(), id: 1001 };
        assert_eq!(log.find_reqid(&reqid), Some(Version::new(1, 1)));
        assert_eq!(log.trim(1), Version::new(1, 1));
        assert_eq!(log.find_reqid(&reqid), None);
        assert!(log.reaches(Version::new(1, 1)) && !log.reaches(Version::ZERO));
    }

    #[test]
    fn a_copy_behind_adopts_the_newer_entries_as_missing() {
        let mut ours = PgLog::default();
        ours.append(entry(1, 1, "a", (0, 0), LogOp::Modify));
        let auth = vec![
            entry(1, 1, "a", (0, 0), LogOp::Modify),
            entry(1, 2, "b", (0, 0), LogOp::Modify),
            entry(2, 3, "a", (1, 1), LogOp::Modify),
            entry(2, 4, "c", (0, 0), LogOp::Modify),
            entry(2, 5, "c", (2, 4), LogOp::Delete),
        ];
        let merge = ours.merge_authoritative(Version::ZERO, &auth);
        assert!(merge.divergent.is_empty());
        assert_eq!(
            merge.missing,
            BTreeMap::from([
                (ObjectName::new("a"), Version::new(2, 3)),
                (ObjectName::new("b"), Version::new(1, 2)),
            ])
        );
        assert_eq!(merge.remove, vec![ObjectName::new("c")]);
        assert_eq!(ours.head(), Version::new(2, 5));
    }

    #[test]
    fn divergent_entries_are_rewound_to_their_prior_versions() {
        // We applied 2.3 (a) and 2.4 (new object d) that the new primary never saw; the
        // authority continued with 3.3 (b).
        let mut ours = PgLog::default();
        ours.append(entry(1, 1, "a", (0, 0), LogOp::Modify));
        ours.append(entry(1, 2, "b", (0, 0), LogOp::Modify));
        ours.append(entry(2, 3, "a", (1, 1), LogOp::Modify));
        ours.append(entry(2, 4, "d", (0, 0), LogOp::Modify));
        let auth = vec![
            entry(1, 1, "a", (0, 0), LogOp::Modify),
            entry(1, 2, "b", (0, 0), LogOp::Modify),
            entry(3, 3, "b", (1, 2), LogOp::Modify),
        ];
        let merge = ours.merge_authoritative(Version::ZERO, &auth);
        assert_eq!(merge.divergent.len(), 2);
        assert_eq!(
            merge.missing,
            BTreeMap::from([
                (ObjectName::new("a"), Version::new(1, 1)),
                (ObjectName::new("b"), Version::new(3, 3)),
            ])
        );
        assert_eq!(merge.remove, vec![ObjectName::new("d")]);
        assert_eq!(ours.head(), Version::new(3, 3));
        let gone = ReqId { client: "client.t".into(), id: 2004 };
        assert_eq!(ours.find_reqid(&gone), None);
    }

    #[test]
    fn an_identical_log_merges_to_nothing() {
        let entries =
            vec![entry(1, 1, "a", (0, 0), LogOp::Modify), entry(1, 2, "b", (0, 0), LogOp::Modify)];
        let mut ours = PgLog::new(Version::ZERO, entries.clone());
        let merge = ours.merge_authoritative(Version::ZERO, &entries);
        assert_eq!(merge, Merge::default());
        assert_eq!(ours.head(), Version::new(1, 2));
    }
}
