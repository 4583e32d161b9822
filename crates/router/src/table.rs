//! The path table: what the router serves for each path, kept compact.
//!
//! A site has a path per page, and the router holds them all, so an entry
//! holds only what an answer needs, in its smallest form: the object's hash
//! as 32 bytes (its hex is made on the stack when a request needs it), its
//! media type shared with every other entry of that type, no response
//! headers (hot ones are kept in a bounded cache beside the table, see
//! `respond.rs`).
//!
//! A generation's changes reach readers all at once. A small one is applied
//! in place under the write lock (microseconds); a large one (a template
//! change rewrites every page, and loading is one from nothing) goes, chunk
//! by chunk as the store reads it, into a copy made while readers go on
//! reading the current table, and the copy is swapped in under the lock: a
//! pointer store, so no request waits for a rebuild.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use axum::http::HeaderValue;
use sesame_manifest::PathEntry;
use sesame_model::Deps;

/// Changes above this many are applied to a copy swapped in whole.
const APPLY_IN_PLACE_UP_TO: usize = 4096;

/// A stored object as the router serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Object {
    hash: [u8; 32],
    /// Size of the identity bytes.
    pub size: u64,
    /// Which compressed variants exist (`sesame_store::encodings`).
    pub encodings: u8,
}

/// Lowercase hex of a hash, on the stack.
pub type Hex = arrayvec::ArrayString<64>;

impl Object {
    /// The hash, as lowercase hex.
    pub fn hash(&self) -> Hex {
        blake3::Hash::from_bytes(self.hash).to_hex()
    }
}

/// The 32 bytes of a lowercase hex hash.
pub(crate) fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    valid.then(|| blake3::Hash::from_hex(hex).ok()).flatten().map(|h| *h.as_bytes())
}

/// What a path serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// An object.
    Page {
        /// The object.
        object: Object,
        /// Its `Content-Type`, one value shared by every entry of the type.
        content_type: Arc<HeaderValue>,
    },
    /// 301 to another path.
    Redirect(Box<str>),
    /// 410 Gone.
    Gone,
}

/// What the router serves for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What the path serves.
    pub served: Served,
    /// Dependency keys (served as cache tags).
    pub deps: Deps,
    /// Last content change, Unix seconds.
    pub modified: i64,
}

/// Path → entry, and hash → object for `/_v/<hash>` URLs.
#[derive(Debug, Default, Clone)]
struct Maps {
    paths: HashMap<Box<str>, Arc<Entry>>,
    /// Objects current entries serve: how many entries, and one of them.
    hashes: HashMap<[u8; 32], (u32, Arc<Entry>)>,
}

impl Maps {
    fn set(&mut self, path: Box<str>, entry: Option<Arc<Entry>>) {
        if let Some(old) = self.paths.remove(&path)
            && let Served::Page { object, .. } = &old.served
            && let Some(slot) = self.hashes.get_mut(&object.hash)
        {
            slot.0 -= 1;
            if slot.0 == 0 {
                self.hashes.remove(&object.hash);
            }
        }
        let Some(entry) = entry else { return };
        if let Served::Page { object, .. } = &entry.served {
            // The latest entry stands for the object: it knows its latest variants.
            let slot = self.hashes.entry(object.hash).or_insert_with(|| (0, entry.clone()));
            slot.0 += 1;
            slot.1 = entry.clone();
        }
        self.paths.insert(path, entry);
    }
}

/// The maps plus the generation they reflect.
#[derive(Debug, Default)]
pub(crate) struct Table {
    maps: RwLock<Maps>,
    generation: AtomicU64,
    /// One media type value per distinct type, shared by the entries.
    content_types: std::sync::Mutex<HashSet<Arc<HeaderValue>>>,
}

