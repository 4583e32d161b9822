//! Compressed variants follow a publish instead of delaying it.
//!
//! A publish writes identity bytes only and commits: the new pages are live
//! at once (the router and the edge Worker send them uncompressed meanwhile:
//! both look for the variants in storage). Then the objects it wrote without
//! their variants get them here: read back, compressed (gzip and brotli, kept
//! when at least 10% smaller), written and made durable. `sesame build` does
//! this after its commit; `serve` and publishers in the background between
//! batches. Once every generation up to N has its variants, the store's
//! meta records N ([`VARIANTS_THROUGH`]). An object left without variants
//! (a process stopped in between) is served uncompressed until a publisher
//! starts: it compresses first the objects the generations after N brought
//! ([`left_uncompressed`]); `export` compresses what it lacks.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use rayon::prelude::*;
use sesame_objects::{Encoded, Encoding, ObjectStorage, object_key};
use sesame_store::encodings;

use crate::publish::Uncompressed;
use crate::{EngineError, Progress, Project};

/// Objects compressed per step (bounds memory).
const CHUNK: usize = 1024;

/// Where the compression runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    /// On every core (rayon's pool): a command that waits for it.
    Now,
    /// On one thread of its own at the lowest CPU priority, beside the
    /// publishes of a running publisher: they render on rayon's pool and
    /// would otherwise queue behind the compression of the previous batch,
    /// and the scheduler gives them the cores first (BENCHMARKS.md: "Where
    /// one add's time goes").
    Beside,
}

/// What [`add_variants`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct VariantReport {
    /// Objects that got at least one variant.
    pub objects: u64,
    /// Variant files written.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Compresses `objects` and stores their variants, when the project keeps
