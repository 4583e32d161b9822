//! Retention and garbage collection.
//!
//! History (pointer values and document versions) is kept for the retained
//! generations: the newest N and every one younger than D days. An object goes
//! only when no current pointer and no retained history refers to it and it
//! has been unreferenced for longer than the grace period, so a reader who
//! resolved a path just before a publish still finds its bytes. Collection
//! holds the publish lease: no batch can decide to reuse an object while it is
//! being deleted.

use sesame_objects::{Encoding, object_key};
use sesame_store::{Retain, encodings};

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
}

/// Collects garbage once. Fails with [`EngineError::Busy`] while a publish runs.
pub async fn collect_garbage(project: &Project) -> Result<GcReport, EngineError> {
    let lease = PublishLease::take(project).await?;
    let result = collect(project).await;
    lease.release(project).await;
    result
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
    let mut report = GcReport { history: collected.history, versions: collected.versions, ..GcReport::default() };
    for o in &collected.objects {
        let variants = [
            (Encoding::Identity, true),
            (Encoding::Gzip, o.encodings & encodings::GZIP != 0),
            (Encoding::Brotli, o.encodings & encodings::BROTLI != 0),
        ];
        for (encoding, present) in variants {
            if present {
                project.objects.delete(&object_key(&o.hash, encoding)).await?;
                report.files += 1;
            }
        }
        report.objects += 1;
        report.bytes += o.size;
    }
    metrics::counter!("sesame_gc_objects_deleted_total").increment(report.objects);
    Ok(report)
}
