//! What a monitor answers from its own copy of the state: the status (`ceph -s`), map
//! bundles and subscriptions, the PG statistics view and the current map's hash.

use super::*;

impl Monitor {
    pub fn status(&self) -> StatusReport {
        // Ages (last seen, lag) are intervals: monotonic.
        let now = self.clock.mono_ms();
        let metrics = self.raft.metrics().borrow().clone();
        let (map, settings, membership) = self
            .state
            .read(|a| (a.state.map().clone(), a.state.settings().clone(), members(&a.membership)));
        let grace = settings.mon_down_grace_s as i64 * 1000;
        let peers = self.peers.lock().expect("peers lock").clone();
        let has_leader = self.has_quorum(&metrics);
        let voters: std::collections::BTreeSet<NodeId> =
            metrics.membership_config.membership().voter_ids().collect();
        let monitors: Vec<MonStatus> = membership
            .iter()
            .filter(|(id, _)| voters.contains(id))
            .map(|(id, node)| {
                let me = node.name == self.name;
                let view = peers.get(&node.name).copied().unwrap_or_default();
                let alive = me || view.last_seen_ms.is_some_and(|t| now - t <= grace);
                MonStatus {
                    name: node.name.clone(),
                    id: *id,
                    addr: node.addr.clone(),
                    in_quorum: has_leader && alive,
                    leader: metrics.current_leader == Some(*id),
                    last_seen_ms: if me {
                        Some(0)
                    } else {
                        view.last_seen_ms.map(|t| (now - t).max(0) as u64)
                    },
                    clock_offset_ms: if me { Some(0) } else { view.clock_offset_ms },
                    epoch: if me { Some(map.epoch()) } else { view.map.map(|m| m.0) },
                    map_hash: if me { Some(self.map_hash(&map)) } else { view.map.map(|m| m.1) },
                }
            })
            .collect();
        let daemons = self.daemons.lock().expect("daemons lock").clone();
        let flapping = self.failure.lock().expect("failure lock").flapping();
        let pgs = self.pg_stats_view();
        let inputs = health::Inputs {
            map: &map,
            settings: &settings,
            monitors: &monitors,
            daemons: &daemons,
            flapping: &flapping,
            pgs: &pgs,
            now_ms: now,
            wall_ms: self.clock.now_ms(),
        };
        let checks = health::checks(&inputs);
        let osds = &map.contents().osds;
        StatusReport {
            fsid: placement::describe::format_uuid(&map.contents().fsid),
            health: health::overall(&checks),
            checks,
            answered_by: self.name.clone(),
            leader: monitors.iter().find(|m| m.leader && m.in_quorum).map(|m| m.name.clone()),
            term: metrics.current_term,
            monitors,
            epoch: map.epoch(),
            osds: OsdCounts {
                total: osds.len() as u32,
                up: osds.values().filter(|s| s.up).count() as u32,
                r#in: osds.values().filter(|s| s.is_in).count() as u32,
            },
            pools: map.contents().pools.len() as u32,
            pgs: map.contents().pools.values().map(|p| u64::from(p.pg_num)).sum(),
            flags: map.contents().flags.iter().map(|f| f.name().to_owned()).collect(),
            pg_summary: pgs.summary,
        }
    }

    /// The hash of `map`, which is this monitor's current one (cached per epoch).
    pub(super) fn map_hash(&self, map: &OsdMap) -> u32 {
        let mut cached = self.map_hash.lock().expect("map hash lock");
        match *cached {
            Some((epoch, hash)) if epoch == map.epoch() => hash,
            _ => {
                let hash = placement::encoding::map_hash(map);
                *cached = Some((map.epoch(), hash));
                hash
            }
        }
    }

    /// PG and OSD statistics as this monitor has them (complete on the leader).
    pub fn pg_stats_view(&self) -> ClusterPgStats {
        let map = self.state.read(|a| a.state.map().clone());
        self.pg_stats.lock().expect("pg stats lock").view(&map, self.clock.mono_ms())
    }

    pub(super) fn maps(&self, have: Option<Epoch>) -> Result<(Response, Bytes), RemoteError> {
        let (bundle, epoch) =
            self.state.read(|a| a.state.maps_since(have).map(|b| (b, a.state.map().epoch())))?;
        let bulk =
            postcard::to_stdvec(&bundle).map_err(|e| error(ErrorCode::Internal, e.to_string()))?;
        Ok((Response::Maps { epoch }, Bytes::from(bulk)))
    }

    /// Sends the maps since `have`, then each new epoch, until the subscriber leaves.
    pub(super) fn subscribe(self: Arc<Self>, have: Option<Epoch>) -> Reply {
        let (tx, rx) = mpsc::channel(rpc::SUBSCRIPTION_QUEUE);
        let mut epochs = self.state.epochs();
        tokio::spawn(async move {
            let mut sent = have;
            loop {
                let current = *epochs.borrow_and_update();
                if sent != Some(current) {
                    let update = match self.maps(sent) {
                        Ok(update) => update,
                        Err(e) => (Response::Error(e), Bytes::new()),
                    };
                    if tx.send(update).await.is_err() {
                        return;
                    }
                    sent = Some(current);
                }
                tokio::select! {
                    changed = epochs.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Reply::Stream(rx)
    }
}
