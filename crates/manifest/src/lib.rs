//! The generation manifest: sesame's published path table, in object
//! storage. A generation *is* its root: the router and the edge Worker both
//! serve from it, and the metadata store records only its name.
//!
//! Keys, in the project's object storage:
//! - `manifest/shards/<name>`: immutable blobs, gzip-compressed JSON named
//!   by the first 32 hex digits of their blake3: the table's shards, its
//!   bases, its moderation lists and its roots;
//! - `manifest/roots/<generation>`: a copy of the generation's root as JSON,
//!   for the Worker, which cannot read the database (`?v=GENERATION`);
//! - `manifest/current`: a copy of the root being served, written last.
//!
//! A root names its generation, its base (a blob naming its shards, 2^bits
//! of them, and holding the delta over them), the moderation blob and the
//! serving settings. A path lives in the shard given by the
//! first `bits` bits of SHA-256(salt ‖ path), an object (for `/_v/<hash>`) in
//! the one of SHA-256(salt ‖ hash). The salt is random per project, so no
//! user can pile entries into one shard by choosing slugs.
//!
//! Changes reach the shards in levels, as in a log-structured merge tree (or
//! Delta Lake's log and checkpoints), so that a small publish writes a few
//! objects whatever the size of the site: the root itself carries the
//! entries changed lately (`recent`, up to `[edge] recent_entries`); past
//! that they move to the base's delta (up to `[edge] delta_entries`); past
//! that the delta is folded into the shards it touches (a checkpoint). A
//! lookup reads the root, then the base, then the shard: the first level
//! holding the key answers, and `null` there means the key is gone. So one
//! add writes the root three times (its blob, the generation's copy and
//! `current`) and at times the base, and a cold lookup reads at most three
//! objects. The shard names live in the base rather than the root (as
//! Iceberg's manifest list names its manifests) because the root is
//! rewritten by every publish and read by every Worker every second, and
//! they change only at a checkpoint. Changed paths are spread over the
//! shards by their hash, so writing them straight into the shards rewrote
//! about one shard per changed path (23 for an add to the gallery); the
//! levels batch those rewrites.
//!
//! This crate holds the format and its readers; the engine writes it (its
//! `manifest` module: staged before the commit that names the root).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sesame_model::ServeRules;
use sesame_objects::{ObjectError, ObjectStorage};
use sesame_store::{Pointer, Target};
use sha2::{Digest, Sha256};

/// Why a manifest could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Object storage failed.
    #[error(transparent)]
    Objects(#[from] ObjectError),
    /// A blob is missing or not what its name says.
    #[error("{0}")]
    Corrupt(String),
    /// A value could not be encoded.
    #[error("cannot encode manifest: {0}")]
    Encode(String),
}

type Result<T, E = ManifestError> = std::result::Result<T, E>;

/// Version of the layout; a root of another format is rebuilt (2: blobs
/// are gzip-compressed; 3: the root carries the whole `ServeRules`; 4: with
/// the `head` listing routes; 5: with the `recent` and `delta` levels).
pub const FORMAT: u32 = 5;
/// Prefix of every manifest key.
pub const PREFIX: &str = "manifest/";
/// The root being served.
pub const CURRENT: &str = "manifest/current";
/// Prefix of the immutable blobs.
pub const SHARDS: &str = "manifest/shards/";
/// Prefix of the roots of each generation.
pub const ROOTS: &str = "manifest/roots/";
/// At most 2^16 shards.
const MAX_BITS: u8 = 16;

/// The key of a generation's root.
pub fn root_key(generation: u64) -> String {
    format!("{ROOTS}{generation}")
}

/// The key of a blob.
pub fn blob_key(name: &str) -> String {
    format!("{SHARDS}{name}")
}

/// What a Worker reads first: the generation and where its table is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Root {
    /// [`FORMAT`].
    pub format: u32,
    /// The generation the table reflects.
    pub generation: u64,
    /// When this root was written (Unix seconds).
    pub written: i64,
    /// Salt of the shard hash (hex).
    pub salt: String,
    /// log2 of the number of shards.
    pub bits: u8,
    /// Paths in the table.
    pub paths: u64,
    /// Distinct objects current paths serve.
    pub objects: u64,
    /// Blob name of the [`Base`].
    pub base: String,
    /// Blob name of the [`Moderation`] list.
    pub moderation: String,
    /// How to answer.
    pub serve: ServeRules,
    /// Entries changed since the base was written (looked up first).
    #[serde(default, skip_serializing_if = "Overlay::is_empty")]
    pub recent: Overlay,
    /// The generation whose root this one changes, when it was patched
    /// rather than written whole. A patched root holds every entry its
    /// generation changed in `recent`; only when they are more than
    /// `recent` may carry is `recent` empty and they are in its base's
    /// delta, a new base then (a checkpoint folds only older entries into
    /// the shards). So a reader holding the parent's table follows it by
    /// applying `recent`, or the new delta when `recent` is empty, and
    /// reads no shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
}

