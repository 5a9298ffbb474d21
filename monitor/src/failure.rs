//! Failure detection, as a sans-I/O core the leader drives: beacons, peer reports and boots
//! go in with the time, `OsdEvent`s to propose come out.
//!
//! An up OSD is marked down when it has sent no beacon within `osd_beacon_grace`, or when
//! `min_down_reporters` distinct peers reported it unreachable within that grace. A down OSD
//! is marked out after `down_out_interval` (the `noout` flag is honoured when the event
//! applies). A booting OSD is marked up at once, unless it flapped: marked down
//! `osd_flap_count` times within `osd_flap_window`, when its boot waits
//! `osd_flap_backoff`, doubled for every further flap (capped at an hour).
//!
//! The state here is soft: a new leader starts with an empty one and gives every OSD a
//! full grace from the moment it took over, so a failover never marks a healthy OSD down.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use placement::{ItemId, MapFlag, OsdId, OsdMap};

use crate::settings::Settings;
use crate::state::OsdEvent;

/// A proposal not yet visible in the map is not repeated within this long.
const PROPOSAL_RETRY_MS: i64 = 5_000;
/// The longest a flapping OSD's boot waits.
const FLAP_BACKOFF_MAX_MS: i64 = 3_600_000;
/// Down markings remembered per OSD for flap detection.
const FLAPS_KEPT: usize = 64;

#[derive(Debug, Default)]
pub struct FailureDetector {
    /// When this detector started (the leader's term began): the grace counts from here
    /// for OSDs it has not heard from.
    started_ms: i64,
    last_beacon_ms: HashMap<OsdId, i64>,
    /// Per target, the reporters and when they last reported.
    reports: HashMap<OsdId, BTreeMap<OsdId, i64>>,
    /// When this detector first saw each OSD down.
    down_since_ms: HashMap<OsdId, i64>,
    /// When each OSD was seen to go from up to down in the map, most recent last.
    flaps: HashMap<OsdId, VecDeque<i64>>,
    /// The OSDs that were up at the last tick.
    up_last_tick: BTreeSet<OsdId>,
    /// Boots held back by flap damping: address and earliest time.
    damped: BTreeMap<OsdId, (String, i64)>,
    /// Events proposed and not yet seen in the map, with when.
    proposed: HashMap<(OsdId, u8), i64>,
}

impl FailureDetector {
    pub fn new(now_ms: i64) -> FailureDetector {
        FailureDetector { started_ms: now_ms, ..FailureDetector::default() }
    }

    pub fn beacon(&mut self, osd: OsdId, now_ms: i64) {
        self.last_beacon_ms.insert(osd, now_ms);
    }

    /// `reporter` cannot reach `target`.
    pub fn report(&mut self, reporter: OsdId, target: OsdId, now_ms: i64) {
        if reporter != target {
            self.reports.entry(target).or_default().insert(reporter, now_ms);
        }
    }

    /// An OSD booting: the event to propose now, or `None` when damping holds it back
    /// (then `tick` proposes it when the wait is over).
    pub fn boot(
        &mut self,
        osd: OsdId,
        addr: String,
        settings: &Settings,
        now_ms: i64,
    ) -> Option<OsdEvent> {
        self.beacon(osd, now_ms);
        self.reports.remove(&osd);
        let wait = self.flap_wait_ms(osd, settings, now_ms);
        if wait > 0 {
            self.damped.insert(osd, (addr, now_ms + wait));
            return None;
        }
        self.damped.remove(&osd);
        Some(OsdEvent::Boot { osd, addr })
    }

    /// How long a boot of `osd` must wait now, from its recent down markings.
    fn flap_wait_ms(&self, osd: OsdId, settings: &Settings, now_ms: i64) -> i64 {
        let window = settings.osd_flap_window_s as i64 * 1000;
        let recent =
            self.flaps.get(&osd).map_or(0, |f| f.iter().filter(|&&t| now_ms - t <= window).count());
        let threshold = settings.osd_flap_count as usize;
        if recent < threshold {
            return 0;
        }
        let doublings = (recent - threshold).min(20) as u32;
        (settings.osd_flap_backoff_s as i64 * 1000)
            .saturating_mul(1 << doublings)
            .min(FLAP_BACKOFF_MAX_MS)
    }

