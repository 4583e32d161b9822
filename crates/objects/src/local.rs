//! Objects as plain files in a local directory.

use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;

use crate::store_io::StoreIo;
use crate::{BodyStream, ObjectError, ObjectStorage, blocking};

/// Distinguishes the staging files of concurrent writes in this process.
static STAGING: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` under `key` (`ab/abcdef….br`) below `root`: to a staging
/// file beside it first, then renamed into place. With `skip_existing`, an
/// object already in place is kept: by content addressing it holds these
/// bytes (it was renamed there whole), and replacing a file costs more than
/// checking. Bulk writes of objects known to be missing skip the check.
pub(crate) fn write(root: &Path, key: &str, bytes: &[u8], skip_existing: bool) -> Result<(), ObjectError> {
    let safe = !key.is_empty()
        && key.split('/').all(|part| !part.is_empty() && !part.starts_with('.'))
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '/' || c == '.' || c == '-');
    if !safe {
        return Err(ObjectError::Io {
            doing: "writing",
            path: root.join(key),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an object key"),
        });
    }
    let path = root.join(key);
    if skip_existing && path.is_file() {
        return Ok(());
    }
    let io = |doing: &'static str, source: std::io::Error| ObjectError::Io { doing, path: path.clone(), source };
    let staging = root.join(format!("{key}.{}-{}.tmp", std::process::id(), STAGING.fetch_add(1, Ordering::Relaxed)));
    let create = || std::fs::OpenOptions::new().write(true).create_new(true).open(&staging);
    let mut file = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io("creating the folder of", e))?;
            }
            create()
        }
        other => other,
    }
    .map_err(|e| io("creating", e))?;
    if let Err(e) = file.write_all(bytes) {
        let _ = std::fs::remove_file(&staging);
        return Err(io("writing", e));
    }
    drop(file);
    std::fs::rename(&staging, &path).map_err(|e| {
        let _ = std::fs::remove_file(&staging);
        io("renaming into", e)
    })
}

/// [`ObjectStorage`] in a local directory: one plain file per object
/// (`ab/abcdef…`), written to a staging file and renamed into place (a reader
/// never sees a torn object), read through `object_store`, made durable by
/// one `syncfs` per [`ObjectStorage::sync`].
pub struct LocalDir {
    root: PathBuf,
    io: StoreIo,
}

impl fmt::Debug for LocalDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalDir").field("root", &self.root).finish()
    }
}

impl LocalDir {
    /// A store in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<LocalDir, ObjectError> {
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
        Ok(LocalDir { root: dir.to_path_buf(), io: StoreIo(Arc::new(fs)) })
    }
}

#[async_trait]
impl ObjectStorage for LocalDir {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        let (root, key) = (self.root.clone(), key.to_string());
        blocking("writing", move || write(&root, &key, &bytes, true)).await
    }

    async fn replace(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        // Renamed over the old file whole, then the file system synced (the
        // rename included), so the new bytes survive a crash.
        let (root, key) = (self.root.clone(), key.to_string());
        blocking("replacing", move || write(&root, &key, &bytes, false)).await?;
        self.sync().await
    }

    async fn put_many(&self, objects: Vec<(String, Bytes)>) -> Result<(), ObjectError> {
        // Plain files written from a thread pool (renaming over an existing
        // object is harmless: by content addressing it holds the same bytes).
        // Durable only after `sync`, like every put.
        let root = self.root.clone();
        blocking("writing", move || {
            use rayon::prelude::*;
            objects.par_iter().try_for_each(|(key, bytes)| write(&root, key, bytes, false))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectError> {
        self.io.get(key).await
    }

    async fn open(&self, key: &str) -> Result<Option<(u64, BodyStream)>, ObjectError> {
        self.io.open(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>, ObjectError> {
        self.io.get_range(key, range).await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.io.delete(key).await
    }

    async fn sync(&self) -> Result<(), ObjectError> {
        // One syncfs flushes every file and directory entry written on this
        // file system, which is far cheaper than an fsync per object.
        let root = self.root.clone();
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

    fn list(&self) -> BoxStream<'_, Result<(String, i64), ObjectError>> {
        self.io.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_keys_that_could_leave_the_store() {
        let dir = tempfile::tempdir().unwrap();
        for key in ["../x", "ab/../../x", "/etc/passwd", "ab/.hidden", "", "ab//c", "a b"] {
            assert!(write(dir.path(), key, b"x", false).is_err(), "{key:?}");
        }
        write(dir.path(), "ab/abc.br", b"x", false).unwrap();
        write(dir.path(), "ab/abc.br", b"y", true).unwrap();
        assert_eq!(std::fs::read(dir.path().join("ab/abc.br")).unwrap(), b"x", "kept");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("ab")).unwrap().collect();
        assert_eq!(left.len(), 1, "no staging file left behind");
    }
}
