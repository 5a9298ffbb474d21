//! What the primary tells the monitors about its PG (`PgStat`: the state words `status`
//! chooses, object counts, why it is blocked and for whom), and what it does once the PG
//! is clean: trim the log, tell the replicas, and have the strays delete their old copies.

use super::*;

impl Pg {
    /// The PG as the monitors see it (primary only).
    pub(super) fn stat(&self) -> PgStat {
        let words: Vec<&str> = match self.state {
            State::Replica => vec!["stray"],
            State::Peering => vec!["peering"],
            State::Blocked => self.blocked.state.split('+').collect(),
            State::Active => status::active_words(&status::Active {
                writable: self.ec.is_none() || self.writers.len() >= self.min_size,
                remapped: self.remapped(),
                undersized: self.acting.len() < self.size,
                missing: self.degraded_objects() > 0,
                filling_acting: self.backfill.iter().any(|o| self.acting.contains(o)),
                backfill: if self.backfill.is_empty() {
                    Filling::No
                } else if self.bf.toofull.is_some() {
                    Filling::Toofull
                } else if self.backfill_waits() {
                    Filling::Waiting
                } else {
                    Filling::Running
                },
                scrub: self.scrub.as_ref().map(|run| run.deep),
                inconsistent: !self.inconsistent.is_empty(),
                snaptrim: self.trim.is_some(),
            }),
        };
        let objects = self.info.stats.objects;
        let absent = self.size.saturating_sub(self.acting.len()) as u64;
        // Copies backfill has yet to make: degraded on an acting OSD, misplaced elsewhere.
        let unfilled = objects.saturating_sub(self.bf.covered);
        let (filling, moving) = self.backfill.iter().fold((0u64, 0u64), |(f, m), o| {
            if self.acting.contains(o) { (f + unfilled, m) } else { (f, m + unfilled) }
        });
        PgStat {
            pg: self.id,
            state: words.into_iter().map(String::from).collect(),
            up: self.up.clone(),
            acting: self.acting.clone(),
            epoch: self.map.epoch(),
            last_update: self.log.head(),
            log_entries: self.log.len() as u64,
            objects,
            bytes: self.info.stats.bytes,
            degraded: self.degraded_objects() + absent * objects + filling,
            misplaced: moving,
            unfound: self.unfound.len() as u64,
            recovered_bytes: self.recovered.bytes,
            recovered_objects: self.recovered.objects,
            last_scrub_ms: self.info.last_scrub_ms,
            last_deep_scrub_ms: self.info.last_deep_scrub_ms,
            last_scrub_errors: self.last_scrub_errors,
            inconsistent: self.inconsistent.len() as u64,
            inconsistent_detail: self
                .inconsistent
                .iter()
                .take(INCONSISTENT_DETAIL_MAX)
                .map(|(object, why)| format!("{object}: {why}"))
                .collect(),
            blocked_reason: match self.state {
                State::Blocked => self.blocked.why.clone(),
                _ => String::new(),
            },
            blocked_by: match self.state {
                State::Blocked => self.blocked.waiting_for.clone(),
                _ => Vec::new(),
            },
        }
    }

    pub(super) fn clean(&mut self) {
        if self.info.last_epoch_clean == self.interval {
            return;
        }
        self.info.last_epoch_clean = self.interval;
        // Keep the log short once every copy is complete.
        let tail = self.log.trim(LOG_ENTRIES_KEPT);
        self.info.log_tail = tail;
        self.info.last_update = self.log.head();
        self.info.last_complete = self.log.head();
        let ops = vec![persist::trim_to(self.c, tail), persist::put_info(self.c, &self.info)];
        self.ensure_collection_and(ops);
        self.remove_other_shards();
        let info = self.info.clone();
        let peers: Vec<u32> = self.acting.iter().copied().filter(|&o| o != self.me()).collect();
        let strays = std::mem::take(&mut self.strays);
        let (interval, conns, map, pg) =
            (self.interval, self.shared.conns.clone(), self.map.clone(), self.id);
        tokio::spawn(async move {
            for osd in peers {
                let request = PeerRequest::Complete { info: info.clone() };
                if let Err(e) =
                    call_peer(&conns, &map, osd, pg, map.epoch(), interval, request, Bytes::new())
                        .await
                {
                    tracing::debug!(%pg, osd, error = %e, "could not tell a replica the PG is clean");
                }
            }
            // Every copy the PG needs is complete: the old ones elsewhere can go. A stray
            // that has the map but has not yet handed it to the PG answers `StaleEpoch`
            // for a moment: ask again a few times.
            for osd in strays {
                for attempt in 1..=STRAY_REMOVAL_ATTEMPTS {
                    let request = PeerRequest::RemoveStray;
                    let epoch = map.epoch();
                    match call_peer(&conns, &map, osd, pg, epoch, interval, request, Bytes::new())
                        .await
                    {
                        Ok(_) => break,
                        Err(e) if attempt == STRAY_REMOVAL_ATTEMPTS => {
                            tracing::info!(%pg, osd, error = %e, "could not remove a stray copy")
                        }
                        Err(_) => tokio::time::sleep(PEERING_RETRY).await,
                    }
                }
            }
        });
    }
}
