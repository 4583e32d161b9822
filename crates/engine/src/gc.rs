//! Retention and garbage collection.
//!
//! History (manifest roots and document versions) is kept for the retained
//! generations: the newest N and every one younger than D days. Collection
//! decides the oldest retained generation, drops the document versions no
//! retained generation needs and deletes uploaded images nothing refers to.
//! It holds the publish lease: no batch can decide to reuse an object while
//! it is being deleted.
//!
//! The sweep deletes what storage holds but no retained generation's root
//! names, once it is older than the grace period: page objects no retained
//! page serves, the objects of a publish that crashed before its commit,
//! staging files of an interrupted write, pages earlier versions rendered on
//! request, manifest blobs no retained root names. The roots of generations
//! live during the grace period count as retained, so a reader who resolved
//! a path just before a publish still finds its bytes. It lists the whole
//! store, so `serve` runs it only every `[retention] sweep_interval_hours`;
//! `sesame gc` always does.

use std::time::Duration;

use futures::StreamExt;
use sesame_model::media::{self, VARIANT_WIDTHS, media_key};
use sesame_objects::hash_of_key;
use sesame_store::Retain;

use crate::manifest;
use crate::publisher::PublishLease;
use crate::{EngineError, Project};

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Superseded document versions.
    pub versions: u64,
    /// Page objects deleted by the sweep (no retained root names them).
    pub objects: u64,
    /// Their files (variants included).
    pub files: u64,
    /// Other files the sweep deleted (stored, but recorded nowhere).
    pub swept: u64,
    /// Uploaded images deleted (no retained document version refers to them).
    pub media: u64,
    /// Their bytes (originals).
    pub bytes: u64,
    /// The oldest generation retention keeps (0 when there is none).
    pub oldest_retained: u64,
}

/// Collects garbage once, and with `sweep` also sweeps storage, under the
/// publish lease: waits up to `patience` for a publish to end, then fails
/// with [`EngineError::Busy`] (at once with `Duration::ZERO`).
pub async fn collect_garbage(project: &Project, sweep: bool, patience: Duration) -> Result<GcReport, EngineError> {
    let lease = PublishLease::wait(project, patience).await?;
    let mut result = collect(project).await;
    if sweep
        && let Ok(report) = &mut result
        && let Err(e) = sweep_storage(project, report).await
    {
        result = Err(e);
    }
    lease.release(project).await;
    result
}

/// Whether a key is a staging file of a local write (`HASH[.br].PID-N.tmp`),
/// left behind when the process died mid-write. Anything else that is not
/// an object is not sesame's and is left alone.
fn is_staging(key: &str) -> bool {
    key.ends_with(".tmp")
        && key.rsplit('/').next().and_then(|name| name.get(..64)).is_some_and(|h| hash_of_key(h).is_some())
}

/// Files listed per lookup of their records.
const SWEEP_BATCH: usize = 1000;

/// Deletes stored files that no retained root or record names and that
/// are older than the grace period. Runs under the publish lease: no publish
/// is between writing objects and committing their root meanwhile.
async fn sweep_storage(project: &Project, report: &mut GcReport) -> Result<(), EngineError> {
    let cutoff = sesame_model::time::now() - project.site.config.retention.grace_seconds as i64;
    // The generations whose roots count: the retained ones, and every one
    // live since the cutoff.
    let live_then = project.store.generation_at(cutoff).await?.max(1);
    let keep_from = report.oldest_retained.max(1).min(live_then);
    let named = Named::read(project, keep_from).await?;
    let mut listing = project.objects.list();
    let mut batch: Vec<String> = Vec::with_capacity(SWEEP_BATCH);
    let mut objects = std::collections::HashSet::new();
    loop {
        let next = listing.next().await.transpose()?;
        let done = next.is_none();
        if let Some((key, modified)) = next
            && modified <= cutoff
        {
            batch.push(key);
        }
        if batch.len() < SWEEP_BATCH && !done {
            continue;
        }
        let media: Vec<String> = batch.iter().filter_map(|k| media::parse_key(k)).map(|(h, _)| h.to_string()).collect();
        let recorded: std::collections::HashSet<String> = if media.is_empty() {
            Default::default()
        } else {
            project.store.media(&media, None).await?.into_iter().map(|(m, _)| m.hash).collect()
        };
        let mut doomed = Vec::new();
        for key in batch.drain(..) {
            if key.starts_with(manifest::PREFIX) {
                if named.unused_blob(&key) {
                    report.swept += 1;
                    doomed.push(key);
                }
                continue;
            }
            let orphan = match (hash_of_key(&key), media::parse_key(&key)) {
                (Some(hash), _) if named.complete && !named.objects.contains(hash) => {
                    objects.insert(hash.to_string());
                    report.files += 1;
                    true
                }
                (Some(_), _) => false,
                (None, Some((hash, _))) if !recorded.contains(hash) => {
                    report.swept += 1;
                    true
                }
                (None, Some(_)) => false,
                (None, None) if is_staging(&key) => {
                    report.swept += 1;
                    true
                }
                (None, None) => false,
            };
            if orphan {
                doomed.push(key);
            }
        }
        project.objects.delete_many(doomed).await?;
        if done {
            break;
        }
    }
    report.objects = objects.len() as u64;
    metrics::counter!("sesame_gc_swept_total").increment(report.swept);
    metrics::counter!("sesame_gc_objects_deleted_total").increment(report.objects);
    Ok(())
}

