//! Pages of retained generations (`PATH?v=GENERATION`) and the moderation
//! list (`/_v/<hash>`), from the manifest
//! root each generation recorded, as the edge Worker reads them: the root's
//! recent entries, then its base's delta, then the path's shard, so a cold
//! lookup reads at most three blobs. Decoded blobs are kept in a cache
//! bounded by their stored size (a blob never changes, so nothing in it goes
//! stale), and concurrent readers of one blob wait for one read.

use std::sync::Arc;

use quick_cache::Weighter;
use quick_cache::sync::Cache;
use sesame_manifest::{Base, ManifestError, Moderation, PathEntry, Root, Shard};
use sesame_objects::ObjectStorage;
use sesame_store::MetaStore;

use crate::RefreshError;

/// Stored bytes of the blobs kept decoded (they take about ten times that
/// decoded: a shard of the gallery is ~13 KB stored, ~120 KB decoded).
const BUDGET: u64 = 8 * 1024 * 1024;
/// Typical stored blob, for sizing the cache's index.
const TYPICAL_BLOB: u64 = 16 * 1024;

/// A decoded blob and its stored size.
#[derive(Clone)]
enum Blob {
    Root(Arc<Root>, u64),
    Base(Arc<Base>, u64),
    Shard(Arc<Shard>, u64),
    Moderation(Arc<Moderation>, u64),
}

#[derive(Clone)]
struct StoredSize;

impl Weighter<String, Blob> for StoredSize {
    fn weight(&self, _: &String, blob: &Blob) -> u64 {
        match blob {
            Blob::Root(_, n) | Blob::Base(_, n) | Blob::Shard(_, n) | Blob::Moderation(_, n) => (*n).max(1),
        }
    }
}

/// Blobs of retained generations' manifests, decoded and kept.
pub(crate) struct History {
    blobs: Cache<String, Blob, StoredSize>,
}

impl History {
    pub(crate) fn new() -> History {
        History { blobs: Cache::with_weighter((BUDGET / TYPICAL_BLOB) as usize, BUDGET, StoredSize) }
    }

    /// What `path` served at `generation`.
    pub(crate) async fn path_at(
        &self,
        store: &dyn MetaStore,
        objects: &Arc<dyn ObjectStorage>,
        path: &str,
        generation: u64,
    ) -> Result<Option<PathEntry>, RefreshError> {
        let Some(name) = store.root_of(generation).await? else {
            return Err(ManifestError::Corrupt(format!("generation {generation} recorded no manifest root")).into());
        };
        let Blob::Root(root, _) = self.blob(objects, &name, Kind::Root).await? else { return Err(mixed(&name)) };
        if root.format != sesame_manifest::FORMAT {
            return Err(
                ManifestError::Corrupt(format!("the root of generation {generation} is of another format")).into()
            );
        }
        if let Some(entry) = root.recent.paths.get(path) {
            return Ok(entry.clone());
        }
        let Blob::Base(base, _) = self.blob(objects, &root.base, Kind::Base).await? else {
            return Err(mixed(&root.base));
        };
        if let Some(entry) = base.delta.paths.get(path) {
            return Ok(entry.clone());
        }
        let shard = sesame_manifest::shard_of(&root.salt, path, root.bits);
        let name = base.shards.get(shard).ok_or_else(|| {
            ManifestError::Corrupt(format!("manifest base {} does not name 2^{} shards", root.base, root.bits))
        })?;
        let Blob::Shard(shard, _) = self.blob(objects, name, Kind::Shard).await? else { return Err(mixed(name)) };
        Ok(shard.paths.get(path).cloned())
    }

    /// A root's moderation list (what `/_v/<hash>` must not serve).
    pub(crate) async fn moderation(
        &self,
        objects: &Arc<dyn ObjectStorage>,
        name: &str,
    ) -> Result<Arc<Moderation>, RefreshError> {
        match self.blob(objects, name, Kind::Moderation).await? {
            Blob::Moderation(moderation, _) => Ok(moderation),
            _ => Err(mixed(name)),
        }
    }

    /// A blob, from the cache or read and decoded (off the async threads).
    async fn blob(&self, objects: &Arc<dyn ObjectStorage>, name: &str, kind: Kind) -> Result<Blob, ManifestError> {
        let key = sesame_manifest::blob_key(name);
        self.blobs
            .get_or_insert_async(&key, async {
                let bytes = objects.get(&key).await?.ok_or_else(|| sesame_manifest::missing(&key))?;
                let key = key.clone();
                tokio::task::spawn_blocking(move || {
                    let size = bytes.len() as u64;
                    Ok(match kind {
                        Kind::Root => Blob::Root(Arc::new(sesame_manifest::decode_blob(&key, &bytes)?), size),
                        Kind::Base => Blob::Base(Arc::new(sesame_manifest::decode_blob(&key, &bytes)?), size),
                        Kind::Shard => Blob::Shard(Arc::new(sesame_manifest::decode_blob(&key, &bytes)?), size),
                        Kind::Moderation => {
                            Blob::Moderation(Arc::new(sesame_manifest::decode_blob(&key, &bytes)?), size)
                        }
                    })
                })
                .await
                .map_err(|e| ManifestError::Corrupt(format!("decoding a manifest blob failed: {e}")))?
            })
            .await
    }
}

/// A blob named both as one kind and another: not a manifest this
/// version wrote.
fn mixed(name: &str) -> RefreshError {
    ManifestError::Corrupt(format!("manifest blob {name} is named as two kinds of blob")).into()
}

/// What a blob is read as.
#[derive(Clone, Copy)]
enum Kind {
    Root,
    Base,
    Shard,
    Moderation,
}