impl Table {
    fn read(&self) -> RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, path: &str) -> Option<Arc<Entry>> {
        self.read().paths.get(path).cloned()
    }

    /// The object with this hash and its media type, if a current entry serves it.
    pub(crate) fn object(&self, hash: &str) -> Option<(Object, Arc<HeaderValue>)> {
        let hash = parse_hash(hash)?;
        match &self.read().hashes.get(&hash)?.1.served {
            Served::Page { object, content_type } => Some((*object, content_type.clone())),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.read().paths.len()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Applies a generation's changes; readers see all of them or none.
    /// Callers apply one generation at a time (the router's refresh lock).
    #[cfg(test)]
    pub(crate) fn apply(&self, generation: u64, changes: Vec<(String, Option<PathEntry>)>) {
        let mut update = self.update();
        update.add(changes.into_iter().map(|(path, entry)| (path.into_boxed_str(), self.entry(entry))).collect());
        update.finish(generation);
    }

    /// An update to the current table, from changes given in chunks.
    pub(crate) fn update(&self) -> Update<'_> {
        Update { table: self, pending: Vec::new(), next: None }
    }

    /// A whole new table of about `paths` paths serving `objects` objects,
    /// from entries given in chunks (as shards are read).
    pub(crate) fn replace(&self, paths: usize, objects: usize) -> Update<'_> {
        let next = Maps { paths: HashMap::with_capacity(paths), hashes: HashMap::with_capacity(objects) };
        Update { table: self, pending: Vec::new(), next: Some(next) }
    }

    /// Whether `entry` (`None`: no entry) is what `path` serves now.
    pub(crate) fn holds(&self, path: &str, entry: Option<&Arc<Entry>>) -> bool {
        self.read().paths.get(path).map(|e| &**e) == entry.map(|e| &**e)
    }

    /// The entry a manifest entry makes (`None`: no entry, also for a
    /// malformed hash or dependency list, which is logged); entries of one
    /// media type share its value.
    pub(crate) fn entry(&self, entry: Option<PathEntry>) -> Option<Arc<Entry>> {
        let parse_deps = |d: &str| {
            Deps::parse(d)
                .inspect_err(|e| tracing::error!(error = %e, "a manifest entry has malformed dependency keys"))
                .unwrap_or_default()
        };
        let (served, deps, modified) = match entry? {
            PathEntry::Page { o, t, s, e, m, d } => {
                let Some(hash) = parse_hash(&o) else {
                    tracing::error!(hash = %o, "a manifest entry names a malformed object hash; not served");
                    return None;
                };
                let object = Object { hash, size: s, encodings: e };
                (Served::Page { object, content_type: self.content_type(&t) }, parse_deps(&d), m)
            }
            PathEntry::Redirect { to, m, d } => (Served::Redirect(to.into_boxed_str()), parse_deps(&d), m),
            PathEntry::Gone { m, d } => (Served::Gone, parse_deps(&d), m),
        };
        Some(Arc::new(Entry { served, deps, modified }))
    }

    /// The one shared value of a media type.
    fn content_type(&self, t: &str) -> Arc<HeaderValue> {
        let mut types = self.content_types.lock().unwrap_or_else(|e| e.into_inner());
        let value = HeaderValue::from_str(t).unwrap_or_else(|_| HeaderValue::from_static(""));
        match types.get(&value) {
            Some(shared) => shared.clone(),
            None => {
                let shared = Arc::new(value);
                types.insert(shared.clone());
                shared
            }
        }
    }
}

/// A generation's changes on their way into the table. Up to
/// `APPLY_IN_PLACE_UP_TO` are held and applied in place at the end; past
/// that, the current maps are copied (while readers go on reading them) and
/// the changes go into the copy as they come, so a whole site's pointers are
/// never held at once besides the table.
pub(crate) struct Update<'t> {
    table: &'t Table,
    pending: Vec<(Box<str>, Option<Arc<Entry>>)>,
    next: Option<Maps>,
}

