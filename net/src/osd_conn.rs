//! Connections to OSDs by id, opened on first use and replaced when they fail. Shared by
//! the client library (client → primary) and the OSDs (primary → replicas).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::rpc;
use crate::transport::tcp::TcpEndpoint;
use crate::transport::{Connection, Endpoint};
use bytes::Bytes;
use proto::entity::EntityName;
use proto::error::TransportError;
use proto::message::{OsdRequest, Response};

use crate::config::{ClientConfig, OsdTransport};

/// The endpoint to reach OSDs through, as `config` says: one over TCP of its own, or `quic`
/// (the endpoint monitors are reached through).
pub fn osd_endpoint(
    config: &ClientConfig,
    quic: &Arc<dyn Endpoint>,
) -> Result<Arc<dyn Endpoint>, TransportError> {
    Ok(match config.osd_transport {
        OsdTransport::Quic => quic.clone(),
        OsdTransport::Tcp => {
            let credentials = config.credentials().map_err(TransportError::Setup)?;
            Arc::new(TcpEndpoint::client(&credentials)?)
        }
    })
}

pub struct OsdConnections {
    endpoint: Arc<dyn Endpoint>,
    conns: Mutex<HashMap<(u32, SocketAddr), Arc<dyn Connection>>>,
}

impl OsdConnections {
    pub fn new(endpoint: Arc<dyn Endpoint>) -> OsdConnections {
        OsdConnections { endpoint, conns: Mutex::new(HashMap::new()) }
    }

    async fn connection(
        &self,
        osd: u32,
        addr: SocketAddr,
    ) -> Result<Arc<dyn Connection>, TransportError> {
        let key = (osd, addr);
        if let Some(conn) = self.conns.lock().expect("osd connections").get(&key)
            && !conn.is_closed()
        {
            return Ok(conn.clone());
        }
        let entity: EntityName = format!("osd.{osd}").parse().map_err(TransportError::Setup)?;
        let conn = self.endpoint.connect(addr, &entity).await?;
        self.conns.lock().expect("osd connections").insert(key, conn.clone());
        Ok(conn)
    }

    /// One request to `osd` at `addr`, bounded by `timeout` (connecting included).
    pub async fn call(
        &self,
        osd: u32,
        addr: &str,
        request: &OsdRequest,
        bulk: &[u8],
        timeout: Duration,
    ) -> Result<(Response, Bytes), TransportError> {
        let addr: SocketAddr = addr.parse().map_err(|_| {
            TransportError::Setup(format!("osd.{osd} address '{addr}' is not ip:port"))
        })?;
        let conn =
            tokio::time::timeout(timeout, self.connection(osd, addr)).await.map_err(|_| {
                TransportError::Timeout {
                    peer: format!("osd.{osd}"),
                    what: "connect".into(),
                    after_ms: timeout.as_millis() as u64,
                }
            })??;
        let result = rpc::call(conn.as_ref(), request, bulk, timeout).await;
        if result.as_ref().is_err_and(|e| e.remote_code().is_none()) {
            // A transport failure: the next call connects afresh (unless another caller
            // already replaced this connection).
            let mut conns = self.conns.lock().expect("osd connections");
            if conns.get(&(osd, addr)).is_some_and(|current| Arc::ptr_eq(current, &conn)) {
                conns.remove(&(osd, addr));
            }
        }
        result
    }
}
