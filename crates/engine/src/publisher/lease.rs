//! The publish lease: one publisher at a time across every process sharing
//! the store, renewed in the background, fenced by base generations anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{EngineError, Project};

/// The lease that serializes publishing (and garbage collection) across processes.
const PUBLISH_LEASE: &str = "publish";

/// This process's side of the publish lease, one per opened project: the
/// holder name the store knows it by, and a lock so that two tasks of the
/// process (the worker and garbage collection, say) never both hold it.
pub(crate) struct LeaseGate {
    holder: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Default for LeaseGate {
    fn default() -> Self {
        static OPENED: AtomicU64 = AtomicU64::new(0);
        let n = OPENED.fetch_add(1, Ordering::Relaxed);
        let holder = format!("pid{}-{}-{n}", std::process::id(), sesame_model::time::now_ms());
        LeaseGate { holder, lock: Arc::default() }
    }
}

/// The right to publish (and to collect garbage): one holder at a time across
/// every process sharing the store. Renewed in the background until released
/// or dropped.
pub struct PublishLease {
    holder: String,
    renewal: tokio::task::JoinHandle<()>,
    /// Set when a renewal found the lease taken, or could not renew it for so
    /// long that another process may have taken it.
    lost: Arc<AtomicBool>,
    _gate: tokio::sync::OwnedMutexGuard<()>,
}

impl std::fmt::Debug for PublishLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishLease").field("holder", &self.holder).finish()
    }
}

impl PublishLease {
    /// Takes the lease or fails with [`EngineError::Busy`].
    pub async fn take(project: &Project) -> Result<PublishLease, EngineError> {
        let gate = project.publishing.lock.clone().try_lock_owned().map_err(|_| EngineError::Busy("publish"))?;
        let store = &project.store;
        let holder = project.publishing.holder.clone();
        // A holder renews the lease every third of its time, so a process
        // that dies (even by SIGKILL) is taken over within it.
        let lease_ms = u64::from(project.site.config.publish.lease_seconds) * 1000;
        if !store.acquire_lease(PUBLISH_LEASE, &holder, lease_ms).await? {
            return Err(EngineError::Busy("publish"));
        }
        let lost = Arc::new(AtomicBool::new(false));
        let (store, id, flag) = (store.clone(), holder.clone(), lost.clone());
        let renewal = tokio::spawn(async move {
            let mut renewed = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(lease_ms / 3)).await;
                match store.acquire_lease(PUBLISH_LEASE, &id, lease_ms).await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => {
                        tracing::error!("lost the publish lease to another process");
                        flag.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the publish lease");
                        if renewed.elapsed() >= Duration::from_millis(lease_ms) {
                            flag.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        metrics::gauge!("sesame_publish_lease_held").set(1.0);
        Ok(PublishLease { holder, renewal, lost, _gate: gate })
    }

    /// Takes the lease, waiting up to `patience` while another holds it.
    pub async fn wait(project: &Project, patience: Duration) -> Result<PublishLease, EngineError> {
        let deadline = Instant::now() + patience;
        loop {
            match PublishLease::take(project).await {
                Err(EngineError::Busy(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    /// Whether another process may hold the lease now. Commits stay safe
    /// either way (they are fenced by their base generation); a holder that
    /// lost the lease should stop publishing and let the other one work.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Gives it back (failures are logged: the lease then simply expires).
    pub async fn release(self, project: &Project) {
        self.renewal.abort();
        if let Err(e) = project.store.release_lease(PUBLISH_LEASE, &self.holder).await {
            tracing::warn!(error = %e, "cannot release the publish lease; it will expire");
        }
    }
}

impl Drop for PublishLease {
    fn drop(&mut self) {
        metrics::gauge!("sesame_publish_lease_held").set(0.0);
        self.renewal.abort();
    }
}