/// What changes only when the recent entries move down: the shards' names
/// and the delta over them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Base {
    /// Blob name of each shard (2^bits of them).
    pub shards: Vec<String>,
    /// Entries changed since the shards were written (looked up second).
    #[serde(default, skip_serializing_if = "Overlay::is_empty")]
    pub delta: Overlay,
}

/// Entries changed over a lower level: `None` for a key gone since.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overlay {
    /// Path → what it serves now, or `None`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paths: BTreeMap<String, Option<PathEntry>>,
    /// Object hash → how to serve it now, or `None`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, Option<ObjectEntry>>,
}

impl Overlay {
    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.objects.is_empty()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.paths.len() + self.objects.len()
    }

    /// Puts `newer`'s entries over these.
    pub fn extend(&mut self, newer: Overlay) {
        self.paths.extend(newer.paths);
        self.objects.extend(newer.objects);
    }

    /// Writes these entries into the shards they fall in, loaded in `shards`.
    pub fn fold_into(self, salt: &str, bits: u8, shards: &mut HashMap<usize, Shard>) {
        for (path, entry) in self.paths {
            let shard = shards.entry(shard_of(salt, &path, bits)).or_default();
            match entry {
                Some(entry) => shard.paths.insert(path, entry),
                None => shard.paths.remove(&path),
            };
        }
        for (hash, entry) in self.objects {
            let shard = shards.entry(shard_of(salt, &hash, bits)).or_default();
            match entry {
                Some(entry) => shard.objects.insert(hash, entry),
                None => shard.objects.remove(&hash),
            };
        }
    }

    /// The shards its keys fall in.
    pub fn shards(&self, salt: &str, bits: u8) -> BTreeSet<usize> {
        let paths = self.paths.keys().map(|p| shard_of(salt, p, bits));
        paths.chain(self.objects.keys().map(|h| shard_of(salt, h, bits))).collect()
    }
}

/// One shard: the paths and objects whose hash falls in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    /// Path → what it serves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paths: BTreeMap<String, PathEntry>,
    /// Object hash → how to serve it at `/_v/<hash>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, ObjectEntry>,
}

/// What a path serves, with what its response needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "lowercase")]
pub enum PathEntry {
    /// An object.
    Page {
        /// Content hash.
        o: String,
        /// `Content-Type`.
        t: String,
        /// Identity size.
        s: u64,
        /// Variants held when written ([`sesame_store::encodings`] bits).
        #[serde(default, skip_serializing_if = "is_zero")]
        e: u8,
        /// `Last-Modified`, Unix seconds.
        m: i64,
        /// Dependency keys (`Cache-Tag`, moderation of history).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        d: String,
    },
    /// 301 to another path.
    Redirect {
        /// The target.
        to: String,
        /// Last change.
        m: i64,
        /// Dependency keys.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        d: String,
    },
    /// 410.
    Gone {
        /// Last change.
        m: i64,
        /// Dependency keys.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        d: String,
    },
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl PathEntry {
    /// The entry of a pointer (`None` for a tombstone).
    pub fn of(p: &Pointer) -> Option<PathEntry> {
        let (m, d) = (p.modified, p.deps.as_str().to_string());
        match &p.target {
            Target::Page { object, content_type } => Some(PathEntry::Page {
                o: object.hash.clone(),
                t: content_type.clone(),
                s: object.size,
                e: object.encodings,
                m,
                d,
            }),
            Target::Redirect(to) => Some(PathEntry::Redirect { to: to.clone(), m, d }),
            Target::Gone => Some(PathEntry::Gone { m, d }),
            Target::Removed => None,
        }
    }

    /// The pointer of `path` this entry makes (its `generation` unknown: 0);
    /// `None` when its dependency keys do not parse.
    pub fn pointer(&self, path: &str) -> Option<Pointer> {
        let (target, m, d) = match self {
            PathEntry::Page { o, t, s, e, m, d } => {
                let object = sesame_store::ObjectRow { hash: o.clone(), size: *s, encodings: *e };
                (Target::Page { object, content_type: t.clone() }, m, d)
            }
            PathEntry::Redirect { to, m, d } => (Target::Redirect(to.clone()), m, d),
            PathEntry::Gone { m, d } => (Target::Gone, m, d),
        };
        let deps = sesame_model::Deps::parse(d).ok()?;
        Some(Pointer { path: path.to_string(), target, deps, generation: 0, modified: *m })
    }

    /// Whether two entries answer alike (variants learnt later do not count).
    pub fn same(&self, other: &PathEntry) -> bool {
        match (self, other) {
            (PathEntry::Page { e: _, o, t, s, m, d }, PathEntry::Page { e: _, o: o2, t: t2, s: s2, m: m2, d: d2 }) => {
                (o, t, s, m, d) == (o2, t2, s2, m2, d2)
            }
            _ => self == other,
        }
    }
}

/// An object a current path serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Current paths serving it.
    pub n: u32,
    /// `Content-Type`.
    pub t: String,
    /// Identity size.
    pub s: u64,
    /// Variants held when written.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub e: u8,
}

