//! Objects in memory: for unit tests of code above the storage seam (it
//! runs the same conformance suite as the real backends).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::{BodyStream, ObjectError, ObjectStorage};

/// [`ObjectStorage`] in a map; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryObjects {
    objects: Mutex<BTreeMap<String, (Bytes, i64)>>,
}

impl MemoryObjects {
    fn read(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, i64)>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[async_trait]
impl ObjectStorage for MemoryObjects {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        self.read().entry(key.to_string()).or_insert((bytes, now()));
        Ok(())
    }

    async fn replace(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        self.read().insert(key.to_string(), (bytes, now()));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectError> {
        Ok(self.read().get(key).map(|(b, _)| b.clone()))
    }

    async fn open(&self, key: &str) -> Result<Option<(u64, BodyStream)>, ObjectError> {
        let bytes = self.get(key).await?;
        Ok(bytes.map(|b| (b.len() as u64, futures::stream::once(async move { Ok(b) }).boxed())))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>, ObjectError> {
        let Some(bytes) = self.get(key).await? else { return Ok(None) };
        let end = usize::try_from(range.end).unwrap_or(usize::MAX).min(bytes.len());
        let start = usize::try_from(range.start).unwrap_or(usize::MAX).min(end);
        Ok(Some(bytes.slice(start..end)))
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.read().remove(key);
        Ok(())
    }

    async fn sync(&self) -> Result<(), ObjectError> {
        Ok(())
    }

    fn list(&self) -> BoxStream<'_, Result<(String, i64), ObjectError>> {
        let items: Vec<_> = self.read().iter().map(|(k, (_, t))| Ok((k.clone(), *t))).collect();
        futures::stream::iter(items).boxed()
    }
}
