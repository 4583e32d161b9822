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
mod local;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use encode::{Encoded, Encoding, compress, compressible, encode, hash_hex};

/// Object storage failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The storage URL is not understood.
    #[error("unsupported storage URL {0:?} (expected file://PATH or s3://BUCKET[/PREFIX]?endpoint=…)")]
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

/// [`ObjectStorage`] over an `object_store` backend.
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// Root directory of a local store, synced with one `syncfs` per barrier.
    local_root: Option<PathBuf>,
    /// Create-only puts (`If-None-Match: *`) are not supported by this server;
    /// plain puts are used instead, harmless for content-addressed keys.
    overwrite: AtomicBool,
}

impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Objects").field("store", &self.store.to_string()).finish()
    }
}

impl Objects {
    /// Opens storage from a URL: `file://PATH` (created if missing) or
    /// `s3://BUCKET[/PREFIX]?endpoint=URL&region=R&path_style=true` for any
    /// S3-compatible store. S3 credentials come from the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...), never from the URL.
    pub fn open(url: &str) -> Result<Objects, ObjectError> {
        if let Some(path) = url.strip_prefix("file://") {
            return Objects::local(Path::new(path));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            return Objects::s3(url, rest);
        }
        Err(ObjectError::UnsupportedUrl(url.to_string()))
    }

    fn s3(url: &str, rest: &str) -> Result<Objects, ObjectError> {
        let bad = |message: &str| ObjectError::BadUrl { url: url.to_string(), message: message.to_string() };
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        if bucket.is_empty() {
            return Err(bad("names no bucket"));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| bad("parameters are key=value"))?;
            builder = match k {
                "endpoint" => builder.with_allow_http(v.starts_with("http://")).with_endpoint(v),
                "region" => builder.with_region(v),
                "path_style" => builder.with_virtual_hosted_style_request(v != "true"),
                // Unsigned requests, for unauthenticated endpoints (a local
                // test server, a public bucket).
                "skip_signature" => builder.with_skip_signature(v == "true"),
                _ => {
                    return Err(bad(&format!(
                        "unknown parameter {k:?} (known: endpoint, region, path_style, skip_signature)"
                    )));
                }
            };
        }
        let s3 = builder.build().map_err(|source| ObjectError::Backend {
            doing: "configuring",
            key: url.to_string(),
            source,
        })?;
        let store: Arc<dyn ObjectStore> = match prefix.trim_matches('/') {
            "" => Arc::new(s3),
            p => Arc::new(PrefixStore::new(s3, p)),
        };
        Ok(Objects { store, local_root: None, overwrite: AtomicBool::new(false) })
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
        Ok(Objects { store: Arc::new(fs), local_root: Some(dir.to_path_buf()), overwrite: AtomicBool::new(false) })
    }

    fn path(key: &str) -> StorePath {
        StorePath::from(key)
    }
}

#[async_trait]
impl ObjectStorage for Objects {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        if let Some(root) = self.local_root.clone() {
            let key = key.to_string();
            return blocking("writing", move || local::write(&root, &key, &bytes, true)).await;
        }
        let err = |source| ObjectError::Backend { doing: "writing", key: key.into(), source };
        if !self.overwrite.load(Ordering::Relaxed) {
            let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            match self.store.put_opts(&Self::path(key), PutPayload::from_bytes(bytes.clone()), opts).await {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                    return Ok(());
                }
                Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
                    self.overwrite.store(true, Ordering::Relaxed);
                }
                Err(source) => return Err(err(source)),
            }
        }
        self.store.put(&Self::path(key), PutPayload::from_bytes(bytes)).await.map(|_| ()).map_err(err)
    }

    async fn open(&self, key: &str) -> Result<Option<(u64, BodyStream)>, ObjectError> {
        match self.store.get(&Self::path(key)).await {
            Ok(result) => {
                let size = result.meta.size;
                let owned = key.to_string();
                let stream = result
                    .into_stream()
                    .map_err(move |source| ObjectError::Backend { doing: "reading", key: owned.clone(), source })
                    .boxed();
                Ok(Some((size, stream)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(ObjectError::Backend { doing: "reading", key: key.into(), source }),
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>, ObjectError> {
        match self.store.get_range(&Self::path(key), range).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(ObjectError::Backend { doing: "reading", key: key.into(), source }),
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

    async fn put_many(&self, objects: Vec<(String, Bytes)>) -> Result<(), ObjectError> {
        let Some(root) = self.local_root.clone() else { return put_concurrently(self, objects).await };
        // Plain files written from a thread pool: a staging file renamed over
        // the key, so a reader never sees a torn object (renaming over an
        // existing object is harmless: by content addressing it holds the same
        // bytes). Durable only after `sync`, like every put.
        blocking("writing", move || {
            use rayon::prelude::*;
            objects.par_iter().try_for_each(|(key, bytes)| local::write(&root, key, bytes, false))
        })
        .await
    }

    fn list(&self) -> BoxStream<'_, Result<(String, i64), ObjectError>> {
        self.store
            .list(None)
            .map(|item| match item {
                Ok(meta) => Ok((meta.location.to_string(), meta.last_modified.timestamp())),
                Err(source) => Err(ObjectError::Backend { doing: "listing", key: String::new(), source }),
            })
            .boxed()
    }

    async fn sync(&self) -> Result<(), ObjectError> {
        let Some(root) = self.local_root.clone() else { return Ok(()) };
        // One syncfs flushes every file and directory entry written on this file
        // system, which is far cheaper than an fsync per object.
        blocking("syncing", move || {
            let dir = std::fs::File::open(&root).map_err(|source| ObjectError::Io {
                doing: "opening",
                path: root.clone(),
                source,
            })?;
            rustix::fs::syncfs(&dir).map_err(|e| ObjectError::Io { doing: "syncing", path: root, source: e.into() })
        })
        .await
    }
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
        assert_eq!(objects.get_range(&key, 1..4).await.unwrap().as_deref(), Some(&b"ell"[..]));
        let (size, stream) = objects.open(&key).await.unwrap().unwrap();
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!((size, chunks.concat()), (5, b"hello".to_vec()));
        assert!(Objects::open("s3://?endpoint=x").is_err());
        assert!(Objects::open("s3://b?color=red").is_err());
        assert!(Objects::open("ftp://x").is_err());
        assert!(dir.path().join("objects").join(&key).is_file());
        let listed: Vec<(String, i64)> = objects.list().try_collect().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, key);
        assert!(
            (listed[0].1
                - std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64)
                .abs()
                < 60
        );
        assert_eq!(hash_of_key(&key), Some(hash_hex(b"hello").as_str()));
        assert_eq!(hash_of_key(&format!("{key}.br")), Some(hash_hex(b"hello").as_str()));
        assert_eq!(hash_of_key(&format!("{key}.123-4.tmp")), None);
        objects.delete(&key).await.unwrap();
        objects.delete(&key).await.unwrap();
        assert_eq!(objects.get(&key).await.unwrap(), None);
    }
}
