//! Object storage: page bodies stored by content hash.
//!
//! [`ObjectStorage`] is the seam; [`Objects`] implements it over the
//! `object_store` crate (a local directory now, S3-compatible stores later).
//! Objects are immutable and content-addressed: a key is the blake3 hash of the
//! identity bytes (plus `.gz`/`.br` for precompressed variants), so writing an
//! object twice is harmless and a reader holding an old key never sees new bytes.
//!
//! Durability contract: after [`ObjectStorage::sync`] returns, every object
//! put before it survives a crash. The engine commits a pointer only after
//! that, so a committed pointer never refers to a torn or missing object.

mod encode;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use encode::{Encoded, Encoding, encode, hash_hex};

/// Object storage failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The storage URL is not understood.
    #[error("unsupported storage URL {0:?} (expected file://PATH)")]
    UnsupportedUrl(String),
    /// The backend failed.
    #[error("object storage failed while {doing} {key}: {source}")]
    Backend {
        /// What was being done.
        doing: &'static str,
        /// The object key.
        key: String,
        /// The backend's error.
        source: object_store::Error,
    },
    /// A local file system operation failed.
    #[error("{doing} {}: {source}", path.display())]
    Io {
        /// What was being done.
        doing: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The key of an object (or of one of its compressed variants).
pub fn object_key(hash: &str, encoding: Encoding) -> String {
    let prefix = hash.get(..2).unwrap_or("00");
    format!("{prefix}/{hash}{}", encoding.suffix())
}

/// Where page bodies live.
#[async_trait]
pub trait ObjectStorage: Send + Sync + fmt::Debug {
    /// Stores bytes under `key` unless an object is already there (by content
    /// addressing it holds the same bytes).
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError>;
    /// Reads an object; `None` if absent.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectError>;
    /// Deletes an object (absent is fine).
    async fn delete(&self, key: &str) -> Result<(), ObjectError>;
    /// Durability barrier for every object put so far.
    async fn sync(&self) -> Result<(), ObjectError>;
}

/// [`ObjectStorage`] over an `object_store` backend.
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// Root directory of a local store, synced with one `syncfs` per barrier.
    local_root: Option<PathBuf>,
}

impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Objects").field("store", &self.store.to_string()).finish()
    }
}

impl Objects {
    /// Opens storage from a URL: `file://PATH` (created if missing).
    pub fn open(url: &str) -> Result<Objects, ObjectError> {
        match url.strip_prefix("file://") {
            Some(path) => Objects::local(Path::new(path)),
            None => Err(ObjectError::UnsupportedUrl(url.to_string())),
        }
    }

    /// A store in a local directory (created if missing).
    pub fn local(dir: &Path) -> Result<Objects, ObjectError> {
        std::fs::create_dir_all(dir).map_err(|source| ObjectError::Io {
            doing: "creating",
            path: dir.into(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(|source| ObjectError::Backend {
            doing: "opening",
            key: dir.display().to_string(),
            source,
        })?;
        Ok(Objects { store: Arc::new(fs), local_root: Some(dir.to_path_buf()) })
    }

    fn path(key: &str) -> StorePath {
        StorePath::from(key)
    }
}

#[async_trait]
impl ObjectStorage for Objects {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.store.put_opts(&Self::path(key), PutPayload::from_bytes(bytes), opts).await {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(source) => Err(ObjectError::Backend { doing: "writing", key: key.into(), source }),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectError> {
        let err = |source| ObjectError::Backend { doing: "reading", key: key.into(), source };
        match self.store.get(&Self::path(key)).await {
            Ok(result) => Ok(Some(result.bytes().await.map_err(err)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(err(source)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match self.store.delete(&Self::path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(ObjectError::Backend { doing: "deleting", key: key.into(), source }),
        }
    }

    async fn sync(&self) -> Result<(), ObjectError> {
        let Some(root) = self.local_root.clone() else { return Ok(()) };
        // One syncfs flushes every file and directory entry written on this file
        // system, which is far cheaper than an fsync per object.
        tokio::task::spawn_blocking(move || {
            let dir = std::fs::File::open(&root).map_err(|source| ObjectError::Io {
                doing: "opening",
                path: root.clone(),
                source,
            })?;
            rustix::fs::syncfs(&dir).map_err(|e| ObjectError::Io { doing: "syncing", path: root, source: e.into() })
        })
        .await
        .map_err(|e| ObjectError::Io {
            doing: "syncing",
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::local(&dir.path().join("objects")).unwrap();
        let key = object_key(&hash_hex(b"hello"), Encoding::Identity);
        assert_eq!(objects.get(&key).await.unwrap(), None);
        objects.put(&key, Bytes::from_static(b"hello")).await.unwrap();
        objects.put(&key, Bytes::from_static(b"hello")).await.unwrap(); // idempotent
        objects.sync().await.unwrap();
        assert_eq!(objects.get(&key).await.unwrap().as_deref(), Some(&b"hello"[..]));
        assert!(dir.path().join("objects").join(&key).is_file());
        objects.delete(&key).await.unwrap();
        objects.delete(&key).await.unwrap();
        assert_eq!(objects.get(&key).await.unwrap(), None);
    }
}
