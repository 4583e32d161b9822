//! Retention and garbage collection.
//!
//! History (pointer values and document versions) is kept for the retained
//! generations: the newest N and every one younger than D days. An object goes
//! only when no current pointer and no retained history refers to it and it
//! has been unreferenced for longer than the grace period, so a reader who
//! resolved a path just before a publish still finds its bytes. Collection
//! holds the publish lease: no batch can decide to reuse an object while it is
//! being deleted.
//!
//! A sweep also deletes what storage holds but no record refers to, once it
//! is older than the grace period: the objects of a publish that crashed
//! before its commit, staging files of an interrupted write, pages earlier
//! versions rendered on request. It lists the whole store, so `serve` runs it
//! only every `[retention] sweep_interval_hours`; `sesame gc` always does.

use std::time::Duration;

use futures::StreamExt;
use sesame_model::media::{self, VARIANT_WIDTHS, media_key};
use sesame_objects::{Encoding, hash_of_key, object_key};
use sesame_store::{Retain, encodings};

use crate::manifest;
use crate::publisher::PublishLease;
use crate::{EngineError, Project};

/// What a collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Superseded pointer history rows.
    pub history: u64,
    /// Superseded document versions.
    pub versions: u64,
    /// Objects deleted.
    pub objects: u64,
    /// Files deleted (variants included).
    pub files: u64,
    /// Bytes freed (identity bytes).
    pub bytes: u64,
    /// Files the sweep deleted (stored, but recorded nowhere).
    pub swept: u64,
    /// Uploaded images deleted (no retained document version refers to them).
    pub media: u64,
    /// The oldest generation retention keeps (0 when there is none).
    pub oldest_retained: u64,
}

