//! Group commit on one thread, as BlueStore's kv-sync thread does it.
//!
//! A write is applied (visible, not durable) by its PG, then waits here for the next
//! `ObjectStore::sync`. One thread runs the syncs back to back: each covers every write
//! applied before it started, so all the writes that arrived during one fsync share the
//! next. Waiting costs a waiter a channel send, not a blocking thread of its own: with a
//! thread per waiter, every write woke a thread only to find its fsync already done.

use std::sync::{Arc, Condvar, Mutex};

use objectstore::{ObjectStore, StoreError};
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

struct Queue {
    waiters: Vec<Waiter>,
    stopping: bool,
}

struct Inner {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// The handle: `sync` waits for durability of everything applied before the call.
/// Dropping the handle ends the thread once the waiters it holds are answered.
pub struct Syncer {
    inner: Arc<Inner>,
}

impl Syncer {
    pub fn start(store: Arc<dyn ObjectStore>) -> std::io::Result<Syncer> {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue { waiters: Vec::new(), stopping: false }),
            wake: Condvar::new(),
        });
        let thread = inner.clone();
        std::thread::Builder::new().name("osd-sync".into()).spawn(move || run(&thread, &*store))?;
        Ok(Syncer { inner })
    }

    /// Returns once every change applied to the store before this call is durable.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut queue = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
            if queue.stopping {
                return Err(StoreError::Io("the OSD is stopping".into()));
            }
            queue.waiters.push(tx);
        }
        self.inner.wake.notify_one();
        rx.await.unwrap_or_else(|_| Err(StoreError::Io("the sync thread ended".into())))
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.inner.queue.lock().unwrap_or_else(|p| p.into_inner()).stopping = true;
        self.inner.wake.notify_one();
    }
}

fn run(inner: &Inner, store: &dyn ObjectStore) {
    loop {
        let waiters = {
            let mut queue = inner.queue.lock().unwrap_or_else(|p| p.into_inner());
            while queue.waiters.is_empty() && !queue.stopping {
                queue = inner.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
            if queue.waiters.is_empty() {
                return;
            }
            std::mem::take(&mut queue.waiters)
        };
        // Every waiter taken registered after its change was applied, and `sync` covers
        // everything applied before it starts.
        let result = store.sync();
        if let Err(e) = &result {
            tracing::error!(error = %e, "sync failed");
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use objectstore::{CollectionId, KvObjectStore, MemoryEngine, ObjectId, Transaction, TxOp};
    use placement::{PgId, PoolId};

    #[tokio::test]
    async fn every_waiter_is_answered_and_sees_its_write() {
        let store: Arc<dyn ObjectStore> = Arc::new(KvObjectStore::new(MemoryEngine::new()));
        let syncer = Arc::new(Syncer::start(store.clone()).unwrap());
        let c = CollectionId::replicated(PgId { pool: PoolId(1), seed: 0 });
        let mut txn = Transaction::new();
        txn.push(TxOp::CreateCollection(c));
        store.apply(&txn).unwrap();
        let tasks: Vec<_> = (0..64u32)
            .map(|i| {
                let (store, syncer) = (store.clone(), syncer.clone());
                tokio::spawn(async move {
                    let mut txn = Transaction::new();
                    let oid = ObjectId::head(format!("o{i}"));
                    let data = i.to_le_bytes().to_vec().into();
                    txn.push(TxOp::WriteFull { c, oid: oid.clone(), data });
                    store.apply(&txn).unwrap();
                    syncer.sync().await.unwrap();
                    store.stat(c, &oid).unwrap().expect("written").size
                })
            })
            .collect();
        for task in tasks {
            let size = tokio::time::timeout(std::time::Duration::from_secs(10), task)
                .await
                .expect("a sync waiter was never answered")
                .unwrap();
            assert_eq!(size, 4);
        }
    }
}
