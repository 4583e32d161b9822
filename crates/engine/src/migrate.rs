//! `sesame migrate-objects`: every object and the manifest of one storage
//! copied into another (a project's directory of files into the embedded
//! store, or local objects into a bucket).

use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;
use sesame_objects::{ObjectStorage, hash_of_key};

use crate::project::storage_url;
use crate::{EngineError, Progress};

/// Whether a key is the manifest's (and no staging leftover of a local write).
fn is_manifest_key(key: &str) -> bool {
    key.starts_with(crate::manifest::PREFIX) && !key.ends_with(".tmp")
}

/// Objects read and written per step (bounds memory).
const BATCH: usize = 1024;

/// What a migration copied.
#[derive(Debug, Default, Clone, Copy)]
pub struct Migrated {
    /// Objects copied (variants included).
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Copies every object and manifest key of `from` into `to` (storage URLs;
/// relative paths are taken from the project directory) and makes the copies
/// durable. Objects already in `to` are kept (manifest keys are replaced);
/// anything else in `from` (a staging leftover) is skipped. Nothing should
/// publish meanwhile.
pub async fn migrate_objects(
    dir: &Path,
    from: &str,
    to: &str,
    progress: &dyn Progress,
) -> Result<Migrated, EngineError> {
    let (from_url, to_url) = (storage_url(dir, from), storage_url(dir, to));
    if from_url == to_url {
        return Err(EngineError::Invalid(format!("{from:?} and {to:?} are the same storage")));
    }
    let source: Arc<dyn ObjectStorage> = sesame_objects::open(&from_url)?;
    let target: Arc<dyn ObjectStorage> = sesame_objects::open(&to_url)?;
    let keys: Vec<String> = source
        .list()
        .try_filter(|(key, _)| std::future::ready(hash_of_key(key).is_some() || is_manifest_key(key)))
        .map_ok(|(k, _)| k)
        .try_collect()
        .await?;
    progress.stage("copying", keys.len() as u64);
    let mut done = Migrated::default();
    for chunk in keys.chunks(BATCH) {
        let mut batch = Vec::with_capacity(chunk.len());
        for key in chunk {
            // Listed a moment ago; gone now means something deleted it: skip.
            if let Some(bytes) = source.get(key).await? {
                done.bytes += bytes.len() as u64;
                batch.push((key.clone(), bytes));
            }
        }
        done.objects += batch.len() as u64;
        target.put_many(batch).await?;
        progress.advance(chunk.len() as u64);
    }
    target.sync().await?;
    progress.finish();
    Ok(done)
}