    /// OSDs whose boots are being damped (OSD_FLAPPING).
    pub fn flapping(&self) -> BTreeSet<OsdId> {
        self.damped.keys().copied().collect()
    }

    /// The events due at `now_ms` for the map as it is.
    pub fn tick(&mut self, map: &OsdMap, settings: &Settings, now_ms: i64) -> Vec<OsdEvent> {
        let grace = settings.osd_beacon_grace_s as i64 * 1000;
        let out_after = settings.down_out_interval_s as i64 * 1000;
        let flags = &map.contents().flags;
        let (nodown, noout) = (flags.contains(&MapFlag::Nodown), flags.contains(&MapFlag::Noout));
        let osds = &map.contents().osds;
        // Reports about OSDs that do not exist are dropped; only up OSDs count as reporters.
        self.reports.retain(|target, _| osds.contains_key(target));
        let parents =
            if self.reports.is_empty() { HashMap::new() } else { map.contents().crush.parents() };
        let mut down = Vec::new();
        let mut out = Vec::new();
        for (&osd, state) in osds {
            if state.up {
                self.up_last_tick.insert(osd);
                self.down_since_ms.remove(&osd);
                self.proposed.remove(&(osd, 1));
                let last = self
                    .last_beacon_ms
                    .get(&osd)
                    .copied()
                    .unwrap_or(self.started_ms)
                    .max(self.started_ms);
                // Reporters count by where they are: several OSDs of one host cut off from
                // the others count once (Ceph's reporter subtree, at the OSD's parent).
                let reporters = self.reports.get(&osd).map_or(0, |r| {
                    r.iter()
                        .filter(|&(reporter, &t)| {
                            now_ms - t <= grace && osds.get(reporter).is_some_and(|s| s.up)
                        })
                        .map(|(reporter, _)| {
                            let item = ItemId::from(*reporter);
                            parents.get(&item).map_or(item, |&bucket| bucket.into())
                        })
                        .collect::<BTreeSet<ItemId>>()
                        .len()
                });
                let silent = now_ms - last > grace;
                let reported = reporters >= settings.min_down_reporters as usize;
                // Under `nodown` nothing is proposed: it would change nothing.
                if (silent || reported) && !nodown && self.due(osd, 0, now_ms) {
                    down.push(osd);
                }
            } else {
                self.proposed.remove(&(osd, 0));
                // A flap is a real transition in the map, not a proposal.
                if self.up_last_tick.remove(&osd) {
                    let flaps = self.flaps.entry(osd).or_default();
                    flaps.push_back(now_ms);
                    while flaps.len() > FLAPS_KEPT {
                        flaps.pop_front();
                    }
                }
                let since = *self.down_since_ms.entry(osd).or_insert(now_ms);
                if state.is_in && !noout && now_ms - since >= out_after && self.due(osd, 1, now_ms)
                {
                    out.push(osd);
                }
            }
        }
        for osd in &down {
            self.reports.remove(osd);
        }
        self.up_last_tick.retain(|osd| osds.contains_key(osd));
        let mut events = Vec::new();
        if !down.is_empty() {
            events.push(OsdEvent::MarkDown { osds: down });
        }
        if !out.is_empty() {
            events.push(OsdEvent::MarkOut { osds: out });
        }
        let ready: Vec<OsdId> =
            self.damped.iter().filter(|(_, (_, at))| *at <= now_ms).map(|(o, _)| *o).collect();
        for osd in ready {
            let (addr, _) = self.damped.remove(&osd).expect("listed above");
            events.push(OsdEvent::Boot { osd, addr });
        }
        events
    }

