//! Objects in an LMDB environment (through `heed`): the embedded default.
//!
//! Chosen over one file per object, redb, fjall and SQLite by the measured
//! comparison in BENCHMARKS.md ("Which embedded store holds the objects"):
//! it writes a full build's objects as fast as the file system allows, reads
//! by hash several times faster than the other candidates, and (unlike redb
//! and fjall) lets several processes use one store at once, which sesame
//! needs: `serve`, `router`, `build` and `gc` may run side by side.
//!
//! Every write transaction is durable when it commits (LMDB's default
//! synchronous mode; its no-sync modes may corrupt the file on power loss), so
//! [`ObjectStorage::sync`] has nothing left to do. A value is the time it was
//! written (8 bytes, little-endian Unix seconds, for the sweep's grace period)
//! followed by the object's bytes. Deleted objects free their pages for
//! later writes; the file itself does not shrink.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use heed::types::{Bytes as Raw, Str};
use heed::{Database, Env, EnvOpenOptions, MdbError, PutFlags, WithoutTls};

use crate::{BodyStream, ObjectError, ObjectStorage, blocking};

/// Address space reserved for one store: its size limit. The file grows
/// only as objects are written.
const DEFAULT_MAP_GIB: usize = 256;

/// One environment per path per process (LMDB forbids opening one twice in
/// a process); closed when the last handle goes.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<Shared>>>> = LazyLock::new(Default::default);

struct Shared {
    env: Env<WithoutTls>,
    objects: Database<Str, Raw>,
}

/// [`ObjectStorage`] in an LMDB environment: a directory holding `data.mdb`
/// and `lock.mdb`.
#[derive(Clone)]
pub struct Lmdb {
    dir: PathBuf,
    shared: Arc<Shared>,
}