/// What the roots of the generations a sweep keeps name: their manifest
/// blobs and the objects their pages serve.
struct Named {
    /// The oldest generation kept.
    from: u64,
    /// Manifest blob keys.
    blobs: std::collections::HashSet<String>,
    /// Object hashes.
    objects: std::collections::HashSet<String>,
    /// Whether every kept root could be read whole: if not, no page object
    /// is deleted (which ones the unreadable one serves is unknown).
    complete: bool,
}

impl Named {
    /// Reads the roots generations `from` and newer recorded, the copies
    /// of them the Worker reads (`roots/N`, `current`), and every level they
    /// name (each base and shard once: roots share most of them).
    async fn read(project: &Project, from: u64) -> Result<Named, EngineError> {
        let storage = project.objects.as_ref();
        let mut named = Named { from, blobs: Default::default(), objects: Default::default(), complete: true };
        let mut roots = Vec::new();
        for name in project.store.roots_since(from).await? {
            named.blobs.insert(manifest::blob_key(&name));
            match manifest::read_named_root(storage, &name).await {
                Ok(Some(root)) => roots.push(root),
                Ok(None) => named.unreadable(&format!("root {name} is of another format")),
                Err(manifest::ManifestError::Corrupt(e)) => named.unreadable(&e),
                Err(e) => return Err(e.into()),
            }
        }
        let latest = project.store.latest_generation().await?;
        let copies = std::iter::once(manifest::CURRENT.to_string()).chain((from..=latest).map(manifest::root_key));
        for key in copies {
            roots.extend(manifest::read_root(storage, &key).await?);
        }
        let mut bases = std::collections::HashSet::new();
        let mut shards = std::collections::HashSet::new();
        for root in &roots {
            named.blobs.insert(manifest::blob_key(&root.base));
            named.blobs.insert(manifest::blob_key(&root.moderation));
            named.overlay(&root.recent);
            if !bases.insert(root.base.clone()) {
                continue;
            }
            // A root whose base is lost cannot be served: its shards are kept
            // only if another root names them. Any other failure to read it
            // stops the sweep, which must not delete what it could not check.
            let base = match manifest::read_base(storage, root).await {
                Ok(base) => base,
                Err(manifest::ManifestError::Corrupt(e)) => {
                    named.unreadable(&e);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            named.overlay(&base.delta);
            for shard in base.shards {
                named.blobs.insert(manifest::blob_key(&shard));
                if !shards.insert(shard.clone()) {
                    continue;
                }
                match manifest::read_blob::<manifest::Shard>(storage, &shard).await {
                    Ok(shard) => {
                        named.objects.extend(shard.objects.into_keys());
                        named.objects.extend(shard.paths.into_values().filter_map(|e| served(&e)));
                    }
                    Err(manifest::ManifestError::Corrupt(e)) => named.unreadable(&e),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(named)
    }

    fn unreadable(&mut self, error: &str) {
        tracing::warn!(error, "a retained manifest is unreadable: no page object is deleted");
        self.complete = false;
    }

    /// The objects an overlay names (not those it drops). What it drops
    /// from the shards below stays named until a checkpoint folds it in.
    fn overlay(&mut self, overlay: &manifest::Overlay) {
        self.objects.extend(overlay.objects.iter().filter(|(_, e)| e.is_some()).map(|(hash, _)| hash.clone()));
        self.objects.extend(overlay.paths.values().flatten().filter_map(served));
    }

    /// Whether a manifest key (older than the grace period) is one no kept
    /// generation needs: the copy of a root older than them, or a blob no
    /// kept root names.
    fn unused_blob(&self, key: &str) -> bool {
        if let Some(g) = key.strip_prefix(manifest::ROOTS) {
            return g.parse::<u64>().is_ok_and(|g| g < self.from);
        }
        key.starts_with(manifest::SHARDS) && !self.blobs.contains(key)
    }
}

/// The object a path entry serves.
fn served(entry: &manifest::PathEntry) -> Option<String> {
    match entry {
        manifest::PathEntry::Page { o, .. } => Some(o.clone()),
        _ => None,
    }
}

async fn collect(project: &Project) -> Result<GcReport, EngineError> {
    let r = &project.site.config.retention;
    let now = sesame_model::time::now();
    let retain = Retain {
        generations: r.generations,
        // `days = 0` keeps no generation for its age alone.
        since: if r.days == 0 { i64::MAX } else { now - i64::from(r.days) * 86_400 },
        released_before: now - r.grace_seconds as i64,
    };
    let collected = project.store.collect_garbage(retain).await?;
    let mut report =
        GcReport { versions: collected.versions, oldest_retained: collected.oldest_retained, ..GcReport::default() };
    let mut doomed = Vec::new();
    for m in &collected.media {
        // Every variant a medium could have: deleting an absent one is fine.
        doomed.push(media_key(&m.hash, m.format, None));
        doomed.extend(VARIANT_WIDTHS.into_iter().map(|w| media_key(&m.hash, m.format, Some(w))));
        report.media += 1;
        report.bytes += m.size;
    }
    for chunk in doomed.chunks(SWEEP_BATCH) {
        project.objects.delete_many(chunk.to_vec()).await?;
    }
    Ok(report)
}
