//! Cluster settings: the knobs of failure detection and health, kept in the replicated
//! state so every monitor decides with the same values, and changed with
//! `cairn config set KEY VALUE` through the Raft log.

use serde::{Deserialize, Serialize};

use crate::error::SettingError;

/// Every setting with its default and bounds. Times are in seconds unless the key says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// A down OSD is marked out after this long, unless `noout` is set (Ceph's
    /// `mon_osd_down_out_interval`).
    pub down_out_interval_s: u64,
    /// An OSD that sends no beacon for this long is marked down.
    pub osd_beacon_grace_s: u64,
    /// Distinct peers that must report an OSD unreachable before it is marked down early.
    pub min_down_reporters: u32,
    /// An OSD marked down this many times within `osd_flap_window_s` is flapping: its next
    /// boot waits `osd_flap_backoff_s`, doubled per further flap.
    pub osd_flap_count: u32,
    pub osd_flap_window_s: u64,
    pub osd_flap_backoff_s: u64,
    /// A monitor silent this long counts as down (MON_DOWN).
    pub mon_down_grace_s: u64,
    /// Clock offsets between monitors above this are CLOCK_SKEW.
    pub clock_skew_warn_ms: u64,
    /// A daemon this many epochs behind the current map for longer than
    /// `map_epoch_lag_grace_s` is MAP_EPOCH_LAG.
    pub map_epoch_lag_epochs: u64,
    pub map_epoch_lag_grace_s: u64,
    /// PG copies per OSD a pool created without pg_num is sized for.
    pub target_pgs_per_osd: u32,
    /// Recovery and backfill throttles, which OSDs take with each beacon's answer.
    pub osd_recovery_max_active: u32,
    pub osd_backfill_max_active: u32,
    /// Fill levels in percent of an OSD's space: OSD_NEARFULL; no backfill onto the OSD
    /// (OSD_BACKFILLFULL); no writes onto it (OSD_FULL). Ceph's ratios, as percents.
    pub full_ratios: proto::osd::FullRatios,
    /// How often each PG is scrubbed (sizes and metadata across copies) and deep-scrubbed
    /// (every byte read and compared); a PG not deep-scrubbed for 1.25 times the deep
    /// interval is PG_NOT_DEEP_SCRUBBED.
    pub osd_scrub_interval_s: u64,
    pub osd_deep_scrub_interval_s: u64,
    /// The pause between scrub chunks (Ceph's `osd_scrub_sleep`), in ms.
    pub osd_scrub_sleep_ms: u64,
    /// The pause between batches of snapshot trimming (Ceph's `osd_snap_trim_sleep`), in
    /// ms.
    pub osd_snap_trim_sleep_ms: u64,
    /// A client op in flight longer than this is slow (SLOW_OPS), in seconds (Ceph's
    /// `osd_op_complaint_time`).
    pub osd_op_complaint_time_s: u64,
    /// Scheduled scrubs wait while the host's load per CPU is above this, in percent
    /// (Ceph's `osd_scrub_load_threshold`, 0.5), until twice their interval has passed.
    pub osd_scrub_load_threshold_percent: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            down_out_interval_s: 600,
            osd_beacon_grace_s: 20,
            min_down_reporters: 2,
            osd_flap_count: 3,
            osd_flap_window_s: 600,
            osd_flap_backoff_s: 30,
            mon_down_grace_s: 5,
            clock_skew_warn_ms: 50,
            map_epoch_lag_epochs: 10,
            map_epoch_lag_grace_s: 30,
            target_pgs_per_osd: placement::autoscale::TARGET_PGS_PER_OSD_DEFAULT,
            osd_recovery_max_active: 4,
            osd_backfill_max_active: 4,
            full_ratios: proto::osd::FullRatios::default(),
            osd_scrub_interval_s: 24 * 3600,
            osd_deep_scrub_interval_s: 7 * 24 * 3600,
            osd_scrub_sleep_ms: 20,
            osd_snap_trim_sleep_ms: 20,
            osd_op_complaint_time_s: 30,
            osd_scrub_load_threshold_percent: 50,
        }
    }
}

