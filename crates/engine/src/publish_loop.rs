//! The publish loop: publishes changes as they become due.
//!
//! Writes land in the store with a due time (debounce), schedules with theirs
//! (see [`crate::drafts`]). The publisher sleeps until the earliest due time, a wake-up from the API (a forced build), or a poll
//! interval that catches writes made by other processes; then it publishes
//! everything due as one batch. A batch that fails because of its content (a
//! template error on one document) is retried document by document, and only
//! the documents that fail on their own are marked failed; a batch that fails
//! because of the infrastructure stays pending and is retried later.
//!
//! A publisher keeps the publish lease while work keeps coming, and gives it back
//! once the queue has been empty for [`LINGER`]: taking and releasing it are
//! durable writes, which would otherwise cost every published event two
//! fsyncs. Other publishers (`sesame apply`, garbage collection, a standby
//! publisher) get it as soon as the publisher goes idle.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sesame_store::{Pending, PendingEvent};
use tokio::sync::{Notify, watch};

use crate::publish::Uncompressed;
use crate::publisher::{Outcome, PublishLease, Publisher, Scope};
use crate::{EngineError, Project, Quiet};

/// Longest sleep between looks at the queue.
const POLL: Duration = Duration::from_secs(1);
/// Uploaded images whose variants one turn of the loop makes.
const MEDIA_PER_TICK: u32 = 4;
/// The gauge of the last generation whose pages have their compressed
/// variants stored (routers and the edge Worker send them from then on).
const VARIANTS_THROUGH: &str = "sesame_variants_generation";
/// How long a stopping publisher waits for the variants being made.
const FINISH_COMPRESSING: Duration = Duration::from_secs(5);
/// How long a publisher keeps the publish lease after its last generation.
const LINGER: Duration = Duration::from_secs(1);
/// Objects waiting for their variants past which they are compressed on
/// every core at normal priority: a flood of publishes starves the
/// lowest-priority thread, and the queue must not grow without bound.
const BACKLOG: usize = 4096;

/// Every generation through `generation` has its variants: says so on the
/// gauge, and records it for the next start (in the background: a record
/// lost or late only makes that start compress some objects again).
fn done_through(project: &Arc<Project>, generation: u64) {
    metrics::gauge!(VARIANTS_THROUGH).set(generation as f64);
    let project = project.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::variants::record_variants_through(&project, generation).await {
            tracing::warn!(error = %e, "cannot record which generations have their variants");
        }
    });
}

/// How the variants of `queued` objects are made: beside the publishes,
/// unless they have piled up (or a publisher starts with a backlog).
fn compress_mode(queued: usize) -> crate::Compress {
    if queued > BACKLOG { crate::Compress::Now } else { crate::Compress::Beside }
}

/// Shared between the publisher and whoever writes (the API): wakes the publisher
/// and tells which events are in the batch being built.
#[derive(Debug, Clone, Default)]
pub struct PublishLoopHandle {
    wake: Arc<Notify>,
    building: Arc<RwLock<HashSet<i64>>>,
}

impl PublishLoopHandle {
    /// Asks the publisher to look at the queue now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether an event is in the batch being built.
    pub fn is_building(&self, event: i64) -> bool {
        self.building.read().unwrap_or_else(|e| e.into_inner()).contains(&event)
    }
}

/// Called after every committed generation.
pub type Listener = Box<dyn Fn(&Outcome) + Send + Sync>;

/// Publishes due changes until shut down.
pub struct PublishLoop {
    project: Arc<Project>,
    publisher: Publisher,
    handle: PublishLoopHandle,
    listeners: Vec<Listener>,
    /// The publish lease while this publisher keeps it.
    held: Option<Held>,
    /// Objects published without their compressed variants, waiting for them.
    uncompressed: Vec<Uncompressed>,
    /// The one compression running in the background, if any (its output:
    /// whether it stored every variant).
    compressing: Option<tokio::task::JoinHandle<bool>>,
    /// The last generation whose objects are queued in `uncompressed`.
    queued_through: u64,
}

struct Held {
    lease: PublishLease,
    /// When it last published (or took the lease).
    busy: Instant,
}

/// Whether a failure is about the content (retrying it unchanged cannot help)
/// rather than the infrastructure.
fn content_error(e: &EngineError) -> bool {
    matches!(e, EngineError::Render(_) | EngineError::PathCollision { .. })
}

