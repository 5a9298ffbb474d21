//! Who the monitors are: adding and removing one (Raft membership changes, learners
//! caught up first), pinging the others for liveness, clocks and map epochs, and a removed
//! monitor noticing it was removed.

use super::*;

impl Monitor {
    /// Adds a monitor: as a learner first (it catches up), then as a voter.
    pub(super) async fn mon_add(
        &self,
        origin: &EntityName,
        name: String,
        addr: String,
        id: NodeId,
    ) -> Result<CommandOutput, RemoteError> {
        let entity = EntityName::mon(&name).map_err(|e| error(ErrorCode::Invalid, e))?;
        // A monitor may add itself (it joins when it starts); anyone else needs admin.
        if origin != &entity {
            self.require_admin(origin)?;
        }
        addr.parse::<std::net::SocketAddr>()
            .map_err(|_| error(ErrorCode::Invalid, format!("'{addr}' is not an ip:port")))?;
        if self.state.read(|a| a.state.registry().get(&entity).is_none()) {
            return Err(error(
                ErrorCode::NotFound,
                format!("no identity {entity}: `cairn auth add {entity}` first"),
            ));
        }
        let current = self.state.read(|a| members(&a.membership));
        let voters = self.voters();
        if let Some((existing, _)) = current.iter().find(|(_, n)| n.name == name) {
            if voters.contains(existing) {
                return Err(error(
                    ErrorCode::AlreadyExists,
                    format!("mon.{name} is already a monitor"),
                ));
            }
        } else if current.contains_key(&id) {
            return Err(error(
                ErrorCode::Invalid,
                format!("node id {id} is taken by another monitor; prepare mon.{name} again"),
            ));
        }
        if id == 0 {
            return Err(error(ErrorCode::Invalid, "node ids start at 1"));
        }
        self.confirm_quorum().await?;
        let node = MonNode { name: name.clone(), addr };
        let raft_error = |e: RaftError<NodeId, ClientWriteError<NodeId, MonNode>>| {
            error(ErrorCode::Unavailable, e.to_string())
        };
        let addr = node.addr.clone();
        match tokio::time::timeout(LEARNER_CATCH_UP_TIMEOUT, self.raft.add_learner(id, node, true))
            .await
        {
            Ok(result) => result.map_err(raft_error)?,
            Err(_) => {
                return Err(error(
                    ErrorCode::Timeout,
                    format!(
                        "mon.{name} did not catch up within {} s: is it running at {addr}?",
                        LEARNER_CATCH_UP_TIMEOUT.as_secs()
                    ),
                ));
            }
        };
        // Against the membership in effect when it applies, so concurrent joins compose.
        self.raft
            .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
            .await
            .map_err(raft_error)?;
        Ok(CommandOutput::Done)
    }

    pub(super) async fn mon_remove(
        &self,
        origin: &EntityName,
        name: &str,
    ) -> Result<CommandOutput, RemoteError> {
        self.require_admin(origin)?;
        let current = self.state.read(|a| members(&a.membership));
        let (&id, _) = current
            .iter()
            .find(|(_, n)| n.name == name)
            .ok_or_else(|| error(ErrorCode::NotFound, format!("mon.{name} is not a monitor")))?;
        let voters = self.voters();
        if voters.len() == 1 && voters.contains(&id) {
            return Err(error(ErrorCode::Invalid, "the last monitor cannot be removed"));
        }
        self.confirm_quorum().await?;
        // A voter leaves the voters (and, not retained, the members); a learner that never
        // caught up is simply dropped.
        let change = if self.voters().contains(&id) {
            ChangeMembers::RemoveVoters([id].into())
        } else {
            ChangeMembers::RemoveNodes([id].into())
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| error(ErrorCode::Unavailable, e.to_string()))?;
        Ok(CommandOutput::Done)
    }

    /// Pings every other monitor at once, recording when each answered and its clock offset.
    pub async fn ping_peers(&self) {
        let nodes = self.state.read(|a| members(&a.membership));
        let pings = nodes.values().filter(|n| n.name != self.name).map(|node| self.ping(node));
        futures::future::join_all(pings).await;
    }

    pub(super) async fn ping(&self, node: &MonNode) {
        let sent = self.clock.now_ms();
        // Bounded as a whole, so a dead peer does not hold up the next round for the others.
        let exchange = async {
            let conn = self.connect(node).await.ok()?;
            rpc::call(conn.as_ref(), &MonRequest::Ping { sent_ms: sent }, &[], PING_TIMEOUT)
                .await
                .ok()
        };
        let answer = tokio::time::timeout(PING_TIMEOUT, exchange).await.ok().flatten();
        let received = self.clock.now_ms();
        let seen = self.clock.mono_ms();
        let mut peers = self.peers.lock().expect("peers lock");
        let view = peers.entry(node.name.clone()).or_default();
        if let Some((Response::Pong { now_ms, removed_at, epoch, map_hash, .. }, _)) = answer {
            view.last_seen_ms = Some(seen);
            view.clock_offset_ms = Some(now_ms - (sent + received) / 2);
            view.map = Some((epoch, map_hash));
            drop(peers);
            if let Some(index) = removed_at {
                self.check_removed(node, index);
            }
        } else {
            self.connections.lock().expect("connections lock").remove(&node.name);
        }
    }

    /// For a Ping from monitor `asker`: the index of this monitor's membership if it
    /// follows a leader and `asker` is not in it.
    pub(super) fn removed_at(&self, asker: &EntityName) -> Option<u64> {
        if asker.kind() != EntityKind::Mon {
            return None;
        }
        let metrics = self.raft.metrics().borrow().clone();
        if !self.has_quorum(&metrics) {
            return None;
        }
        let membership = &metrics.membership_config;
        let known = membership.membership().nodes().any(|(_, n)| n.name == asker.id());
        (!known).then(|| membership.log_id().map_or(0, |l| l.index))
    }

    /// A peer in the quorum says this monitor is not a member as of log index `index`. If
    /// that is newer than the membership this monitor knows (a lagging peer may not know
    /// of this monitor yet), or this monitor's own membership agrees (a removed leader
    /// saw its removal commit), it was removed: it stops, as `removed` tells the daemon.
    pub(super) fn check_removed(&self, peer: &MonNode, index: u64) {
        let (known, included) = {
            let metrics = self.raft.metrics().borrow().clone();
            let membership = &metrics.membership_config;
            let included = membership.membership().get_node(&self.node_id).is_some();
            (membership.log_id().map_or(0, |l| l.index), included)
        };
        if index > known || !included {
            let reason = format!(
                "mon.{} was removed from the monitors (mon.{}'s monitor list as of log index \
                 {index} does not include it)",
                self.name, peer.name
            );
            self.removed.send_if_modified(|r| r.replace(reason).is_none());
        }
    }
}