/// `(key, lowest, highest)` of every setting.
const KEYS: &[(&str, u64, u64)] = &[
    ("mon.down_out_interval", 1, 365 * 24 * 3600),
    ("mon.osd_beacon_grace", 1, 24 * 3600),
    ("mon.min_down_reporters", 1, 1000),
    ("mon.osd_flap_count", 1, 1000),
    ("mon.osd_flap_window", 1, 24 * 3600),
    ("mon.osd_flap_backoff", 1, 24 * 3600),
    ("mon.mon_down_grace", 1, 3600),
    ("mon.clock_skew_warn_ms", 1, 3_600_000),
    ("mon.map_epoch_lag_epochs", 1, 1_000_000),
    ("mon.map_epoch_lag_grace", 1, 24 * 3600),
    ("mon.target_pgs_per_osd", 1, 10_000),
    ("osd.recovery_max_active", 1, 256),
    ("osd.backfill_max_active", 1, 256),
    ("mon.nearfull_percent", 1, 100),
    ("mon.backfillfull_percent", 1, 100),
    ("mon.full_percent", 1, 100),
    ("osd.scrub_interval", 1, 365 * 24 * 3600),
    ("osd.deep_scrub_interval", 1, 365 * 24 * 3600),
    ("osd.scrub_sleep_ms", 0, 60_000),
    ("osd.snap_trim_sleep_ms", 0, 60_000),
    ("osd.op_complaint_time", 1, 24 * 3600),
    ("osd.scrub_load_threshold_percent", 1, 10_000),
];