    /// Whether an event of `kind` for `osd` may be proposed (not proposed recently).
    fn due(&mut self, osd: OsdId, kind: u8, now_ms: i64) -> bool {
        match self.proposed.get(&(osd, kind)) {
            Some(&at) if now_ms - at < PROPOSAL_RETRY_MS => false,
            _ => {
                self.proposed.insert((osd, kind), now_ms);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use placement::{BucketId, Incremental, MapChange, MapContents, Weight};

    fn settings() -> Settings {
        Settings {
            osd_beacon_grace_s: 10,
            down_out_interval_s: 60,
            min_down_reporters: 2,
            ..Settings::default()
        }
    }

    /// A map with OSDs 0..n, all up and in.
    fn map(n: u32) -> OsdMap {
        let base = OsdMap::new(MapContents::empty([0; 16])).unwrap();
        let mut changes = Vec::new();
        for osd in (0..n).map(OsdId) {
            changes.push(MapChange::OsdCreate { osd });
            changes.push(MapChange::OsdBoot { osd, addr: "127.0.0.1:7000".into() });
            changes.push(MapChange::OsdIn { osd });
        }
        base.apply(&Incremental::new(&base, changes)).unwrap()
    }

    fn with(map: &OsdMap, changes: Vec<MapChange>) -> OsdMap {
        map.apply(&Incremental::new(map, changes)).unwrap()
    }

    #[test]
    fn silent_osds_go_down_after_the_grace_and_out_after_the_interval() {
        let s = settings();
        let mut fd = FailureDetector::new(0);
        let m = map(2);
        fd.beacon(OsdId(0), 5_000);
        fd.beacon(OsdId(1), 5_000);
        assert_eq!(fd.tick(&m, &s, 14_000), vec![]);
        fd.beacon(OsdId(0), 14_000);
        // osd.1 has been silent for 10 s plus a moment.
        assert_eq!(fd.tick(&m, &s, 15_001), vec![OsdEvent::MarkDown { osds: vec![OsdId(1)] }]);
        // Not proposed again while the map catches up...
        fd.beacon(OsdId(0), 16_000);
        assert_eq!(fd.tick(&m, &s, 16_000), vec![]);
        // ...then down, it is marked out 60 s after this detector saw it down.
        let m = with(&m, vec![MapChange::OsdDown { osd: OsdId(1) }]);
        fd.beacon(OsdId(0), 17_000);
        assert_eq!(fd.tick(&m, &s, 17_000), vec![]);
        fd.beacon(OsdId(0), 76_000);
        assert_eq!(fd.tick(&m, &s, 76_999), vec![]);
        assert_eq!(fd.tick(&m, &s, 77_000), vec![OsdEvent::MarkOut { osds: vec![OsdId(1)] }]);
    }

    #[test]
    fn a_new_leader_gives_every_osd_a_full_grace() {
        let s = settings();
        let m = map(3);
        let mut fd = FailureDetector::new(100_000);
        assert_eq!(fd.tick(&m, &s, 109_000), vec![]);
        assert_eq!(
            fd.tick(&m, &s, 110_001),
            vec![OsdEvent::MarkDown { osds: vec![OsdId(0), OsdId(1), OsdId(2)] }]
        );
    }

    #[test]
    fn enough_distinct_reporters_mark_an_osd_down_early() {
        let s = settings();
        let m = map(4);
        let mut fd = FailureDetector::new(0);
        for osd in 0..4 {
            fd.beacon(OsdId(osd), 1_000);
        }
        fd.report(OsdId(1), OsdId(0), 2_000);
        fd.report(OsdId(1), OsdId(0), 2_500);
        fd.report(OsdId(0), OsdId(0), 2_500);
        assert_eq!(
            fd.tick(&m, &s, 3_000),
            vec![],
            "one reporter (twice) is not enough; self-reports do not count"
        );
        fd.report(OsdId(2), OsdId(0), 3_000);
        assert_eq!(fd.tick(&m, &s, 3_100), vec![OsdEvent::MarkDown { osds: vec![OsdId(0)] }]);
    }

    #[test]
    fn reporters_on_one_host_count_once() {
        let s = settings();
        let base = map(4);
        let h1 = BucketId(-10);
        let h2 = BucketId(-11);
        let bucket = |name: &str, id| MapChange::CrushAddBucket {
            name: name.into(),
            type_name: "host".into(),
            id: Some(id),
            parent: None,
        };
        let place = |osd, parent| MapChange::CrushSetDevice {
            osd: OsdId(osd),
            weight: Weight::ONE,
            class: None,
            parent,
        };
        // osd.0 alone on h1; osd.1, osd.2 and osd.3 on h2.
        let m = with(
            &base,
            vec![
                bucket("h1", h1),
                bucket("h2", h2),
                place(0, h1),
                place(1, h2),
                place(2, h2),
                place(3, h2),
            ],
        );
        let mut fd = FailureDetector::new(0);
        for osd in 0..4 {
            fd.beacon(OsdId(osd), 1_000);
        }
        // h2 is cut off from h1: its three OSDs report osd.0, as one host.
        for reporter in 1..4 {
            fd.report(OsdId(reporter), OsdId(0), 2_000);
        }
        assert!(fd.tick(&m, &s, 2_500).is_empty(), "two reporters from distinct hosts are needed");
    }

    #[test]
    fn flapping_osds_wait_longer_each_time() {
        let s = Settings { osd_flap_count: 2, osd_flap_backoff_s: 30, ..settings() };
        let mut fd = FailureDetector::new(0);
        let addr = || "127.0.0.1:7000".to_owned();
        assert_eq!(
            fd.boot(OsdId(5), addr(), &s, 0),
            Some(OsdEvent::Boot { osd: OsdId(5), addr: addr() })
        );
        let up = map(6);
        let down = with(&up, vec![MapChange::OsdDown { osd: OsdId(5) }]);
        // Marked down twice (silent), it is flapping. Only going down in the map counts.
        let mut now = 0;
        for _ in 0..2 {
            now += 11_000;
            for osd in 0..5 {
                fd.beacon(OsdId(osd), now);
            }
            assert_eq!(fd.tick(&up, &s, now), vec![OsdEvent::MarkDown { osds: vec![OsdId(5)] }]);
            assert!(fd.flapping().is_empty(), "a proposal is not a flap");
            assert!(fd.tick(&down, &s, now + 1_000).is_empty());
            now += 6_000;
            fd.boot(OsdId(5), addr(), &s, now);
        }
        assert_eq!(fd.flapping(), BTreeSet::from([OsdId(5)]));
        for osd in 0..5 {
            fd.beacon(OsdId(osd), now + 29_000);
        }
        assert!(fd.tick(&down, &s, now + 29_000).is_empty());
        let events = fd.tick(&down, &s, now + 30_000);
        assert_eq!(events, vec![OsdEvent::Boot { osd: OsdId(5), addr: addr() }]);
        assert!(fd.flapping().is_empty());
    }

    #[test]
    fn nothing_is_proposed_that_flags_forbid_and_reporters_must_be_up() {
        let s = settings();
        let mut fd = FailureDetector::new(0);
        let flagged = with(
            &map(3),
            vec![
                MapChange::SetFlag { flag: MapFlag::Nodown },
                MapChange::SetFlag { flag: MapFlag::Noout },
            ],
        );
        // Silent for long: under nodown nothing is proposed, tick after tick.
        for now in [11_000, 20_000, 30_000] {
            assert!(fd.tick(&flagged, &s, now).is_empty());
        }
        // Down and in for longer than down_out_interval: under noout nothing either.
        let down = with(&flagged, vec![MapChange::OsdDown { osd: OsdId(0) }]);
        assert!(fd.tick(&down, &s, 100_000).is_empty());
        assert!(fd.tick(&down, &s, 10_000_000).is_empty());
        // Reports from a down OSD, or about an OSD that does not exist, count for nothing.
        let mut fd = FailureDetector::new(0);
        let one_down = with(&map(3), vec![MapChange::OsdDown { osd: OsdId(2) }]);
        for osd in 0..3 {
            fd.beacon(OsdId(osd), 1_000);
        }
        fd.report(OsdId(2), OsdId(1), 1_000);
        fd.report(OsdId(0), OsdId(1), 1_000);
        fd.report(OsdId(0), OsdId(9), 1_000);
        let reporters_needed = Settings { min_down_reporters: 2, ..s };
        assert!(fd.tick(&one_down, &reporters_needed, 2_000).is_empty());
        assert!(!fd.reports.contains_key(&OsdId(9)));
    }
}