/// What history must not serve: documents taken down now, and the objects
/// pages built from them served before (`/_v/<hash>` answers 410 for those
/// while one of their documents is down).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Moderation {
    /// `collection/id` of each document taken down.
    pub docs: BTreeSet<String>,
    /// Object hash → the taken-down documents its page was built from.
    pub objects: BTreeMap<String, BTreeSet<String>>,
}

impl Moderation {
    /// Forgets objects whose documents are all restored.
    pub fn prune(&mut self) {
        let docs = &self.docs;
        self.objects.retain(|_, of| of.iter().any(|d| docs.contains(d)));
    }
}

/// The shard of `key` (a path or an object hash).
pub fn shard_of(salt: &str, key: &str, bits: u8) -> usize {
    if bits == 0 {
        return 0;
    }
    let digest = Sha256::new().chain_update(salt.as_bytes()).chain_update(key.as_bytes()).finalize();
    let top = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (top >> (32 - u32::from(bits))) as usize
}

/// Fewest bits giving shards of at most `target` entries on average.
pub fn bits_for(entries: u64, target: u32) -> u8 {
    let mut bits = 0;
    while bits < MAX_BITS && entries > u64::from(target) << bits {
        bits += 1;
    }
    bits
}

/// Whether a table of `entries` in 2^bits shards should be resharded: more
/// than twice the target per shard, or under a quarter of it.
pub fn needs_resharding(entries: u64, bits: u8, target: u32) -> bool {
    let capacity = u64::from(target) << bits;
    (entries > capacity * 2 && bits < MAX_BITS) || (bits > 0 && entries * 4 < capacity)
}

/// Blobs waiting to be written, by name.
#[derive(Default)]
pub struct Blobs {
    /// Name → bytes.
    pub puts: BTreeMap<String, Bytes>,
}

impl Blobs {
    /// Queues a value; returns its name.
    pub fn add<T: Serialize>(&mut self, value: &T) -> Result<String> {
        let (name, bytes) = encode_blob(value)?;
        self.puts.insert(name.clone(), bytes);
        Ok(name)
    }

    /// Bytes queued.
    pub fn bytes(&self) -> u64 {
        self.puts.values().map(|b| b.len() as u64).sum()
    }
}

/// A blob's stored bytes (gzip-compressed JSON: hex hashes and repeated
/// path prefixes shrink about 2.8× at the fastest level) and its name.
pub fn encode_blob<T: Serialize>(value: &T) -> Result<(String, Bytes)> {
    use std::io::Write;
    let failed = |e: &dyn std::fmt::Display| ManifestError::Encode(e.to_string());
    let json = serde_json::to_vec(value).map_err(|e| failed(&e))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(json.len() / 2), flate2::Compression::fast());
    gz.write_all(&json).map_err(|e| failed(&e))?;
    let bytes = gz.finish().map_err(|e| failed(&e))?;
    let name = blake3::hash(&bytes).to_hex()[..32].to_string();
    Ok((name, Bytes::from(bytes)))
}

/// A table written whole, as [`whole`] encodes it.
pub struct Whole {
    /// The root, its settings and time to be set by the writer.
    pub root: Root,
    /// Its base (no delta).
    pub base: Base,
}