impl Settings {
    /// Sets `key` to `value`, refusing unknown keys and values out of bounds.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SettingError> {
        let &(key, low, high) = KEYS.iter().find(|(k, _, _)| *k == key).ok_or_else(|| {
            let known: Vec<&str> = KEYS.iter().map(|(k, _, _)| *k).collect();
            SettingError::Unknown { key: key.to_owned(), known: known.join(", ") }
        })?;
        let n: u64 =
            value.parse().map_err(|_| SettingError::NotANumber { key, value: value.to_owned() })?;
        if !(low..=high).contains(&n) {
            return Err(SettingError::OutOfRange { key, value: n, low, high });
        }
        match key {
            "mon.down_out_interval" => self.down_out_interval_s = n,
            "mon.osd_beacon_grace" => self.osd_beacon_grace_s = n,
            "mon.min_down_reporters" => self.min_down_reporters = n as u32,
            "mon.osd_flap_count" => self.osd_flap_count = n as u32,
            "mon.osd_flap_window" => self.osd_flap_window_s = n,
            "mon.osd_flap_backoff" => self.osd_flap_backoff_s = n,
            "mon.mon_down_grace" => self.mon_down_grace_s = n,
            "mon.clock_skew_warn_ms" => self.clock_skew_warn_ms = n,
            "mon.map_epoch_lag_epochs" => self.map_epoch_lag_epochs = n,
            "mon.map_epoch_lag_grace" => self.map_epoch_lag_grace_s = n,
            "mon.target_pgs_per_osd" => self.target_pgs_per_osd = n as u32,
            "osd.recovery_max_active" => self.osd_recovery_max_active = n as u32,
            "osd.backfill_max_active" => self.osd_backfill_max_active = n as u32,
            "mon.nearfull_percent" | "mon.backfillfull_percent" | "mon.full_percent" => {
                let mut ratios = self.full_ratios;
                match key {
                    "mon.nearfull_percent" => ratios.nearfull = n as u32,
                    "mon.backfillfull_percent" => ratios.backfillfull = n as u32,
                    _ => ratios.full = n as u32,
                }
                if !(ratios.nearfull <= ratios.backfillfull && ratios.backfillfull <= ratios.full) {
                    return Err(SettingError::FullOrder {
                        key,
                        value: n,
                        nearfull: ratios.nearfull,
                        backfillfull: ratios.backfillfull,
                        full: ratios.full,
                    });
                }
                self.full_ratios = ratios;
            }
            "osd.scrub_interval" => self.osd_scrub_interval_s = n,
            "osd.deep_scrub_interval" => self.osd_deep_scrub_interval_s = n,
            "osd.scrub_sleep_ms" => self.osd_scrub_sleep_ms = n,
            "osd.snap_trim_sleep_ms" => self.osd_snap_trim_sleep_ms = n,
            "osd.op_complaint_time" => self.osd_op_complaint_time_s = n,
            "osd.scrub_load_threshold_percent" => self.osd_scrub_load_threshold_percent = n,
            _ => unreachable!("every key in KEYS is handled"),
        }
        Ok(())
    }

    /// Every setting as `(key, value)`, for `cairn config dump`.
    pub fn entries(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("mon.down_out_interval", self.down_out_interval_s),
            ("mon.osd_beacon_grace", self.osd_beacon_grace_s),
            ("mon.min_down_reporters", u64::from(self.min_down_reporters)),
            ("mon.osd_flap_count", u64::from(self.osd_flap_count)),
            ("mon.osd_flap_window", self.osd_flap_window_s),
            ("mon.osd_flap_backoff", self.osd_flap_backoff_s),
            ("mon.mon_down_grace", self.mon_down_grace_s),
            ("mon.clock_skew_warn_ms", self.clock_skew_warn_ms),
            ("mon.map_epoch_lag_epochs", self.map_epoch_lag_epochs),
            ("mon.map_epoch_lag_grace", self.map_epoch_lag_grace_s),
            ("mon.target_pgs_per_osd", u64::from(self.target_pgs_per_osd)),
            ("osd.recovery_max_active", u64::from(self.osd_recovery_max_active)),
            ("osd.backfill_max_active", u64::from(self.osd_backfill_max_active)),
            ("mon.nearfull_percent", u64::from(self.full_ratios.nearfull)),
            ("mon.backfillfull_percent", u64::from(self.full_ratios.backfillfull)),
            ("mon.full_percent", u64::from(self.full_ratios.full)),
            ("osd.scrub_interval", self.osd_scrub_interval_s),
            ("osd.deep_scrub_interval", self.osd_deep_scrub_interval_s),
            ("osd.scrub_sleep_ms", self.osd_scrub_sleep_ms),
            ("osd.snap_trim_sleep_ms", self.osd_snap_trim_sleep_ms),
            ("osd.op_complaint_time", self.osd_op_complaint_time_s),
            ("osd.scrub_load_threshold_percent", self.osd_scrub_load_threshold_percent),
        ]
    }

    /// What OSDs apply at runtime; the leader fills in which OSDs are full.
    pub fn osd_config(&self) -> proto::osd::OsdConfig {
        proto::osd::OsdConfig {
            recovery_max_active: self.osd_recovery_max_active,
            backfill_max_active: self.osd_backfill_max_active,
            ratios: self.full_ratios,
            full_osds: Vec::new(),
            backfillfull_osds: Vec::new(),
            scrub_interval_s: self.osd_scrub_interval_s,
            deep_scrub_interval_s: self.osd_deep_scrub_interval_s,
            scrub_sleep_ms: self.osd_scrub_sleep_ms,
            snap_trim_sleep_ms: self.osd_snap_trim_sleep_ms,
            op_complaint_time_s: self.osd_op_complaint_time_s,
            scrub_load_threshold_percent: self.osd_scrub_load_threshold_percent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_sets_and_is_listed() {
        let mut settings = Settings::default();
        for (key, low, _) in KEYS {
            settings.set(key, &low.to_string()).unwrap();
        }
        let listed: Vec<&str> = settings.entries().iter().map(|(k, _)| *k).collect();
        let keys: Vec<&str> = KEYS.iter().map(|(k, _, _)| *k).collect();
        assert_eq!(listed, keys);
        assert!(settings.entries().iter().zip(KEYS).all(|((_, v), (_, low, _))| v == low));
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut settings = Settings::default();
        let unknown = settings.set("mon.nope", "1").unwrap_err();
        assert!(matches!(&unknown, SettingError::Unknown { key, .. } if key == "mon.nope"));
        assert!(unknown.to_string().contains("known: mon.down_out_interval"), "{unknown}");
        assert_eq!(
            settings.set("mon.down_out_interval", "soon"),
            Err(SettingError::NotANumber { key: "mon.down_out_interval", value: "soon".into() })
        );
        let (key, low, high) = KEYS[0];
        assert_eq!(
            settings.set(key, "0"),
            Err(SettingError::OutOfRange { key, value: 0, low, high })
        );
        assert!(matches!(
            settings.set("mon.full_percent", "101"),
            Err(SettingError::OutOfRange { key: "mon.full_percent", value: 101, .. })
        ));
        let order = settings.set("mon.nearfull_percent", "96").unwrap_err();
        assert_eq!(
            order,
            SettingError::FullOrder {
                key: "mon.nearfull_percent",
                value: 96,
                nearfull: 96,
                backfillfull: 90,
                full: 95
            }
        );
        assert!(order.to_string().contains("nearfull (96) <= backfillfull (90) <= full (95)"));
        assert!(matches!(
            settings.set("mon.full_percent", "89"),
            Err(SettingError::FullOrder { full: 89, .. })
        ));
        assert_eq!(settings, Settings::default());
        settings.set("mon.full_percent", "99").unwrap();
        settings.set("mon.backfillfull_percent", "97").unwrap();
        assert_eq!(
            settings.full_ratios,
            proto::osd::FullRatios { nearfull: 85, backfillfull: 97, full: 99 }
        );
    }
}
