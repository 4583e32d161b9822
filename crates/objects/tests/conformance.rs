//! Behaviour every object storage backend shares: each test runs in memory,
//! in a real LMDB store, in a real local directory and in a bucket on a real
//! S3-compatible server (`s3s-fs`, which the test command installs).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use sesame_objects::{Encoding, MemoryObjects, ObjectStorage, hash_hex, object_key};

/// Keeps a backend's resources alive for the test.
#[allow(dead_code)]
enum Guard {
    Nothing,
    Dir(tempfile::TempDir),
}

fn memory() -> (Guard, Arc<dyn ObjectStorage>) {
    (Guard::Nothing, Arc::new(MemoryObjects::default()))
}

fn lmdb() -> (Guard, Arc<dyn ObjectStorage>) {
    let dir = tempfile::tempdir().unwrap();
    let store = sesame_objects::open(&format!("lmdb://{}?map_gib=1", dir.path().join("objects").display())).unwrap();
    (Guard::Dir(dir), store)
}

fn local() -> (Guard, Arc<dyn ObjectStorage>) {
    let dir = tempfile::tempdir().unwrap();
    let store = sesame_objects::open(&format!("file://{}", dir.path().join("objects").display())).unwrap();
    (Guard::Dir(dir), store)
}

fn s3() -> (Guard, Arc<dyn ObjectStorage>) {
    (Guard::Nothing, sesame_objects::open(&sesame_testkit::s3_bucket()).unwrap())
}

