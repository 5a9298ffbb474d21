//! The leader's side of the OSDs: their boot, beacon, failure, PG-stat and pg_temp
//! messages, the failure detector's ticks, and what a new leader takes over.

use super::*;

impl Monitor {
    /// An OSD message (boot, beacon, failure report), on the leader.
    pub(super) async fn osd_message(
        &self,
        origin: EntityName,
        message: OsdMessage,
    ) -> Result<(Response, Bytes), RemoteError> {
        let osd = origin
            .osd_id()
            .map(OsdId)
            .ok_or_else(|| error(ErrorCode::PermissionDenied, format!("{origin} is not an OSD")))?;
        if !self.is_leader() {
            return self
                .to_leader(MonRequest::ForwardOsd { origin, message }, FORWARD_TIMEOUT)
                .await;
        }
        // An OSD speaks only for itself.
        if let Some((claimed, what)) = claimed(&message)
            && claimed != osd.0
        {
            let why = format!("{origin} cannot {what} osd.{claimed}");
            return Err(error(ErrorCode::PermissionDenied, why));
        }
        let now = self.clock.mono_ms();
        let settings = self.state.read(|a| a.state.settings().clone());
        let event = match message {
            OsdMessage::Boot { addr, .. } => {
                self.failure.lock().expect("failure lock").boot(osd, addr, &settings, now)
            }
            OsdMessage::Beacon { epoch, .. } => {
                self.failure.lock().expect("failure lock").beacon(osd, now);
                self.note_epoch(&origin, epoch);
                let mut config = settings.osd_config();
                (config.full_osds, config.backfillfull_osds) =
                    self.pg_stats.lock().expect("pg stats lock").filled(&settings.full_ratios);
                return Ok((Response::OsdConfig(config), Bytes::new()));
            }
            OsdMessage::Failure { target, .. } => {
                self.failure.lock().expect("failure lock").report(osd, OsdId(target), now);
                None
            }
            OsdMessage::PgStats { epoch, pgs, usage, .. } => {
                let map = self.state.read(|a| a.state.map().clone());
                let mut table = self.pg_stats.lock().expect("pg stats lock");
                table.retain(&map);
                table.report(osd.0, pgs, usage, now);
                drop(table);
                self.note_epoch(&origin, epoch);
                None
            }
            OsdMessage::PgTemp { pgs, .. } => {
                if pgs.len() > PG_TEMP_REQUEST_MAX {
                    return Err(error(
                        ErrorCode::Invalid,
                        format!("at most {PG_TEMP_REQUEST_MAX} pg_temp entries per request"),
                    ));
                }
                let pgs = pgs
                    .into_iter()
                    .map(|(pg, osds)| (pg, osds.into_iter().map(|o| o.map(OsdId)).collect()))
                    .collect();
                Some(OsdEvent::PgTemp { from: osd, pgs })
            }
        };
        if let Some(event) = event {
            let at_ms = self.clock.now_ms();
            self.propose(LogEntry::Osd { origin: self.entity.clone(), event, at_ms }).await?;
        }
        Ok((Response::Ack, Bytes::new()))
    }

    /// Records the map epoch a daemon reported.
    pub(super) fn note_epoch(&self, who: &EntityName, epoch: Epoch) {
        let current = self.state.read(|a| a.state.map().epoch());
        let settings = self.state.read(|a| a.state.settings().clone());
        let now = self.clock.mono_ms();
        let mut daemons = self.daemons.lock().expect("daemons lock");
        if daemons.len() >= DAEMONS_TRACKED_MAX && !daemons.contains_key(who) {
            return;
        }
        let updated = health::update_lag(daemons.get(who), epoch, current, &settings, now);
        daemons.insert(who.clone(), updated);
    }

    /// Proposes what failure detection decided (leader only), called once a second.
    pub async fn failure_tick(&self) {
        let now = self.clock.mono_ms();
        let events = {
            let (map, settings) =
                self.state.read(|a| (a.state.map().clone(), a.state.settings().clone()));
            self.failure.lock().expect("failure lock").tick(&map, &settings, now)
        };
        for event in events {
            let at_ms = self.clock.now_ms();
            let entry = LogEntry::Osd { origin: self.entity.clone(), event: event.clone(), at_ms };
            match self.propose(entry).await {
                Ok(_) => tracing::info!(?event, "osd state change committed"),
                Err(e) => tracing::warn!(?event, error = %e, "osd state change not committed"),
            }
        }
    }

    /// Starts a fresh failure detector when this monitor becomes leader.
    pub fn became_leader(&self) {
        let now = self.clock.mono_ms();
        *self.failure.lock().expect("failure lock") = FailureDetector::new(now);
        // What a former term's reports said is no longer news; the OSDs report anew.
        *self.pg_stats.lock().expect("pg stats lock") = PgStatsTable::default();
        // Winning the election took a majority's votes.
        *self.quorum_confirmed_ms.lock().expect("quorum lock") = Some(now);
    }
}

/// The OSD a message speaks for, and what it does for it ("boot osd.3").
fn claimed(message: &OsdMessage) -> Option<(u32, &'static str)> {
    match message {
        OsdMessage::Boot { osd, .. } => Some((*osd, "boot")),
        OsdMessage::Beacon { osd, .. } => Some((*osd, "beacon for")),
        OsdMessage::PgStats { osd, .. } => Some((*osd, "report for")),
        OsdMessage::PgTemp { osd, .. } => Some((*osd, "ask pg_temp for")),
        OsdMessage::Failure { .. } => None,
    }
}