impl fmt::Debug for Lmdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lmdb").field("dir", &self.dir).finish()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Lmdb {
    /// Opens (creating if missing) the store in `dir`, which may hold up to
    /// `map_gib` GiB (default 256).
    pub fn open(dir: &Path, map_gib: Option<usize>) -> Result<Lmdb, ObjectError> {
        let io = |doing, source| ObjectError::Io { doing, path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
        let dir = std::fs::canonicalize(dir).map_err(|e| io("opening", e))?;
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = open.get(&dir).and_then(Weak::upgrade) {
            return Ok(Lmdb { dir, shared });
        }
        let failed = |e: heed::Error| io("opening", std::io::Error::other(e));
        let map_size = map_gib.unwrap_or(DEFAULT_MAP_GIB).saturating_mul(1 << 30);
        // SAFETY: heed's open is unsafe because the file must not be changed
        // other than through LMDB, and one process must not open it twice:
        // `OPEN` keeps one environment per path here, and nothing else writes
        // into a store's directory. (The one unsafe block of sesame.)
        #[allow(unsafe_code)]
        let env = unsafe {
            EnvOpenOptions::new().read_txn_without_tls().map_size(map_size).max_dbs(1).max_readers(1024).open(&dir)
        }
        .map_err(failed)?;
        // Reader slots of processes killed mid-read would otherwise pin old
        // pages until the next writer noticed.
        env.clear_stale_readers().map_err(failed)?;
        let mut txn = env.write_txn().map_err(failed)?;
        let objects = env.create_database(&mut txn, Some("objects")).map_err(failed)?;
        txn.commit().map_err(failed)?;
        let shared = Arc::new(Shared { env, objects });
        open.retain(|_, weak| weak.strong_count() > 0);
        open.insert(dir.clone(), Arc::downgrade(&shared));
        Ok(Lmdb { dir, shared })
    }

    fn failed(&self, doing: &'static str, key: &str, e: heed::Error) -> ObjectError {
        ObjectError::Io { doing, path: self.dir.join(key), source: std::io::Error::other(e) }
    }

    /// Reads part of an object (`None` if absent), copying only that part out
    /// of the map. A read is a memory access: it runs on the caller's thread.
    fn read(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Bytes>, ObjectError> {
        let txn = self.shared.env.read_txn().map_err(|e| self.failed("reading", key, e))?;
        let Some(value) = self.shared.objects.get(&txn, key).map_err(|e| self.failed("reading", key, e))? else {
            return Ok(None);
        };
        let body = value.get(8..).unwrap_or_default();
        let (start, end) = match range {
            None => (0, body.len()),
            Some(r) => {
                let end = usize::try_from(r.end).unwrap_or(usize::MAX).min(body.len());
                (usize::try_from(r.start).unwrap_or(usize::MAX).min(end), end)
            }
        };
        Ok(Some(Bytes::copy_from_slice(&body[start..end])))
    }

    /// Runs one write transaction on the blocking pool; durable on return.
    async fn write<F>(&self, doing: &'static str, work: F) -> Result<(), ObjectError>
    where
        F: FnOnce(&Shared, &mut heed::RwTxn<'_>) -> Result<(), heed::Error> + Send + 'static,
    {
        let this = self.clone();
        blocking(doing, move || {
            let shared = &this.shared;
            let mut txn = shared.env.write_txn().map_err(|e| this.failed(doing, "", e))?;
            work(shared, &mut txn).map_err(|e| this.failed(doing, "", e))?;
            txn.commit().map_err(|e| this.failed(doing, "", e))
        })
        .await
    }
}

/// Puts each object that is not there yet (by content addressing, one that
/// is holds the same bytes).
fn put_all(shared: &Shared, txn: &mut heed::RwTxn<'_>, objects: &[(String, Bytes)]) -> Result<(), heed::Error> {
    let written = now().to_le_bytes();
    let mut value = Vec::new();
    for (key, bytes) in objects {
        value.clear();
        value.extend_from_slice(&written);
        value.extend_from_slice(bytes);
        // One descent of the tree: LMDB refuses the key if it is there.
        match shared.objects.put_with_flags(txn, PutFlags::NO_OVERWRITE, key, &value) {
            Ok(()) | Err(heed::Error::Mdb(MdbError::KeyExist)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStorage for Lmdb {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        self.put_many(vec![(key.to_string(), bytes)]).await
    }

    async fn put_many(&self, objects: Vec<(String, Bytes)>) -> Result<(), ObjectError> {
        if objects.is_empty() {
            return Ok(());
        }
        self.write("writing", move |shared, txn| put_all(shared, txn, &objects)).await
    }

    async fn replace(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        self.replace_many(vec![(key.to_string(), bytes)]).await
    }

    async fn replace_many(&self, items: Vec<(String, Bytes)>) -> Result<(), ObjectError> {
        self.write("replacing", move |shared, txn| {
            for (key, bytes) in &items {
                let mut value = now().to_le_bytes().to_vec();
                value.extend_from_slice(bytes);
                shared.objects.put(txn, key, &value)?;
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectError> {
        self.read(key, None)
    }

    async fn open(&self, key: &str) -> Result<Option<(u64, BodyStream)>, ObjectError> {
        let bytes = self.read(key, None)?;
        Ok(bytes.map(|b| (b.len() as u64, futures::stream::once(async move { Ok(b) }).boxed())))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>, ObjectError> {
        self.read(key, Some(range))
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.delete_many(vec![key.to_string()]).await
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<(), ObjectError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write("deleting", move |shared, txn| {
            for key in &keys {
                shared.objects.delete(txn, key)?;
            }
            Ok(())
        })
        .await
    }

    async fn sync(&self) -> Result<(), ObjectError> {
        // Every write transaction was durable when it returned.
        Ok(())
    }

    fn list(&self) -> BoxStream<'_, Result<(String, i64), ObjectError>> {
        let this = self.clone();
        futures::stream::once(async move {
            let listed = tokio::task::spawn_blocking(move || {
                let txn = this.shared.env.read_txn().map_err(|e| this.failed("listing", "", e))?;
                let mut out = Vec::new();
                for item in this.shared.objects.iter(&txn).map_err(|e| this.failed("listing", "", e))? {
                    let (key, value) = item.map_err(|e| this.failed("listing", "", e))?;
                    let written = value.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
                    out.push(Ok((key.to_string(), i64::try_from(written).unwrap_or(i64::MAX))));
                }
                Ok::<_, ObjectError>(out)
            })
            .await;
            match listed {
                Ok(Ok(items)) => futures::stream::iter(items).boxed(),
                Ok(Err(e)) => futures::stream::iter([Err(e)]).boxed(),
                Err(e) => futures::stream::iter([Err(ObjectError::Io {
                    doing: "listing",
                    path: PathBuf::new(),
                    source: std::io::Error::other(e),
                })])
                .boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}