/// Runs a test body on every backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            $(#[tokio::test] async fn $name() { let (_g, store) = super::memory(); super::$name(store).await; })*
        }
        mod lmdb_backend {
            $(#[tokio::test] async fn $name() { let (_g, store) = super::lmdb(); super::$name(store).await; })*
        }
        mod local_backend {
            $(#[tokio::test] async fn $name() { let (_g, store) = super::local(); super::$name(store).await; })*
        }
        mod s3_backend {
            $(#[tokio::test] async fn $name() { let (_g, store) = super::s3(); super::$name(store).await; })*
        }
    };
}

on_every_backend!(
    an_object_reads_back_whole_in_ranges_and_streamed,
    puts_are_idempotent_one_by_one_and_in_batches,
    absent_objects_are_none_and_deletes_are_idempotent,
    many_deletes_at_once_leave_the_rest,
    the_listing_names_every_object_with_its_time,
    a_replaced_key_reads_its_new_bytes,
);

fn key(bytes: &[u8], encoding: Encoding) -> String {
    object_key(&hash_hex(bytes), encoding)
}

async fn an_object_reads_back_whole_in_ranges_and_streamed(store: Arc<dyn ObjectStorage>) {
    let body = Bytes::from_static(b"hello, objects");
    let k = key(&body, Encoding::Identity);
    store.put(&k, body.clone()).await.unwrap();
    store.sync().await.unwrap();
    assert_eq!(store.get(&k).await.unwrap(), Some(body.clone()));
    assert_eq!(store.get_range(&k, 1..5).await.unwrap().as_deref(), Some(&b"ello"[..]));
    assert_eq!(store.get_range(&k, 0..body.len() as u64).await.unwrap(), Some(body.clone()));
    let (size, stream) = store.open(&k).await.unwrap().unwrap();
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    assert_eq!((size, chunks.concat()), (body.len() as u64, body.to_vec()));
}

async fn puts_are_idempotent_one_by_one_and_in_batches(store: Arc<dyn ObjectStorage>) {
    let body = Bytes::from_static(b"same bytes");
    let k = key(&body, Encoding::Identity);
    store.put(&k, body.clone()).await.unwrap();
    store.put(&k, body.clone()).await.unwrap();
    let many: Vec<(String, Bytes)> = (0..50)
        .map(|i| {
            let b = Bytes::from(format!("object number {i}"));
            (key(&b, if i % 2 == 0 { Encoding::Identity } else { Encoding::Brotli }), b)
        })
        .collect();
    store.put_many(many.clone()).await.unwrap();
    store.put_many(many.clone()).await.unwrap();
    store.sync().await.unwrap();
    assert_eq!(store.get(&k).await.unwrap(), Some(body));
    for (k, b) in &many {
        assert_eq!(store.get(k).await.unwrap().as_ref(), Some(b), "{k}");
    }
}

async fn a_replaced_key_reads_its_new_bytes(store: Arc<dyn ObjectStorage>) {
    let k = "manifest/current";
    store.put(k, Bytes::from_static(b"first")).await.unwrap();
    store.put(k, Bytes::from_static(b"ignored: put keeps what is there")).await.unwrap();
    assert_eq!(store.get(k).await.unwrap().as_deref(), Some(&b"first"[..]));
    store.replace(k, Bytes::from_static(b"second, longer")).await.unwrap();
    assert_eq!(store.get(k).await.unwrap().as_deref(), Some(&b"second, longer"[..]));
    store.replace(k, Bytes::from_static(b"3")).await.unwrap();
    assert_eq!(store.get(k).await.unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(store.get_range(k, 0..10).await.unwrap().as_deref(), Some(&b"3"[..]));
    // Several keys at once, in one write where the storage can.
    let many =
        vec![("manifest/roots/7".to_string(), Bytes::from_static(b"seven")), (k.to_string(), Bytes::from_static(b"7"))];
    store.replace_many(many).await.unwrap();
    assert_eq!(store.get("manifest/roots/7").await.unwrap().as_deref(), Some(&b"seven"[..]));
    assert_eq!(store.get(k).await.unwrap().as_deref(), Some(&b"7"[..]));
}

async fn absent_objects_are_none_and_deletes_are_idempotent(store: Arc<dyn ObjectStorage>) {
    let body = Bytes::from_static(b"short-lived");
    let k = key(&body, Encoding::Gzip);
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert!(store.open(&k).await.unwrap().is_none());
    assert_eq!(store.get_range(&k, 0..1).await.unwrap(), None);
    store.delete(&k).await.unwrap();
    store.put(&k, body).await.unwrap();
    store.delete(&k).await.unwrap();
    store.delete(&k).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap(), None);
}

async fn many_deletes_at_once_leave_the_rest(store: Arc<dyn ObjectStorage>) {
    let all: Vec<(String, Bytes)> = (0..20)
        .map(|i| {
            let b = Bytes::from(format!("deleted in a batch {i}"));
            (key(&b, Encoding::Identity), b)
        })
        .collect();
    store.put_many(all.clone()).await.unwrap();
    store.sync().await.unwrap();
    let doomed: Vec<String> = all.iter().step_by(2).map(|(k, _)| k.clone()).collect();
    store.delete_many(doomed.clone()).await.unwrap();
    store.delete_many(doomed.clone()).await.unwrap();
    for (i, (k, b)) in all.iter().enumerate() {
        let expected = (i % 2 == 1).then(|| b.clone());
        assert_eq!(store.get(k).await.unwrap(), expected, "{k}");
    }
}

async fn the_listing_names_every_object_with_its_time(store: Arc<dyn ObjectStorage>) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let keys: Vec<String> = (0..5).map(|i| key(format!("listed {i}").as_bytes(), Encoding::Identity)).collect();
    for k in &keys {
        store.put(k, Bytes::from(k.clone())).await.unwrap();
    }
    store.sync().await.unwrap();
    let listed: BTreeMap<String, i64> = store.list().try_collect().await.unwrap();
    assert_eq!(listed.keys().cloned().collect::<Vec<_>>(), {
        let mut k = keys.clone();
        k.sort();
        k
    });
    assert!(listed.values().all(|t| (t - now).abs() < 120), "{listed:?}");
}

/// The embedded store keeps what it committed when every handle is gone and
/// it is opened again, and two handles in one process share one store.
#[tokio::test]
async fn an_lmdb_store_keeps_its_objects_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("lmdb://{}", dir.path().join("objects").display());
    let body = Bytes::from_static(b"kept");
    let k = key(&body, Encoding::Identity);
    {
        let first = sesame_objects::open(&url).unwrap();
        let second = sesame_objects::open(&url).unwrap();
        first.put(&k, body.clone()).await.unwrap();
        assert_eq!(second.get(&k).await.unwrap(), Some(body.clone()), "one store behind both handles");
    }
    let again = sesame_objects::open(&url).unwrap();
    assert_eq!(again.get(&k).await.unwrap(), Some(body));
}
