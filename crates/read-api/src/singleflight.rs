//! Single-flight: concurrent misses for the same key share one load.
//!
//! The load runs as its own task, so a client that hangs up does not cancel
//! the work others wait for (and the cache still gets filled). The task
//! removes its slot when done (or when it panics: a guard does it), so a
//! caller arriving afterwards starts a fresh load rather than reusing an old
//! answer or waiting on a dead one.

use std::{collections::HashMap, hash::Hash, sync::Arc};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use parking_lot::Mutex;

type Slot<V> = Shared<BoxFuture<'static, Option<V>>>;

pub struct SingleFlight<K, V: Clone> {
    flights: Arc<Mutex<HashMap<K, Slot<V>>>>,
}

impl<K, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Joins the load in flight for `key`, or starts `load` as the leader.
    /// Returns `None` only if the load task panicked.
    pub async fn run<F>(&self, key: K, load: F) -> (Option<V>, bool)
    where
        F: std::future::Future<Output = V> + Send + 'static,
    {
        let (slot, leader) = {
            let mut flights = self.flights.lock();
            match flights.get(&key) {
                Some(slot) => (slot.clone(), false),
                None => {
                    let done = Done {
                        flights: Arc::clone(&self.flights),
                        key: Some(key.clone()),
                    };
                    let task = tokio::spawn(async move {
                        // Frees the slot however the load ends.
                        let _done = done;
                        load.await
                    });
                    let slot: Slot<V> = async move { task.await.ok() }.boxed().shared();
                    flights.insert(key, slot.clone());
                    (slot, true)
                }
            }
        };
        (slot.await, leader)
    }

    /// Loads in flight right now.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

/// Removes a flight's slot when its load task ends, panics included.
struct Done<K: Eq + Hash, V: Clone> {
    flights: Arc<Mutex<HashMap<K, Slot<V>>>>,
    key: Option<K>,
}

impl<K: Eq + Hash, V: Clone> Drop for Done<K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.flights.lock().remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_load_and_later_callers_start_anew() {
        let sf: Arc<SingleFlight<u32, usize>> = Arc::new(SingleFlight::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let sf = Arc::clone(&sf);
            let loads = Arc::clone(&loads);
            tasks.push(tokio::spawn(async move {
                sf.run(1, async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    loads.fetch_add(1, Ordering::SeqCst) + 1
                })
                .await
            }));
        }
        let mut leaders = 0;
        for t in tasks {
            let (v, leader) = t.await.unwrap();
            assert_eq!(v, Some(1));
            leaders += usize::from(leader);
        }
        assert_eq!(leaders, 1);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(sf.in_flight(), 0);
        let loads2 = Arc::clone(&loads);
        let (v, leader) = sf
            .run(1, async move { loads2.fetch_add(1, Ordering::SeqCst) + 1 })
            .await;
        assert_eq!((v, leader), (Some(2), true));
    }

    #[tokio::test]
    async fn a_panicking_load_frees_its_slot() {
        let sf: SingleFlight<u32, u32> = SingleFlight::default();
        let (v, _) = sf.run(1, async { panic!("load failed") }).await;
        assert_eq!(v, None, "the panic reaches the callers as no value");
        assert_eq!(sf.in_flight(), 0);
        let (v, leader) = sf.run(1, async { 5 }).await;
        assert_eq!((v, leader), (Some(5), true), "the next caller loads anew");
    }

    #[tokio::test]
    async fn a_cancelled_leader_does_not_cancel_the_load() {
        let sf: Arc<SingleFlight<u32, u32>> = Arc::new(SingleFlight::default());
        let sf2 = Arc::clone(&sf);
        let leader = tokio::spawn(async move {
            sf2.run(7, async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                42
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader.abort();
        let (v, is_leader) = sf.run(7, async { 0 }).await;
        assert_eq!(v, Some(42));
        assert!(!is_leader);
    }
}