impl Update<'_> {
    pub(crate) fn add(&mut self, changes: Vec<(Box<str>, Option<Arc<Entry>>)>) {
        if self.next.is_none() && self.pending.len() + changes.len() > APPLY_IN_PLACE_UP_TO {
            let mut next = Maps::clone(&self.table.read());
            for (path, entry) in self.pending.drain(..) {
                next.set(path, entry);
            }
            self.next = Some(next);
        }
        match &mut self.next {
            Some(next) => changes.into_iter().for_each(|(path, entry)| next.set(path, entry)),
            None => self.pending.extend(changes),
        }
    }

    /// Makes the changes visible, all at once, as `generation`.
    pub(crate) fn finish(self, generation: u64) {
        let table = self.table;
        let mut maps = table.maps.write().unwrap_or_else(|e| e.into_inner());
        let previous = match self.next {
            Some(next) => Some(std::mem::replace(&mut *maps, next)),
            None => {
                for (path, entry) in self.pending {
                    maps.set(path, entry);
                }
                None
            }
        };
        table.generation.store(generation, Ordering::Release);
        drop(maps);
        // Freed after the lock, and off the threads that answer requests:
        // dropping half a million entries takes a while.
        if let Some(previous) = previous {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || drop(previous))),
                Err(_) => drop(previous),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(path: &str, hash: char) -> (String, Option<PathEntry>) {
        let (o, t) = (hash.to_string().repeat(64), "text/html; charset=utf-8".to_string());
        (path.into(), Some(PathEntry::Page { o, t, s: 10, e: 0, m: 0, d: String::new() }))
    }

    fn removed(path: &str) -> (String, Option<PathEntry>) {
        (path.into(), None)
    }

    #[test]
    fn objects_are_counted_by_the_entries_serving_them_in_place_and_when_rebuilt() {
        for size in [2, APPLY_IN_PLACE_UP_TO + 1] {
            let table = Table::default();
            let mut first = vec![page("/a/", 'a'), page("/b/", 'a')];
            first.extend((first.len()..size).map(|i| page(&format!("/p{i}/"), 'c')));
            table.apply(1, first);
            assert_eq!(table.len(), size);
            let a = "a".repeat(64);
            assert!(table.object(&a).is_some());
            table.apply(2, vec![removed("/a/")]);
            assert!(table.object(&a).is_some(), "/b/ still serves it");
            let mut second = vec![removed("/b/")];
            second.extend((0..size).map(|i| page(&format!("/q{i}/"), 'd')));
            table.apply(3, second);
            assert!(table.object(&a).is_none(), "nothing serves it any more");
            assert!(table.get("/b/").is_none() && table.get("/q0/").is_some());
            assert_eq!(table.generation(), 3);
        }
    }

    #[test]
    fn an_update_given_in_chunks_is_seen_whole_at_its_end_whichever_way_it_is_applied() {
        let table = Table::default();
        table.apply(1, vec![page("/kept/", 'a'), page("/gone/", 'a')]);
        for (generation, sizes) in [(2, vec![1, 2]), (3, vec![3, APPLY_IN_PLACE_UP_TO, 5])] {
            let mut update = table.update();
            let mut n = 0;
            let entry = |(path, entry): (String, Option<PathEntry>)| (path.into_boxed_str(), table.entry(entry));
            for size in sizes {
                let chunk: Vec<_> = (n..n + size).map(|i| page(&format!("/g{generation}/{i}/"), 'b')).collect();
                update.add(chunk.into_iter().map(entry).collect());
                n += size;
                assert!(table.get(&format!("/g{generation}/0/")).is_none(), "nothing is seen before the end");
            }
            update.add(vec![entry(removed("/gone/"))]);
            update.finish(generation);
            assert!((0..n).all(|i| table.get(&format!("/g{generation}/{i}/")).is_some()));
            assert!(table.get("/kept/").is_some() && table.get("/gone/").is_none());
            assert_eq!(table.generation(), generation);
        }
        assert_eq!(table.len(), 1 + 3 + (3 + APPLY_IN_PLACE_UP_TO + 5));
    }

    #[test]
    fn entries_of_one_media_type_share_its_value_and_malformed_hashes_are_not_served() {
        let table = Table::default();
        let mut bad = page("/bad/", 'a');
        if let Some(PathEntry::Page { o, .. }) = &mut bad.1 {
            *o = "../../etc/passwd".into();
        }
        table.apply(1, vec![page("/a/", 'a'), page("/b/", 'b'), bad]);
        assert!(table.get("/bad/").is_none());
        let types: Vec<Arc<HeaderValue>> = ["/a/", "/b/"]
            .iter()
            .map(|p| match &table.get(p).expect("served").served {
                Served::Page { content_type, .. } => content_type.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(Arc::ptr_eq(&types[0], &types[1]));
        assert_eq!(table.content_types.lock().unwrap().len(), 1);
        assert!(table.object(&"A".repeat(64)).is_none(), "uppercase hex is not a hash we write");
    }
}
