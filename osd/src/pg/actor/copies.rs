//! Server-side copies on the primary: a request with copy ops first reads their sources
//! from their own primaries (as a client would, this OSD's identity passing the caps),
//! while the object holds later writes but not reads (`admission`); then the copies become
//! plain writes (`copy::rewrite`) and the request runs as any other, its answer folded
//! back to one result per op. A source's primary that moved, or did not answer, fails the
//! request with a retryable error: the client resends on a newer map.

use proto::osd::{LIST_PAGE_MAX, OpResult, SnapArgs};

use super::*;
use crate::pg::copy::{self, Source, Want};
use crate::pg::ops::READ_BYTES_MAX;

/// Times a whole copy starts over when its source changes between the pages it reads.
const WHOLE_COPY_ATTEMPTS: usize = 4;

impl Pg {
    /// Reads the sources of `op`'s copy ops, then runs it (`copy_read`).
    pub(super) fn read_copy_sources(&mut self, op: ClientOp) {
        let wanted = match copy::sources(&op.object, &op.ops) {
            Ok(wanted) => wanted,
            Err(e) => {
                let _ = op.reply.send(Err(e));
                return;
            }
        };
        self.copying.insert(op.object.clone());
        let (interval, inbox) = (self.interval, self.inbox.clone());
        let (conns, map, pool) = (self.shared.conns.clone(), self.map.clone(), self.id.pool);
        tokio::spawn(async move {
            let mut sources = Vec::with_capacity(wanted.len());
            let mut result = Ok(());
            for (source, snap, want) in &wanted {
                match read_source(&conns, &map, pool, source, *snap, want).await {
                    Ok(read) => sources.push(read),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let result = result.map(|()| sources);
            let _ = inbox.send(Event::CopyRead { interval, op: Box::new(op), result }).await;
        });
    }

    /// The sources of a copy are read: the request runs with its copies as writes, before
    /// the writes it held.
    pub(super) fn copy_read(
        &mut self,
        interval: Epoch,
        mut op: ClientOp,
        result: Result<Vec<Source>, RemoteError>,
    ) {
        if interval != self.interval {
            let _ = op.reply.send(Err(err(
                ErrorCode::StaleEpoch,
                format!("pg {} changed at epoch {}; resend", self.id, self.interval),
            )));
            return;
        }
        let object = op.object.clone();
        self.copying.remove(&object);
        let rewritten = result.and_then(|sources| {
            let xattrs =
                self.shared.store.stat(self.c, &object_id(&object)).map_err(store_error)?;
            let xattrs = xattrs.map(|m| copy::user_xattrs(m.xattrs.keys())).unwrap_or_default();
            copy::rewrite(&op.ops, &op.bulk, sources, xattrs)
        });
        match rewritten {
            Err(e) => {
                let _ = op.reply.send(Err(e));
            }
            Ok(_) if self.state != State::Active => self.waiting.push_back(op),
            Ok(copy::Rewritten { ops, bulk, spans }) => {
                let (folded, answer) = oneshot::channel();
                let reply = std::mem::replace(&mut op.reply, folded);
                tokio::spawn(async move {
                    if let Ok(answer) = answer.await {
                        let _ = reply.send(answer.map(|(response, data)| match response {
                            Response::ObjectOps { version, results } => {
                                let results = copy::fold_results(results, &spans);
                                (Response::ObjectOps { version, results }, data)
                            }
                            other => (other, data),
                        }));
                    }
                });
                let op = ClientOp { ops, bulk, ..op };
                if admission::may_release(&self.admission_view(&object)) {
                    self.execute(op);
                } else {
                    self.held.entry(object.clone()).or_default().push_front(op);
                }
            }
        }
        self.release(&object);
    }
}

/// Reads what a copy op wants of `source` in `pool` from its primary.
async fn read_source(
    conns: &OsdConnections,
    map: &OsdMap,
    pool: placement::PoolId,
    source: &ObjectName,
    snap: Option<u64>,
    want: &Want,
) -> Result<Source, RemoteError> {
    let at = SnapArgs { context: None, read: snap };
    match want {
        Want::Whole => read_whole(conns, map, pool, source, &at).await,
        &Want::Range { offset, len } => {
            let read = vec![ObjectOp::Read { offset, len }];
            let (_, data) = ask_primary(conns, map, pool, source, read, &at).await?;
            Ok(Source { data, ..Source::default() })
        }
    }
}

/// A whole source: data, xattrs and omap, read in pages that each assert the version the
/// first saw, starting over if it changes between them.
async fn read_whole(
    conns: &OsdConnections,
    map: &OsdMap,
    pool: placement::PoolId,
    source: &ObjectName,
    at: &SnapArgs,
) -> Result<Source, RemoteError> {
    let ask = |ops| ask_primary(conns, map, pool, source, ops, at);
    let page = LIST_PAGE_MAX;
    'whole: for _ in 0..WHOLE_COPY_ATTEMPTS {
        let first = vec![
            ObjectOp::Stat,
            ObjectOp::GetXattrs,
            ObjectOp::OmapList { after: None, max: page },
            ObjectOp::Read { offset: 0, len: READ_BYTES_MAX },
        ];
        let (results, data) = ask(first).await?;
        let [
            OpResult::Stat { size, version, .. },
            OpResult::Xattrs(xattrs),
            OpResult::OmapList { entries, mut more },
            _,
        ] = <[OpResult; 4]>::try_from(results).map_err(|_| unexpected(source))?
        else {
            return Err(unexpected(source));
        };
        let mut read = Source { data, xattrs, omap: entries };
        let mut data = read.data.to_vec();
        while (data.len() as u64) < size || more {
            let mut ops = vec![ObjectOp::AssertVersion { version }];
            if (data.len() as u64) < size {
                ops.push(ObjectOp::Read { offset: data.len() as u64, len: READ_BYTES_MAX });
            }
            if more {
                let after = read.omap.last().map(|(k, _)| k.clone());
                ops.push(ObjectOp::OmapList { after, max: page });
            }
            let (results, piece) = match ask(ops).await {
                Ok(answer) => answer,
                Err(e) if e.code == ErrorCode::Canceled => continue 'whole,
                Err(e) => return Err(e),
            };
            if (data.len() as u64) < size {
                if piece.is_empty() {
                    continue 'whole;
                }
                data.extend_from_slice(&piece);
            }
            if let Some(OpResult::OmapList { entries, more: again }) = results.last() {
                read.omap.extend(entries.iter().cloned());
                more = *again;
            } else {
                more = false;
            }
        }
        read.data = Bytes::from(data);
        return Ok(read);
    }
    Err(err(
        ErrorCode::Busy,
        format!("copy source {source} changed during {WHOLE_COPY_ATTEMPTS} attempts to read it"),
    ))
}

fn unexpected(source: &ObjectName) -> RemoteError {
    err(ErrorCode::Internal, format!("copy source {source}: its primary answered another result"))
}

/// One read request for `source` to its primary at this PG's map. An error the source's
/// primary gives is the copy's; not reaching it is `Unavailable`, which clients resend.
async fn ask_primary(
    conns: &OsdConnections,
    map: &OsdMap,
    pool: placement::PoolId,
    source: &ObjectName,
    ops: Vec<ObjectOp>,
    at: &SnapArgs,
) -> Result<(Vec<OpResult>, Bytes), RemoteError> {
    let unavailable =
        |why: String| err(ErrorCode::Unavailable, format!("copy source {source}: {why}"));
    let pg = map
        .object_pg(pool, &source.namespace, &source.name)
        .map_err(|e| err(ErrorCode::Invalid, format!("copy source {source}: {e}")))?;
    let primary = map.pg_mapping(pg).ok().and_then(|m| m.acting_primary);
    let Some((osd, addr)) =
        primary.and_then(|p| map.osd(p).and_then(|s| s.addr.clone()).map(|a| (p.0, a)))
    else {
        return Err(unavailable(format!("pg {pg} has no primary up at epoch {}", map.epoch())));
    };
    let request = OsdRequest::ObjectOps {
        pg,
        epoch: map.epoch(),
        reqid: proto::reqid::new_request_id(),
        object: source.clone(),
        ops,
        instance: proto::reqid::instance(),
        snap: at.clone(),
    };
    match conns.call(osd, &addr, &request, &[], PEER_TIMEOUT).await {
        Ok((Response::ObjectOps { results, .. }, data)) => Ok((results, data)),
        Ok((other, _)) => Err(unavailable(format!("osd.{osd} answered {}", other.name()))),
        Err(proto::error::TransportError::Remote { error, .. })
            if !error.code.is_retryable() && error.code != ErrorCode::StaleEpoch =>
        {
            Err(RemoteError::new(error.code, format!("copy source {source}: {}", error.message)))
        }
        Err(e) => Err(unavailable(format!("osd.{osd}: {e}"))),
    }
}
