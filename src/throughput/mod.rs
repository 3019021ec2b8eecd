//! GETs in flight, mount-wide: `--maximum-throughput-gbps` (or, without it, the network
//! bandwidth of the EC2 instance type, [`instance`]) becomes a cap on the object GETs that
//! readers have open at once, as Mountpoint sizes its connection count from the same figure.
//!
//! Without a target there is no cap: the memory budget (`--memory-target`) already bounds the
//! bytes fetched ahead, and on a machine of unknown bandwidth a guess would only slow it.

pub mod instance;

use std::sync::{Arc, OnceLock};

use tokio::sync::{Semaphore, SemaphorePermit};
use tracing::info;

/// What one S3 GET stream carries, in Gbps: about 90 MB/s, the figure AWS's performance
/// guidelines give per connection.
pub const GBPS_PER_GET: f64 = 0.72;

/// The fewest GETs a target allows: one reader's part and the next.
pub const MIN_GETS: usize = 2;

/// The most GETs a target allows (3,200 Gbps and over).
pub const MAX_GETS: usize = 4096;

/// GETs in flight for a throughput target of `gbps`.
pub fn gets_for_gbps(gbps: f64) -> usize {
    let gets = (gbps / GBPS_PER_GET).ceil();
    if gets.is_nan() || gets < MIN_GETS as f64 {
        return MIN_GETS;
    }
    (gets as usize).min(MAX_GETS)
}

/// Sets the cap from `--maximum-throughput-gbps`, or, without it and unless the metadata
/// service is turned off, from the instance type, looked up in the background on `runtime`
/// (a mount never waits for the metadata service; GETs before the answer are not capped).
pub fn apply_target(
    slots: Arc<GetSlots>,
    gbps: Option<u64>,
    metadata_disabled: bool,
    runtime: &tokio::runtime::Handle,
) {
    if let Some(gbps) = gbps {
        let cap = gets_for_gbps(gbps as f64);
        slots.limit(cap);
        info!(
            gbps,
            gets_in_flight = cap,
            "throughput target from --maximum-throughput-gbps"
        );
        return;
    }
    if metadata_disabled {
        return;
    }
    runtime.spawn(async move {
        let Some(kind) = instance::instance_type().await else {
            return;
        };
        match instance::bandwidth_gbps(&kind) {
            Some(gbps) => {
                let cap = gets_for_gbps(gbps);
                slots.limit(cap);
                info!(instance_type = %kind, gbps, gets_in_flight = cap, "throughput target from the instance type");
            }
            None => info!(
                instance_type = %kind,
                "no published bandwidth for this instance type: GETs in flight are not capped (--maximum-throughput-gbps sets a cap)"
            ),
        }
    });
}

/// The mount's GET slots: unlimited until [`GetSlots::limit`] sets a cap (once).
#[derive(Debug, Default)]
pub struct GetSlots {
    /// The cap and its permits.
    slots: OnceLock<(usize, Semaphore)>,
}

/// A GET's slot, given back when dropped (`None` while there is no cap).
pub type GetSlot<'a> = Option<SemaphorePermit<'a>>;

impl GetSlots {
    /// No cap yet.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Caps GETs in flight at `cap` (at least 1) from now on; false if a cap was already set
    /// (the first one stays). GETs already in flight are not counted against it.
    pub fn limit(&self, cap: usize) -> bool {
        let cap = cap.max(1);
        self.slots.set((cap, Semaphore::new(cap))).is_ok()
    }

    /// The cap, if one is set.
    pub fn cap(&self) -> Option<usize> {
        self.slots.get().map(|(cap, _)| *cap)
    }

    /// Waits for a slot; a wait is counted in `s3.get_slot_waits`.
    pub async fn acquire(&self) -> GetSlot<'_> {
        let (_, semaphore) = self.slots.get()?;
        if let Ok(permit) = semaphore.try_acquire() {
            return Some(permit);
        }
        metrics::counter!(crate::metrics::S3_GET_SLOT_WAITS).increment(1);
        // The semaphore is never closed: acquiring cannot fail.
        semaphore.acquire().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn targets_become_gets_in_flight() {
        assert_eq!(gets_for_gbps(0.0), MIN_GETS);
        assert_eq!(gets_for_gbps(1.0), MIN_GETS);
        assert_eq!(gets_for_gbps(10.0), 14);
        assert_eq!(gets_for_gbps(100.0), 139);
        assert_eq!(gets_for_gbps(100_000.0), MAX_GETS);
        assert_eq!(gets_for_gbps(f64::NAN), MIN_GETS);
    }

    /// Many GETs at once never hold more slots than the cap, and all of them finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn never_more_gets_than_the_cap() {
        let slots = Arc::new(GetSlots::unlimited());
        assert_eq!(slots.cap(), None);
        assert!(slots.limit(3));
        assert!(!slots.limit(100), "the first cap stays");
        assert_eq!(slots.cap(), Some(3));
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let (slots, now, most) = (slots.clone(), now.clone(), most.clone());
                tokio::spawn(async move {
                    let slot = slots.acquire().await;
                    assert!(slot.is_some());
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn no_cap_no_slot() {
        let slots = GetSlots::unlimited();
        assert!(slots.acquire().await.is_none());
    }
}
