//! A limit on concurrent background work that the operator can change while it runs
//! (`cairn config set osd.recovery_max_active N`).

use std::sync::{Arc, Mutex};

use tokio::sync::{AcquireError, Semaphore, SemaphorePermit};

pub struct Throttle {
    permits: Arc<Semaphore>,
    /// The limit now; permits in use may exceed it for a while after it is lowered.
    limit: Mutex<u32>,
}

impl Throttle {
    pub fn new(limit: u32) -> Throttle {
        Throttle { permits: Arc::new(Semaphore::new(limit as usize)), limit: Mutex::new(limit) }
    }

    pub async fn acquire(&self) -> Result<SemaphorePermit<'_>, AcquireError> {
        self.permits.acquire().await
    }

    pub fn limit(&self) -> u32 {
        *self.limit.lock().expect("throttle lock")
    }

    /// Sets the limit. Raising it lets waiting work start at once; lowering it takes
    /// permits away as work in flight returns them.
    pub fn set(&self, limit: u32) {
        let mut current = self.limit.lock().expect("throttle lock");
        if limit > *current {
            self.permits.add_permits((limit - *current) as usize);
        } else if limit < *current {
            let cut = (*current - limit) as usize;
            let rest = cut - self.permits.forget_permits(cut);
            if rest > 0 {
                let permits = self.permits.clone();
                tokio::spawn(async move {
                    if let Ok(taken) = permits.acquire_many_owned(rest as u32).await {
                        taken.forget();
                    }
                });
            }
        }
        *current = limit;
    }

    /// Permits free right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lowering_waits_for_work_in_flight_and_raising_frees_at_once() {
        let throttle = Throttle::new(4);
        let a = throttle.acquire().await.unwrap();
        let b = throttle.acquire().await.unwrap();
        let c = throttle.acquire().await.unwrap();
        throttle.set(1);
        assert_eq!(throttle.available(), 0);
        drop(a);
        drop(b);
        // Two of the three in flight had to return before the cut was whole.
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while throttle.permits.available_permits() != 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the cut took the returned permits");
        drop(c);
        assert_eq!(throttle.available(), 1);
        throttle.set(3);
        assert_eq!(throttle.available(), 3);
        assert_eq!(throttle.limit(), 3);
    }
}