impl PublishLoop {
    /// Loads the published state.
    pub async fn new(project: Arc<Project>, handle: PublishLoopHandle) -> Result<PublishLoop, EngineError> {
        let mut publisher = Publisher::load(&project).await?;
        if let Err(e) = publisher.prepare(&project).await {
            tracing::warn!(error = %e, "cannot read the objects the manifest names; the first publish reads them");
        }
        // What a publisher stopped before compressing (a crash, a `kill -9`)
        // left without variants: compressed first, in the background.
        let (queued_through, uncompressed) = match project.site.config.publish.compress {
            true => crate::variants::left_uncompressed(&project).await?,
            false => (0, Vec::new()),
        };
        Ok(PublishLoop {
            project,
            publisher,
            handle,
            listeners: Vec::new(),
            held: None,
            uncompressed,
            compressing: None,
            queued_through,
        })
    }

    /// Adds a listener called after every committed generation.
    pub fn on_published(&mut self, listener: impl Fn(&Outcome) + Send + Sync + 'static) {
        self.listeners.push(Box::new(listener));
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let delay = match self.project.store.next_due().await {
                Ok(Some(due)) => {
                    Duration::from_millis((due - sesame_model::time::now_ms()).clamp(0, POLL.as_millis() as i64) as u64)
                }
                Ok(None) => POLL,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the queue");
                    POLL
                }
            };
            tokio::select! {
                () = self.handle.wake.notified() => {}
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                if let Some(held) = self.held.take() {
                    held.lease.release(&self.project).await;
                }
                self.finish_compressing().await;
                return;
            }
            match self.tick().await {
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::error!(error = %e, "publishing failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            // Off the path of a change waking the loop.
            if let Ok(depth) = self.project.store.pending_events().await {
                metrics::gauge!("sesame_queue_depth").set(depth as f64);
            }
            self.compress_in_background();
            // Resized copies of uploaded images, a few at a time between batches.
            match crate::media::make_pending_variants(&self.project, MEDIA_PER_TICK).await {
                Ok(n) if n == MEDIA_PER_TICK as usize => self.handle.wake(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot make image variants; retrying"),
            }
        }
    }

    /// Publishes everything due now, batch after batch; returns the number of
    /// generations committed (0 while another process holds the lease).
    pub async fn tick(&mut self) -> Result<usize, EngineError> {
        let held = match self.held.take() {
            Some(held) if !held.lease.is_lost() => held,
            _ => {
                // Take the lease only for work that is due: taking it is a write.
                let now = sesame_model::time::now_ms();
                if self.project.store.next_due().await?.is_none_or(|due| due > now) {
                    return Ok(0);
                }
                match PublishLease::take(&self.project).await {
                    Ok(lease) => Held { lease, busy: Instant::now() },
                    Err(EngineError::Busy(_)) => return Ok(0),
                    Err(e) => return Err(e),
                }
            }
        };
        let result = self.publish_due(&held.lease).await;
        match result {
            Ok(n) if n > 0 => self.held = Some(Held { busy: Instant::now(), ..held }),
            Ok(_) if held.busy.elapsed() < LINGER => self.held = Some(held),
            _ => held.lease.release(&self.project).await,
        }
        result
    }

    async fn publish_due(&mut self, lease: &PublishLease) -> Result<usize, EngineError> {
        let mut generations = 0;
        loop {
            let limit = self.project.site.config.queue.batch_limit;
            // Schedules due become changes due now, published with the rest.
            crate::drafts::land_due(&self.project, sesame_model::time::now_ms()).await?;
            // Read under the lease, so no other process publishes these meanwhile.
            let pending = self.project.store.pending(limit, sesame_model::time::now_ms()).await?;
            if pending.events.is_empty() {
                return Ok(generations);
            }
            let full = pending.events.len() as u32 == limit;
            // Render with what the last full build rendered with (one run in
            // another process after a template change, say).
            self.project.follow_rendering().await?;
            self.set_building(&pending.events);
            let result = self.publish_or_split(lease, pending).await;
            self.set_building(&[]);
            generations += result?;
            if !full {
                return Ok(generations);
            }
        }
    }

    async fn publish_or_split(&mut self, lease: &PublishLease, pending: Pending) -> Result<usize, EngineError> {
        let project = self.project.clone();
        match self.publisher.publish(&project, lease, Scope::Changed, pending.clone(), &Quiet).await {
            Ok(outcome) => Ok(self.notify(outcome)),
            Err(e) if content_error(&e) => {
                tracing::warn!(error = %e, "a batch failed on its content; publishing its documents one by one");
                let mut by_doc: BTreeMap<_, Vec<PendingEvent>> = BTreeMap::new();
                for ev in &pending.events {
                    by_doc.entry(ev.key.clone()).or_default().push(ev.clone());
                }
                let mut generations = 0;
                for (key, events) in by_doc {
                    let doc = pending.docs.get(&key).cloned().flatten();
                    let one = Pending { events: events.clone(), docs: [(key.clone(), doc)].into_iter().collect() };
                    match self.publisher.publish(&project, lease, Scope::Changed, one, &Quiet).await {
                        Ok(outcome) => generations += self.notify(outcome),
                        Err(e) if content_error(&e) => {
                            tracing::error!(error = %e, document = %key, "publishing a document failed");
                            metrics::counter!("sesame_events_failed_total").increment(events.len() as u64);
                            let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
                            project.store.fail_events(&ids, &e.to_string()).await?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(generations)
            }
            Err(e) => Err(e),
        }
    }

    fn notify(&mut self, outcome: Option<Outcome>) -> usize {
        match outcome {
            Some(mut o) => {
                for l in &self.listeners {
                    l(&o);
                }
                let idle = self.uncompressed.is_empty() && self.compressing.as_ref().is_none_or(|c| c.is_finished());
                if o.uncompressed.is_empty() && idle {
                    done_through(&self.project, o.stats.generation);
                }
                self.uncompressed.append(&mut o.uncompressed);
                self.queued_through = o.stats.generation;
                1
            }
            None => 0,
        }
    }

    /// Starts compressing what was published without variants, unless a
    /// compression is still running (its successor takes everything queued
    /// meanwhile). It runs beside the next publishes, never before them.
    fn compress_in_background(&mut self) {
        if let Some(running) = &mut self.compressing {
            if !running.is_finished() {
                return;
            }
            let stored = futures::FutureExt::now_or_never(running).and_then(Result::ok).unwrap_or(false);
            self.compressing = None;
            // Generations published with nothing new to compress while it
            // ran are done with it.
            if stored && self.uncompressed.is_empty() {
                done_through(&self.project, self.queued_through);
            }
        }
        if self.uncompressed.is_empty() {
            return;
        }
        let (project, objects) = (self.project.clone(), std::mem::take(&mut self.uncompressed));
        let through = self.queued_through;
        self.compressing = Some(tokio::spawn(async move {
            let how = compress_mode(objects.len());
            match crate::add_variants(&project, objects, how, &Quiet).await {
                Ok(_) => {
                    done_through(&project, through);
                    true
                }
                // The objects stay servable, uncompressed.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store compressed variants");
                    false
                }
            }
        }));
    }

    /// At shutdown: lets the compression of what was published finish, for
    /// at most [`FINISH_COMPRESSING`]; past that its objects keep being
    /// served uncompressed.
    async fn finish_compressing(&mut self) {
        let deadline = tokio::time::Instant::now() + FINISH_COMPRESSING;
        // The running compression, then the one of what is still queued.
        if self.finished_by(deadline).await {
            self.compress_in_background();
            self.finished_by(deadline).await;
        }
    }

    /// Waits for the running compression until `deadline`; aborts it then.
    /// Whether it finished (or none ran).
    async fn finished_by(&mut self, deadline: tokio::time::Instant) -> bool {
        let Some(running) = self.compressing.take() else { return true };
        let abort = running.abort_handle();
        if tokio::time::timeout_at(deadline, running).await.is_ok() {
            return true;
        }
        abort.abort();
        tracing::warn!("stopped before storing every compressed variant: those pages are served uncompressed");
        false
    }

    fn set_building(&self, events: &[PendingEvent]) {
        let mut building = self.handle.building.write().unwrap_or_else(|e| e.into_inner());
        building.clear();
        building.extend(events.iter().map(|e| e.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a render task that panicked was an `Invalid` error, which
    /// failed the events of its batch for good.
    #[test]
    fn only_content_errors_fail_changes() {
        assert!(!content_error(&EngineError::Internal("render task failed: panicked".into())));
        assert!(!content_error(&EngineError::Corrupt("a pointer to a missing object".into())));
        assert!(!content_error(&EngineError::Invalid("a badly named static file".into())));
        let collision = EngineError::PathCollision { path: "/a/".into(), first: "one".into(), second: "other".into() };
        assert!(content_error(&collision));
    }

    /// The variants of a few publishes are made at the lowest priority; a
    /// backlog (a flood of publishes, or a publisher starting after a crash)
    /// on every core, so the queue is bounded by how fast they compress.
    #[test]
    fn a_backlog_of_uncompressed_objects_is_compressed_at_full_speed() {
        assert_eq!(compress_mode(11), crate::Compress::Beside);
        assert_eq!(compress_mode(BACKLOG), crate::Compress::Beside);
        assert_eq!(compress_mode(BACKLOG + 1), crate::Compress::Now);
    }
}