/// Collects garbage once, and with `sweep` also sweeps storage, under the
/// publish lease: waits up to `patience` for a publish to end, then fails
/// with [`EngineError::Busy`] (at once with `Duration::ZERO`).
pub async fn collect_garbage(project: &Project, sweep: bool, patience: Duration) -> Result<GcReport, EngineError> {
    let lease = PublishLease::wait(project, patience).await?;
    let mut result = collect(project).await;
    if sweep && let Ok(report) = &mut result {
        let oldest = report.oldest_retained;
        match sweep_storage(project, oldest).await {
            Ok(n) => report.swept = n,
            Err(e) => result = Err(e),
        }
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

/// Deletes stored files that no object record refers to and that are older
/// than the grace period. Runs under the publish lease: no publish is
/// between writing objects and recording them meanwhile.
async fn sweep_storage(project: &Project, oldest_retained: u64) -> Result<u64, EngineError> {
    let cutoff = sesame_model::time::now() - project.site.config.retention.grace_seconds as i64;
    let mut listing = project.objects.list();
    let mut swept = 0;
    let mut batch: Vec<String> = Vec::with_capacity(SWEEP_BATCH);
    let mut manifest_keys = Vec::new();
    loop {
        let next = listing.next().await.transpose()?;
        let done = next.is_none();
        match next {
            Some((key, modified)) if modified <= cutoff && key.starts_with(manifest::PREFIX) => manifest_keys.push(key),
            Some((key, modified)) if modified <= cutoff => batch.push(key),
            _ => {}
        }
        if batch.len() < SWEEP_BATCH && !done {
            continue;
        }
        let hashes: Vec<String> = batch.iter().filter_map(|k| hash_of_key(k)).map(str::to_string).collect();
        let unknown: std::collections::HashSet<String> =
            project.store.missing_objects(&hashes).await?.into_iter().collect();
        let media: Vec<String> = batch.iter().filter_map(|k| media::parse_key(k)).map(|(h, _)| h.to_string()).collect();
        let recorded: std::collections::HashSet<String> = if media.is_empty() {
            Default::default()
        } else {
            project.store.media(&media, None).await?.into_iter().map(|(m, _)| m.hash).collect()
        };
        let orphans: Vec<String> = batch
            .drain(..)
            .filter(|key| match (hash_of_key(key), media::parse_key(key)) {
                (Some(hash), _) => unknown.contains(hash),
                (None, Some((hash, _))) => !recorded.contains(hash),
                (None, None) => is_staging(key),
            })
            .collect();
        swept += orphans.len() as u64;
        project.objects.delete_many(orphans).await?;
        if done {
            break;
        }
    }
    drop(listing);
    let unused = unused_manifest(project, manifest_keys, oldest_retained).await?;
    swept += unused.len() as u64;
    project.objects.delete_many(unused).await?;
    metrics::counter!("sesame_gc_swept_total").increment(swept);
    Ok(swept)
}

/// Of these manifest keys (older than the grace period), those no retained
/// generation needs: the roots of generations older than `oldest` (as the
/// store's collection decided), and the blobs that neither the roots the
/// retained generations recorded, nor their copies for the Worker, nor the
/// current one name.
async fn unused_manifest(project: &Project, keys: Vec<String>, oldest: u64) -> Result<Vec<String>, EngineError> {
    if keys.is_empty() {
        return Ok(keys);
    }
    let mut roots = Vec::new();
    let mut named = std::collections::HashSet::new();
    for name in project.store.roots_since(oldest).await? {
        named.insert(manifest::blob_key(&name));
        match manifest::read_named_root(project.objects.as_ref(), &name).await {
            Ok(root) => roots.extend(root),
            Err(manifest::ManifestError::Corrupt(e)) => {
                tracing::warn!(error = %e, "a retained manifest root is unreadable")
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut copies = vec![manifest::CURRENT.to_string()];
    for key in &keys {
        if let Some(g) = key.strip_prefix(manifest::ROOTS).and_then(|g| g.parse::<u64>().ok())
            && g >= oldest
        {
            copies.push(key.clone());
        }
    }
    for key in &copies {
        roots.extend(manifest::read_root(project.objects.as_ref(), key).await?);
    }
    // The recorded roots and their copies share most bases: each is read once.
    let mut bases_read = std::collections::HashSet::new();
    for root in &roots {
        named.insert(manifest::blob_key(&root.base));
        named.insert(manifest::blob_key(&root.moderation));
        if !bases_read.insert(root.base.as_str()) {
            continue;
        }
        // A root whose base is lost cannot be served: its shards are kept
        // only if another root names them. Any other failure to read it
        // stops the sweep, which must not delete what it could not check.
        match manifest::read_base(project.objects.as_ref(), root).await {
            Ok(base) => named.extend(base.shards.iter().map(|n| manifest::blob_key(n))),
            Err(manifest::ManifestError::Corrupt(e)) => {
                tracing::warn!(error = %e, "a retained manifest root has no base")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(keys
        .into_iter()
        .filter(|key| {
            if let Some(g) = key.strip_prefix(manifest::ROOTS) {
                return g.parse::<u64>().is_ok_and(|g| g < oldest);
            }
            key.starts_with(manifest::SHARDS) && !named.contains(key)
        })
        .collect())
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
    let mut report = GcReport {
        history: collected.history,
        versions: collected.versions,
        oldest_retained: collected.oldest_retained,
        ..GcReport::default()
    };
    let mut doomed = Vec::new();
    for o in &collected.objects {
        // Every variant: one written after the record was read (variants
        // follow a publish) goes too, and deleting an absent one is fine.
        doomed.extend([Encoding::Identity, Encoding::Gzip, Encoding::Brotli].map(|e| object_key(&o.hash, e)));
        report.files += 1 + u64::from((o.encodings & (encodings::GZIP | encodings::BROTLI)).count_ones());
        report.objects += 1;
        report.bytes += o.size;
    }
    for m in &collected.media {
        // Every variant a medium could have: deleting an absent one is fine.
        doomed.push(media_key(&m.hash, m.format, None));
        doomed.extend(VARIANT_WIDTHS.into_iter().map(|w| media_key(&m.hash, m.format, Some(w))));
        report.files += 1 + m.variants.as_ref().map_or(0, Vec::len) as u64;
        report.media += 1;
        report.bytes += m.size;
    }
    for chunk in doomed.chunks(SWEEP_BATCH) {
        project.objects.delete_many(chunk.to_vec()).await?;
    }
    metrics::counter!("sesame_gc_objects_deleted_total").increment(report.objects);
    Ok(report)
}