/// Encodes a whole table of generation `generation` (on every core): the
/// shards of `entries` (path → entry), their base and the `moderation`
/// list, queued in `blobs`; the salt is kept from the previous root.
pub fn whole(
    generation: u64,
    salt: String,
    entries: Vec<(String, PathEntry)>,
    moderation: &Moderation,
    serve: ServeRules,
    shard_entries: u32,
    blobs: &mut Blobs,
) -> Result<Whole> {
    use rayon::prelude::*;
    let mut objects: HashMap<String, ObjectEntry> = HashMap::new();
    for (_, entry) in &entries {
        if let PathEntry::Page { o, t, s, e, .. } = entry {
            objects.entry(o.clone()).or_insert_with(|| ObjectEntry { n: 0, t: t.clone(), s: *s, e: *e }).n += 1;
        }
    }
    let (path_count, object_count) = (entries.len() as u64, objects.len() as u64);
    let bits = bits_for(path_count + object_count, shard_entries);
    let mut shards = vec![Shard::default(); 1 << bits];
    for (path, entry) in entries {
        shards[shard_of(&salt, &path, bits)].paths.insert(path, entry);
    }
    for (hash, entry) in objects {
        shards[shard_of(&salt, &hash, bits)].objects.insert(hash, entry);
    }
    let encoded: Vec<(String, Bytes)> = shards.par_iter().map(encode_blob).collect::<Result<_>>()?;
    let mut names = Vec::with_capacity(encoded.len());
    for (name, bytes) in encoded {
        blobs.puts.insert(name.clone(), bytes);
        names.push(name);
    }
    let base = Base { shards: names, delta: Overlay::default() };
    let root = Root {
        format: FORMAT,
        generation,
        written: 0,
        salt,
        bits,
        paths: path_count,
        objects: object_count,
        base: blobs.add(&base)?,
        moderation: blobs.add(moderation)?,
        serve,
        recent: Overlay::default(),
        parent: None,
    };
    Ok(Whole { root, base })
}

/// Reads a root; `None` when there is none (or it is not one this version
/// reads, which a sync then replaces).
pub async fn read_root(objects: &dyn ObjectStorage, key: &str) -> Result<Option<Root>> {
    let Some(bytes) = objects.get(key).await? else { return Ok(None) };
    match serde_json::from_slice::<Root>(&bytes) {
        Ok(root) if root.format == FORMAT => Ok(Some(root)),
        Ok(_) | Err(_) => {
            tracing::warn!(key, "unreadable manifest root; rewriting the manifest whole");
            Ok(None)
        }
    }
}

/// Reads a root's base.
pub async fn read_base(objects: &dyn ObjectStorage, root: &Root) -> Result<Base> {
    let base: Base = read_blob(objects, &root.base).await?;
    if base.shards.len() != 1 << root.bits {
        return Err(ManifestError::Corrupt(format!(
            "manifest base {} does not name 2^{} shards",
            root.base, root.bits
        )));
    }
    Ok(base)
}

/// Reads a blob.
pub async fn read_blob<T: for<'de> Deserialize<'de>>(objects: &dyn ObjectStorage, name: &str) -> Result<T> {
    let key = blob_key(name);
    let bytes = objects.get(&key).await?.ok_or_else(|| missing(&key))?;
    decode_blob(&key, &bytes)
}

/// The error of a blob that is not in storage.
pub fn missing(key: &str) -> ManifestError {
    ManifestError::Corrupt(format!("manifest blob {key} is missing"))
}

/// Decodes a blob's stored bytes (`key` names it in errors).
pub fn decode_blob<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T> {
    let corrupt = |e: &dyn std::fmt::Display| ManifestError::Corrupt(format!("manifest blob {key}: {e}"));
    // Inflated whole first: serde_json reading through the decoder would
    // pull it a few bytes at a time.
    let mut json = Vec::with_capacity(bytes.len() * 3);
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut json).map_err(|e| corrupt(&e))?;
    serde_json::from_slice(&json).map_err(|e| corrupt(&e))
}

/// Reads the root a generation recorded (by its blob name); `None` when it
/// is of another format (the next publish writes the manifest whole).
pub async fn read_named_root(objects: &dyn ObjectStorage, name: &str) -> Result<Option<Root>> {
    let root: serde_json::Value = read_blob(objects, name).await?;
    Ok(serde_json::from_value::<Root>(root).ok().filter(|r| r.format == FORMAT))
}

