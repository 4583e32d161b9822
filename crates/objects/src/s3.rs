//! Objects in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, …)
//! through `object_store`: create-only puts where the server supports them.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::ClientConfigKey;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::store_io::StoreIo;
use crate::{BodyStream, ObjectError, ObjectStorage};

/// [`ObjectStorage`] in an S3-compatible bucket.
pub struct S3Objects {
    io: StoreIo,
    /// Create-only puts (`If-None-Match: *`) are not supported by this server;
    /// plain puts are used instead, harmless for content-addressed keys.
    overwrite: AtomicBool,
}

impl fmt::Debug for S3Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Objects").field("store", &self.io.0.to_string()).finish()
    }
}

impl S3Objects {
    /// Opens `s3://BUCKET[/PREFIX]?endpoint=URL&region=R&path_style=true`
    /// (`rest` is what follows `s3://`). Credentials come from the
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …), never
    /// from the URL.
    pub(crate) fn open(url: &str, rest: &str) -> Result<S3Objects, ObjectError> {
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
                // The HTTP client's settings (timeouts, connection pool), by
                // object_store's names: `timeout=30s`, `pool_max_idle_per_host=0`.
                _ => match k.parse::<ClientConfigKey>() {
                    Ok(key) => builder.with_config(AmazonS3ConfigKey::Client(key), v),
                    Err(_) => {
                        return Err(bad(&format!(
                            "unknown parameter {k:?} (known: endpoint, region, path_style, skip_signature, \
                             and the HTTP client's settings such as timeout, connect_timeout, pool_max_idle_per_host)"
                        )));
                    }
                },
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
        Ok(S3Objects { io: StoreIo(store), overwrite: AtomicBool::new(false) })
    }
}

#[async_trait]
impl ObjectStorage for S3Objects {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        let err = |source| ObjectError::Backend { doing: "writing", key: key.into(), source };
        let path = StorePath::from(key);
        if !self.overwrite.load(Ordering::Relaxed) {
            let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            match self.io.0.put_opts(&path, PutPayload::from_bytes(bytes.clone()), opts).await {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                    return Ok(());
                }
                Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
                    self.overwrite.store(true, Ordering::Relaxed);
                }
                Err(source) => return Err(err(source)),
            }
        }
        self.io.0.put(&path, PutPayload::from_bytes(bytes)).await.map(|_| ()).map_err(err)
    }

    async fn replace(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        // An S3 PUT is atomic and durable once acknowledged.
        let err = |source| ObjectError::Backend { doing: "replacing", key: key.into(), source };
        self.io.0.put(&StorePath::from(key), PutPayload::from_bytes(bytes)).await.map(|_| ()).map_err(err)
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

    /// A put is durable when the server acknowledges it.
    async fn sync(&self) -> Result<(), ObjectError> {
        Ok(())
    }

    fn list(&self) -> BoxStream<'_, Result<(String, i64), ObjectError>> {
        self.io.list()
    }
}
