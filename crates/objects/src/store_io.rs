//! Reads, deletes and listings through an `object_store` backend, shared by
//! the local directory and the S3-compatible store.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::{BodyStream, ObjectError};

/// An `object_store` backend, answering as [`crate::ObjectStorage`] does.
#[derive(Clone)]
pub(crate) struct StoreIo(pub Arc<dyn ObjectStore>);

fn path(key: &str) -> StorePath {
    StorePath::from(key)
}

impl StoreIo {
    pub async fn open(&self, key: &str) -> Result<Option<(u64, BodyStream)>, ObjectError> {
        match self.0.get(&path(key)).await {
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

    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>, ObjectError> {
        match self.0.get_range(&path(key), range).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(ObjectError::Backend { doing: "reading", key: key.into(), source }),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectError> {
        let err = |source| ObjectError::Backend { doing: "reading", key: key.into(), source };
        match self.0.get(&path(key)).await {
            Ok(result) => Ok(Some(result.bytes().await.map_err(err)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(err(source)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match self.0.delete(&path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(ObjectError::Backend { doing: "deleting", key: key.into(), source }),
        }
    }

    pub fn list(&self) -> BoxStream<'_, Result<(String, i64), ObjectError>> {
        self.0
            .list(None)
            .map(|item| match item {
                Ok(meta) => Ok((meta.location.to_string(), meta.last_modified.timestamp())),
                Err(source) => Err(ObjectError::Backend { doing: "listing", key: String::new(), source }),
            })
            .boxed()
    }
}