/// Reads the shards `wanted` that are not loaded yet.
pub async fn load_shards(
    objects: &dyn ObjectStorage,
    names: &[String],
    wanted: BTreeSet<usize>,
    loaded: &mut HashMap<usize, Shard>,
) -> Result<()> {
    use futures::StreamExt;
    let missing: Vec<usize> = wanted.into_iter().filter(|i| !loaded.contains_key(i)).collect();
    let read: Vec<Result<(usize, Shard)>> = futures::stream::iter(missing)
        .map(|i| async move { read_blob::<Shard>(objects, &names[i]).await.map(|s| (i, s)) })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in read {
        let (i, shard) = r?;
        loaded.insert(i, shard);
    }
    Ok(())
}

/// Every path entry of a manifest, for `verify`.
pub async fn entries(objects: &dyn ObjectStorage, root: &Root) -> Result<BTreeMap<String, PathEntry>> {
    let mut all = BTreeMap::new();
    let mut loaded = HashMap::new();
    let base = read_base(objects, root).await?;
    load_shards(objects, &base.shards, (0..base.shards.len()).collect(), &mut loaded).await?;
    for (i, shard) in loaded {
        for (path, entry) in shard.paths {
            if shard_of(&root.salt, &path, root.bits) != i {
                return Err(ManifestError::Corrupt(format!("manifest path {path} is in the wrong shard")));
            }
            all.insert(path, entry);
        }
    }
    for (path, entry) in base.delta.paths.into_iter().chain(root.recent.paths.clone()) {
        match entry {
            Some(entry) => all.insert(path, entry),
            None => all.remove(&path),
        };
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_follow_the_size_of_the_site() {
        assert_eq!(bits_for(0, 256), 0);
        assert_eq!(bits_for(256, 256), 0);
        assert_eq!(bits_for(257, 256), 1);
        assert_eq!(bits_for(980_000, 256), 12);
        assert!(!needs_resharding(980_000, 12, 256));
        assert!(needs_resharding(2_200_000, 12, 256), "over twice the target");
        assert!(needs_resharding(200_000, 12, 256), "under a quarter");
        assert!(!needs_resharding(10, 0, 256), "one shard is never too empty");
    }

    #[test]
    fn the_shard_hash_is_sha256_of_salt_and_key() {
        // The Worker computes the same: SHA-256("salt/a/") starts 0x7701.
        let digest = Sha256::digest(b"salt/a/");
        assert_eq!(shard_of("salt", "/a/", 8), usize::from(digest[0]));
        assert_eq!(shard_of("salt", "/a/", 0), 0);
        assert_eq!(shard_of("salt", "/a/", 16), usize::from(digest[0]) << 8 | usize::from(digest[1]));
    }

    #[test]
    fn the_worker_reads_this_layout_and_these_shards() {
        // The vectors the Worker's own tests run (edge/cloudflare/test/rules.test.mjs).
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../router/tests/vectors.json")).expect("vectors.json");
        assert_eq!(vectors["manifest_format"], FORMAT);
        let cases = vectors["shard"].as_array().expect("shard vectors");
        assert!(!cases.is_empty());
        for c in cases {
            let (salt, key) = (c["salt"].as_str().expect("salt"), c["key"].as_str().expect("key"));
            let bits = c["bits"].as_u64().expect("bits") as u8;
            assert_eq!(shard_of(salt, key, bits) as u64, c["expect"].as_u64().expect("expect"), "{c}");
        }
    }

    #[test]
    fn an_entry_makes_back_the_pointer_it_was_made_of() {
        let entry = PathEntry::Page { o: "ab".into(), t: "text/html".into(), s: 3, e: 1, m: 7, d: "doc:a/b".into() };
        let pointer = entry.pointer("/a/").expect("well formed");
        assert_eq!(PathEntry::of(&pointer), Some(entry));
        for entry in [
            PathEntry::Redirect { to: "/b/".into(), m: 1, d: String::new() },
            PathEntry::Gone { m: 2, d: String::new() },
        ] {
            assert_eq!(PathEntry::of(&entry.pointer("/a/").expect("well formed")), Some(entry));
        }
    }

    #[test]
    fn entries_are_compact_json() {
        let e = PathEntry::Page { o: "ab".into(), t: "text/html".into(), s: 3, e: 0, m: 7, d: String::new() };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"k":"page","o":"ab","t":"text/html","s":3,"m":7}"#);
        let g = PathEntry::Gone { m: 1, d: "doc:a/b".into() };
        assert_eq!(serde_json::to_string(&g).unwrap(), r#"{"k":"gone","m":1,"d":"doc:a/b"}"#);
    }
}
