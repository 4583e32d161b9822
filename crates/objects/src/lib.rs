//! Object storage: page bodies stored by content hash.
//!
//! [`ObjectStorage`] is the seam, with one backend per kind of storage:
//! [`Lmdb`] (the embedded default: one LMDB file), [`LocalDir`] (a directory
//! of plain files, what projects made before the embedded store used),
//! [`S3Objects`] (any S3-compatible bucket) and [`MemoryObjects`] (unit
//! tests). [`open`] picks
//! one from a storage URL. Every backend runs the same conformance suite
//! (`tests/conformance.rs`). Objects are immutable and content-addressed: a
//! key is the blake3 hash of the identity bytes (plus `.gz`/`.br` for
//! precompressed variants), so writing an object twice is harmless and a
//! reader holding an old key never sees new bytes. The one exception is
//! [`ObjectStorage::replace`], for the few keys that name something current
//! (the edge manifest's root).
//!
//! Durability contract: after [`ObjectStorage::sync`] returns, every object
//! put before it survives a crash. The engine commits a pointer only after
//! that, so a committed pointer never refers to a torn or missing object.

mod encode;
mod lmdb;
mod local;
mod memory;
mod s3;
mod store_io;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

pub use encode::{Encoded, Encoding, compress, compressible, encode, hash_hex};
pub use lmdb::Lmdb;
pub use local::LocalDir;
pub use memory::MemoryObjects;
pub use s3::S3Objects;

/// Object storage failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The storage URL is not understood.
    #[error("unsupported storage URL {0:?} (expected lmdb://PATH, file://PATH or s3://BUCKET[/PREFIX]?endpoint=…)")]
    UnsupportedUrl(String),
    /// The storage URL is malformed.
    #[error("storage URL {url:?}: {message}")]
    BadUrl {
        /// The URL (credentials never appear in it).
        url: String,
        /// What is wrong.
        message: String,
    },
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
    /// Stores bytes under `key`, replacing what is there, durably when it
    /// returns; a reader sees the old bytes or the new ones, never a mix.
    /// For the few mutable keys (the edge manifest's root), not for objects.
    async fn replace(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError>;
    /// [`Self::replace`]s these keys in this order (in one durable write
    /// where the storage can).
    async fn replace_many(&self, items: Vec<(String, Bytes)>) -> Result<(), ObjectError> {
        for (key, bytes) in items {
            self.replace(&key, bytes).await?;
        }
        Ok(())
    }
    /// Stores many objects, concurrently.
    async fn put_many(&self, objects: Vec<(String, Bytes)>) -> Result<(), ObjectError> {
        put_concurrently(self, objects).await
    }
    /// Reads an object; `None` if absent.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectError>;
    /// Opens an object for streaming: its size and its bytes in chunks.
    async fn open(&self, key: &str) -> Result<Option<(u64, BodyStream)>, ObjectError>;
    /// Reads a byte range of an object.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>, ObjectError>;
    /// Deletes an object (absent is fine).
    async fn delete(&self, key: &str) -> Result<(), ObjectError>;
    /// Deletes many objects (absent ones are fine).
    async fn delete_many(&self, keys: Vec<String>) -> Result<(), ObjectError> {
        for key in keys {
            self.delete(&key).await?;
        }
        Ok(())
    }
    /// Durability barrier for every object put so far.
    async fn sync(&self) -> Result<(), ObjectError>;
    /// Every stored key with when it was last written (Unix seconds), for
    /// sweeping what no record refers to. Includes staging leftovers of a
    /// crashed local write.
    fn list(&self) -> BoxStream<'_, Result<(String, i64), ObjectError>>;
}

/// The content hash an object key stores (identity or variant); `None` for
/// anything else found in storage (a staging file, a stranger's file).
pub fn hash_of_key(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    let hash = name.strip_suffix(".gz").or_else(|| name.strip_suffix(".br")).unwrap_or(name);
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hash)
}

/// Puts objects one by one, 32 at a time.
async fn put_concurrently<S: ObjectStorage + ?Sized>(
    store: &S,
    objects: Vec<(String, Bytes)>,
) -> Result<(), ObjectError> {
    let results: Vec<Result<(), ObjectError>> = futures::stream::iter(objects)
        .map(|(key, bytes)| async move { store.put(&key, bytes).await })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

/// The bytes of an object, in chunks.
pub type BodyStream = BoxStream<'static, Result<Bytes, ObjectError>>;

/// Opens storage from a URL: `lmdb://PATH[?map_gib=N]` (an LMDB store of at
/// most N GiB, default 256), `file://PATH` (a directory of files; both
/// created if missing) or
/// `s3://BUCKET[/PREFIX]?endpoint=URL&region=R&path_style=true` for any
/// S3-compatible store. S3 credentials come from the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...), never from the URL.
pub fn open(url: &str) -> Result<Arc<dyn ObjectStorage>, ObjectError> {
    if let Some(rest) = url.strip_prefix("lmdb://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bad = |message: String| ObjectError::BadUrl { url: url.to_string(), message };
        let mut map_gib = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("map_gib", n)) => {
                    let n: usize = n.parse().ok().filter(|n| (1..=1 << 20).contains(n)).ok_or_else(|| {
                        bad(format!("map_gib must be a whole number of GiB from 1 to 1048576, not {n:?}"))
                    })?;
                    map_gib = Some(n);
                }
                _ => return Err(bad(format!("unknown parameter {pair:?} (expected map_gib=N)"))),
            }
        }
        return Ok(Arc::new(Lmdb::open(Path::new(path), map_gib)?));
    }
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(Arc::new(LocalDir::open(Path::new(path))?));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        return Ok(Arc::new(S3Objects::open(url, rest)?));
    }
    Err(ObjectError::UnsupportedUrl(url.to_string()))
}

/// Runs file system work on the blocking pool.
async fn blocking<F>(doing: &'static str, work: F) -> Result<(), ObjectError>
where
    F: FnOnce() -> Result<(), ObjectError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| ObjectError::Io {
        doing,
        path: PathBuf::new(),
        source: std::io::Error::other(e),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_urls_are_checked() {
        assert!(open("s3://?endpoint=x").is_err());
        assert!(open("s3://b?color=red").is_err());
        // The HTTP client's settings pass through, checked by object_store.
        assert!(open("s3://b?region=auto&pool_max_idle_per_host=0&timeout=30s").is_ok());
        assert!(open("s3://b?timeout=soon").is_err());
        assert!(open("ftp://x").is_err());
        assert!(open("lmdb:///tmp/x?map_gib=0").is_err());
        assert!(open("lmdb:///tmp/x?colour=red").is_err());
    }

    #[test]
    fn keys_name_their_hash() {
        let key = object_key(&hash_hex(b"hello"), Encoding::Identity);
        assert_eq!(hash_of_key(&key), Some(hash_hex(b"hello").as_str()));
        assert_eq!(hash_of_key(&format!("{key}.br")), Some(hash_hex(b"hello").as_str()));
        assert_eq!(hash_of_key(&format!("{key}.123-4.tmp")), None);
    }
}