/// variants (`[publish] compress`). Objects no longer stored
/// (collected meanwhile) are skipped.
pub async fn add_variants(
    project: &Project,
    objects: Vec<Uncompressed>,
    how: Compress,
    progress: &dyn Progress,
) -> Result<VariantReport, EngineError> {
    let started = Instant::now();
    let mut report = VariantReport::default();
    if objects.is_empty() || !project.site.config.publish.compress {
        return Ok(report);
    }
    progress.stage("compressing", objects.len() as u64);
    for chunk in objects.chunks(CHUNK) {
        let read = read_all(&project.objects, chunk).await?;
        let encoded = compress(read, how).await?;
        let mut puts = Vec::new();
        for e in encoded {
            let mut bits = 0;
            for (encoding, bit, body) in
                [(Encoding::Gzip, encodings::GZIP, e.gzip), (Encoding::Brotli, encodings::BROTLI, e.brotli)]
            {
                if let Some(body) = body {
                    bits |= bit;
                    report.files += 1;
                    report.bytes += body.len() as u64;
                    puts.push((object_key(&e.hash, encoding), body));
                }
            }
            if bits != 0 {
                report.objects += 1;
            }
        }
        if !puts.is_empty() {
            project.objects.put_many(puts).await?;
            project.objects.sync().await?;
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    report.seconds = started.elapsed().as_secs_f64();
    metrics::counter!("sesame_variant_files_written_total").increment(report.files);
    Ok(report)
}

/// The meta key of the generation through which every object a generation
/// brought has its variants stored.
pub const VARIANTS_THROUGH: &str = "variants_through";

/// Records that every generation through `generation` has its variants
/// (never moving the record back).
/// Only while the project keeps variants: turned on later, the objects
/// published meanwhile are still to compress.
pub async fn record_variants_through(project: &Project, generation: u64) -> Result<(), EngineError> {
    if project.site.config.publish.compress && variants_through(project).await? < generation {
        project.store.set_meta(VARIANTS_THROUGH, &generation.to_string()).await?;
    }
    Ok(())
}

/// The generation through which variants are recorded as stored (0: none).
pub async fn variants_through(project: &Project) -> Result<u64, EngineError> {
    Ok(project.store.meta(VARIANTS_THROUGH).await?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// What the newest generation serves that may lack its variants, and that
/// generation: the objects the generations after the recorded one brought
/// (the difference of the two tables), or, when that generation's root is
/// gone, every object whose entry records no variant.
pub async fn left_uncompressed(project: &Project) -> Result<(u64, Vec<Uncompressed>), EngineError> {
    let Some(latest) = crate::manifest::latest_root(project).await? else { return Ok((0, Vec::new())) };
    let through = variants_through(project).await?;
    if through >= latest.generation {
        return Ok((latest.generation, Vec::new()));
    }
    let before = match project.store.root_of(through).await? {
        Some(name) => crate::manifest::read_named_root(project.objects.as_ref(), &name).await.ok().flatten(),
        None => None,
    };
    let known: std::collections::HashSet<String> = match &before {
        Some(root) => {
            objects_of(&crate::manifest::table(project, Some(root)).await?).map(|(h, ..)| h.clone()).collect()
        }
        None => Default::default(),
    };
    let table = crate::manifest::table(project, Some(&latest)).await?;
    let mut seen = std::collections::HashSet::new();
    let left = objects_of(&table)
        .filter(|(hash, size, encodings, content_type)| {
            let unknown = if before.is_some() { !known.contains(*hash) } else { *encodings == 0 };
            unknown && sesame_objects::compressible(content_type, *size) && seen.insert(*hash)
        })
        .map(|(hash, _, _, content_type)| Uncompressed { hash: hash.clone(), content_type: content_type.to_string() })
        .collect();
    Ok((latest.generation, left))
}

/// The objects the pages of a table serve: hash, size, variants, type.
fn objects_of(
    table: &std::collections::HashMap<String, sesame_store::Pointer>,
) -> impl Iterator<Item = (&String, u64, u8, &str)> {
    table.values().filter_map(|p| match &p.target {
        sesame_store::Target::Page { object, content_type } => {
            Some((&object.hash, object.size, object.encodings, content_type.as_str()))
        }
        _ => None,
    })
}

/// Compresses objects read back, where `how` says.
async fn compress(read: Vec<(Uncompressed, Bytes)>, how: Compress) -> Result<Vec<Encoded>, EngineError> {
    let failed = |e: &dyn std::fmt::Display| EngineError::Internal(format!("compression task failed: {e}"));
    match how {
        Compress::Now => tokio::task::spawn_blocking(move || {
            read.into_par_iter().map(|(object, identity)| with_variants(object, identity)).collect()
        })
        .await
        .map_err(|e| failed(&e)),
        Compress::Beside => {
            let (done, encoded) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("sesame-compress".into())
                .spawn(move || {
                    lower_priority();
                    let _ =
                        done.send(read.into_iter().map(|(object, identity)| with_variants(object, identity)).collect());
                })
                .map_err(|e| failed(&e))?;
            encoded.await.map_err(|e| failed(&e))
        }
    }
}

/// Gives the calling thread the lowest CPU priority (nice 19): Linux keeps
/// a nice value per thread, so the rest of the process keeps its own.
fn lower_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, 19) {
        tracing::debug!(error = %e, "cannot lower the compression thread's priority");
    }
}

/// An object's bytes with the gzip and brotli variants worth keeping (CPU
/// work: for a blocking thread).
pub(crate) fn with_variants(object: Uncompressed, identity: Bytes) -> Encoded {
    let mut e = Encoded { hash: object.hash, identity, gzip: None, brotli: None };
    e.add_variants(&object.content_type);
    e
}

/// The identity bytes of each object still stored, 32 reads at a time.
async fn read_all(
    objects: &Arc<dyn ObjectStorage>,
    chunk: &[Uncompressed],
) -> Result<Vec<(Uncompressed, Bytes)>, EngineError> {
    let read: Vec<Result<Option<(Uncompressed, Bytes)>, EngineError>> = futures::stream::iter(chunk.iter().cloned())
        .map(|object| async move {
            let bytes = objects.get(&object_key(&object.hash, Encoding::Identity)).await?;
            Ok(bytes.map(|b| (object, b)))
        })
        .buffer_unordered(32)
        .collect()
        .await;
    read.into_iter().filter_map(Result::transpose).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compressing beside the publishes makes the same variants as on every
    /// core, on a thread that yields to them.
    #[tokio::test]
    async fn compression_beside_publishes_makes_the_same_variants_at_the_lowest_priority() {
        let page = |n: usize| {
            let body = format!("<!doctype html><title>{n}</title>{}", "<p>a card of the gallery</p>".repeat(200));
            (Uncompressed { hash: format!("h{n}"), content_type: "text/html".into() }, Bytes::from(body))
        };
        let read: Vec<_> = (0..8).map(page).collect();
        let now = compress(read.clone(), Compress::Now).await.unwrap();
        let beside = compress(read, Compress::Beside).await.unwrap();
        let variants =
            |e: &[Encoded]| e.iter().map(|e| (e.hash.clone(), e.gzip.clone(), e.brotli.clone())).collect::<Vec<_>>();
        assert_eq!(variants(&now), variants(&beside));
        assert!(now.iter().all(|e| e.gzip.is_some() && e.brotli.is_some()));

        let own = rustix::process::getpriority_process(None).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            lower_priority();
            let _ = tx.send(rustix::process::getpriority_process(None));
        });
        assert_eq!(rx.await.unwrap().unwrap(), 19, "the nice value of the compressing thread");
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), own, "the test's thread keeps its own");
    }
}
