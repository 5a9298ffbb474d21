//! Raft's messages between monitors, over the cluster transport.
//!
//! Each Raft RPC is one request frame with the openraft message, postcard-encoded, in the
//! bulk payload; the answer carries openraft's `Result` the same way. Connections to peers
//! are reused until they close. An unreachable peer is reported as `Unreachable`, which
//! makes openraft back off instead of retrying in a tight loop.

use std::net::SocketAddr;
use std::sync::Arc;

use net::rpc;
use net::transport::{Connection, Endpoint};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use proto::message::RaftRpc;
use proto::{EntityName, MonRequest, Response, TransportError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{MonNode, NodeId, TypeConfig};

pub struct Network {
    pub endpoint: Arc<dyn Endpoint>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MonNode) -> PeerClient {
        PeerClient { endpoint: self.endpoint.clone(), target, node: node.clone(), conn: None }
    }
}

pub struct PeerClient {
    endpoint: Arc<dyn Endpoint>,
    target: NodeId,
    node: MonNode,
    conn: Option<Arc<dyn Connection>>,
}

/// Why a Raft RPC failed, before it is sorted into openraft's error kinds.
enum Failure<E> {
    Unreachable(TransportError),
    Network(String),
    Remote(E),
}

impl PeerClient {
    async fn connection(&mut self) -> Result<Arc<dyn Connection>, TransportError> {
        if let Some(conn) = &self.conn
            && !conn.is_closed()
        {
            return Ok(conn.clone());
        }
        let addr: SocketAddr = self.node.addr.parse().map_err(|_| TransportError::Connect {
            peer: format!("mon.{}", self.node.name),
            addr: self.node.addr.clone(),
            reason: "not an ip:port".into(),
        })?;
        let entity = EntityName::mon(&self.node.name).map_err(TransportError::Setup)?;
        let conn = self.endpoint.connect(addr, &entity).await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    async fn rpc<Req: Serialize, Resp: DeserializeOwned, E: DeserializeOwned>(
        &mut self,
        kind: RaftRpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Failure<E>> {
        let bulk =
            postcard::to_stdvec(request).map_err(|e| Failure::Network(format!("encode: {e}")))?;
        let conn = self.connection().await.map_err(Failure::Unreachable)?;
        match rpc::call(conn.as_ref(), &MonRequest::Raft(kind), &bulk, option.hard_ttl()).await {
            Ok((Response::Raft, bulk)) => {
                let answer: Result<Resp, E> = postcard::from_bytes(&bulk)
                    .map_err(|e| Failure::Network(format!("decode: {e}")))?;
                answer.map_err(Failure::Remote)
            }
            Ok((other, _)) => Err(Failure::Network(format!("answered {} to raft", other.name()))),
            Err(e) => {
                self.conn = None;
                match e {
                    TransportError::Connect { .. } | TransportError::Refused { .. } => {
                        Err(Failure::Unreachable(e))
                    }
                    other => Err(Failure::Network(other.to_string())),
                }
            }
        }
    }

    fn sort<E: std::error::Error>(&self, failure: Failure<E>) -> RPCError<NodeId, MonNode, E> {
        match failure {
            Failure::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            Failure::Network(reason) => {
                RPCError::Network(NetworkError::new(&std::io::Error::other(reason)))
            }
            Failure::Remote(e) => {
                RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MonNode, RaftError<NodeId>>> {
        self.rpc(RaftRpc::AppendEntries, &request, &option).await.map_err(|f| self.sort(f))
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, MonNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(RaftRpc::InstallSnapshot, &request, &option).await.map_err(|f| self.sort(f))
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MonNode, RaftError<NodeId>>> {
        self.rpc(RaftRpc::Vote, &request, &option).await.map_err(|f| self.sort(f))
    }
}
