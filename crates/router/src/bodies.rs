//! Hot object bodies kept in memory, so that popular pages are served
//! without a storage round trip (a file open on local disk, an HTTP request
//! on S3). Keys are content hashes, so an entry can never go stale.

use bytes::Bytes;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// Largest body kept: big objects are streamed, never cached.
const MAX_BODY: u64 = 1024 * 1024;
/// Typical compressed page, for sizing the cache's index.
const TYPICAL_BODY: u64 = 4 * 1024;

#[derive(Clone)]
struct ByLength;

impl Weighter<String, Bytes> for ByLength {
    fn weight(&self, key: &String, body: &Bytes) -> u64 {
        (key.len() + body.len()) as u64
    }
}

/// Object key → body, bounded in bytes.
pub(crate) struct Bodies {
    cache: Cache<String, Bytes, ByLength>,
    max_body: u64,
}

impl Bodies {
    /// A cache of `capacity` bytes; `None` for 0.
    pub(crate) fn new(capacity: u64) -> Option<Bodies> {
        (capacity > 0).then(|| Bodies {
            cache: Cache::with_weighter((capacity / TYPICAL_BODY).max(16) as usize, capacity, ByLength),
            max_body: MAX_BODY.min(capacity / 8),
        })
    }

    /// Whether a body of `size` bytes would be kept.
    pub(crate) fn admits(&self, size: u64) -> bool {
        size <= self.max_body
    }

    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        self.cache.get(key)
    }

    pub(crate) fn insert(&self, key: &str, body: Bytes) {
        if self.admits(body.len() as u64) {
            self.cache.insert(key.to_string(), body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_small_bodies_within_its_budget() {
        let bodies = Bodies::new(64 * 1024).expect("a cache");
        assert!(!bodies.admits(64 * 1024), "an object as large as the cache is streamed");
        for i in 0..100 {
            bodies.insert(&format!("k{i}"), Bytes::from(vec![0u8; 4096]));
        }
        let kept = (0..100).filter(|i| bodies.get(&format!("k{i}")).is_some()).count();
        assert!(kept > 0 && kept <= 16, "{kept} bodies of 4 KB in 64 KB");
        assert!(Bodies::new(0).is_none());
    }
}
