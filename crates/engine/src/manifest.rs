//! The edge manifest: the path table in object storage, for a Worker at the
//! CDN that reads the site from the bucket and cannot reach the database.
//!
//! Keys, in the project's object storage:
//! - `manifest/shards/<name>`: immutable blobs, gzip-compressed JSON named
//!   by the first 32 hex digits of their blake3: the table's shards and the
//!   moderation list;
//! - `manifest/roots/<generation>`: the root as that generation left it
//!   (what `?v=GENERATION` reads);
//! - `manifest/current`: the root being served, written last.
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
//! `current`) and at times
//! the base, and a cold lookup reads at most three objects. The shard names
//! live in the base rather than the root (as Iceberg's manifest list names
//! its manifests) because the root is rewritten by every publish and read by
//! every Worker every second, and they change only at a checkpoint. Changed
//! paths are spread over the shards by their hash, so writing them straight
//! into the shards rewrote about one shard per changed path (23 for an add
//! to the gallery); the levels batch those rewrites.
//!
//! Every publish stages its generation's manifest ([`stage`]) from the
//! changes it is about to commit: the levels they change and the root, which
//! is a blob too, named by its content. The blobs are made durable with the
//! generation's objects, the commit records the root's name on the
//! generation, and only then are `manifest/roots/<generation>` and
//! `manifest/current` written ([`publish_root`]), for the Worker, which
//! cannot read the database. A reader sees a whole generation or the one
//! before, never a mix; a crash before the commit leaves blobs nothing names
//! (swept by `gc`), and one after it leaves `current` behind until the next
//! publish or `sesame edge sync` ([`sync`]) writes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sesame_model::{Deps, DocKey, ServeRules, Status};
use sesame_site::SiteState;
use sesame_store::{Pointer, Target};
use sha2::{Digest, Sha256};

use crate::{Difference, EngineError, Project};

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
    fn extend(&mut self, newer: Overlay) {
        self.paths.extend(newer.paths);
        self.objects.extend(newer.objects);
    }

    /// Writes these entries into the shards they fall in, loaded in `shards`.
    fn fold_into(self, salt: &str, bits: u8, shards: &mut HashMap<usize, Shard>) {
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
    fn shards(&self, salt: &str, bits: u8) -> BTreeSet<usize> {
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

    /// Whether two entries answer alike (variants learnt later do not count).
    fn same(&self, other: &PathEntry) -> bool {
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
    fn prune(&mut self) {
        let docs = &self.docs;
        self.objects.retain(|_, of| of.iter().any(|d| docs.contains(d)));
    }
}

/// What a [`sync`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ManifestReport {
    /// The generation the manifest now reflects.
    pub generation: u64,
    /// Whether every shard was written (first sync, resharding, a damaged root).
    pub full: bool,
    /// Shards written (distinct: empty shards share one blob).
    pub shards_written: u64,
    /// Whether the base (shard names and delta) was written.
    pub base_written: bool,
    /// Blobs written (shards, the base and the moderation list).
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes of the root as JSON (copied twice after the commit: the
    /// generation's and `current`; its blob is gzip-compressed).
    pub root_bytes: u64,
    /// Shards in the table.
    pub shards: u64,
    /// Wall time.
    pub seconds: f64,
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
fn bits_for(entries: u64, target: u32) -> u8 {
    let mut bits = 0;
    while bits < MAX_BITS && entries > u64::from(target) << bits {
        bits += 1;
    }
    bits
}

/// Whether a table of `entries` in 2^bits shards should be resharded: more
/// than twice the target per shard, or under a quarter of it.
fn needs_resharding(entries: u64, bits: u8, target: u32) -> bool {
    let capacity = u64::from(target) << bits;
    (entries > capacity * 2 && bits < MAX_BITS) || (bits > 0 && entries * 4 < capacity)
}

/// Blobs waiting to be written, by name.
#[derive(Default)]
struct Blobs {
    puts: BTreeMap<String, Bytes>,
}

impl Blobs {
    fn add<T: Serialize>(&mut self, value: &T) -> Result<String, EngineError> {
        let (name, bytes) = encode_blob(value)?;
        self.puts.insert(name.clone(), bytes);
        Ok(name)
    }

    fn bytes(&self) -> u64 {
        self.puts.values().map(|b| b.len() as u64).sum()
    }
}

/// A blob's stored bytes (gzip-compressed JSON: hex hashes and repeated
/// path prefixes shrink about 2.8× at the fastest level) and its name.
fn encode_blob<T: Serialize>(value: &T) -> Result<(String, Bytes), EngineError> {
    use std::io::Write;
    let failed = |e: &dyn std::fmt::Display| EngineError::Internal(format!("cannot encode manifest: {e}"));
    let json = serde_json::to_vec(value).map_err(|e| failed(&e))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(json.len() / 2), flate2::Compression::fast());
    gz.write_all(&json).map_err(|e| failed(&e))?;
    let bytes = gz.finish().map_err(|e| failed(&e))?;
    let name = blake3::hash(&bytes).to_hex()[..32].to_string();
    Ok((name, Bytes::from(bytes)))
}

/// Reads a root; `None` when there is none (or it is not one this version
/// reads, which a sync then replaces).
pub async fn read_root(project: &Project, key: &str) -> Result<Option<Root>, EngineError> {
    let Some(bytes) = project.objects.get(key).await? else { return Ok(None) };
    match serde_json::from_slice::<Root>(&bytes) {
        Ok(root) if root.format == FORMAT => Ok(Some(root)),
        Ok(_) | Err(_) => {
            tracing::warn!(key, "unreadable manifest root; rewriting the manifest whole");
            Ok(None)
        }
    }
}

/// Reads a root's base.
pub async fn read_base(project: &Project, root: &Root) -> Result<Base, EngineError> {
    let base: Base = read_blob(project, &root.base).await?;
    if base.shards.len() != 1 << root.bits {
        return Err(EngineError::Corrupt(format!("manifest base {} does not name 2^{} shards", root.base, root.bits)));
    }
    Ok(base)
}

/// Reads a blob.
pub async fn read_blob<T: for<'de> Deserialize<'de>>(project: &Project, name: &str) -> Result<T, EngineError> {
    let key = blob_key(name);
    let bytes = project
        .objects
        .get(&key)
        .await?
        .ok_or_else(|| EngineError::Corrupt(format!("manifest blob {key} is missing")))?;
    let corrupt = |e: &dyn std::fmt::Display| EngineError::Corrupt(format!("manifest blob {key}: {e}"));
    // Inflated whole first: serde_json reading through the decoder would
    // pull it a few bytes at a time.
    let mut json = Vec::with_capacity(bytes.len() * 3);
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut json).map_err(|e| corrupt(&e))?;
    serde_json::from_slice(&json).map_err(|e| corrupt(&e))
}

/// A generation's manifest, staged before its commit: the blobs to make
/// durable with its objects, the root among them.
pub(crate) struct Staged {
    /// The root.
    pub root: Root,
    /// Its blob name, which the commit records on the generation.
    pub name: String,
    /// It as JSON, as the Worker reads it.
    json: Bytes,
    blobs: Blobs,
    report: ManifestReport,
}

impl Staged {
    /// What staging it wrote, timed until now.
    pub fn report(&self, started: Instant) -> ManifestReport {
        ManifestReport { seconds: started.elapsed().as_secs_f64(), ..self.report.clone() }
    }
}

/// Stages the manifest of generation `generation`, whose changes are
/// `changed` (tombstones included), over `prev`, the root of the generation
/// it builds on (`None`: built whole from the live pointers, as when a
/// project written before roots were recorded publishes again). The caller
/// holds the publish lease; `state` is the published model with the batch
/// applied, and `docs` the documents the batch published (their moderation
/// may have changed).
pub(crate) async fn stage(
    project: &Project,
    prev: Option<&Root>,
    generation: u64,
    batch: Batch<'_>,
    decoded: &mut Decoded,
) -> Result<Staged, EngineError> {
    let (changed, state) = (batch.changed, batch.state);
    let mut blobs = Blobs::default();
    let mut patched = None;
    // A change to most of the table (a template change) is cheaper written
    // whole than patched shard by shard. A root of another generation than
    // the one this publish builds on is not patched either.
    let patchable = |p: &&Root| p.generation + 1 == generation && (changed.len() as u64) < p.paths / 4 + 64;
    if let Some(prev) = prev.filter(patchable) {
        match patch(project, prev, batch, &mut blobs, decoded).await {
            Ok(root) => patched = root,
            Err(e) => tracing::warn!(error = %e, "cannot update the manifest in place; rewriting it whole"),
        }
    }
    let full = patched.is_none();
    let (root, base) = match patched {
        Some(patched) => patched,
        None => {
            blobs = Blobs::default();
            rebuild(project, prev, state, generation, changed, &mut blobs).await?
        }
    };
    let staged = finish(project, root, &base.shards, blobs, full)?;
    decoded.base = Some((staged.root.base.clone(), base));
    Ok(staged)
}

/// What a publish knows without reading the manifest.
pub(crate) struct Known<'a> {
    /// The previous pointer of every path it changes, when it read them.
    pub live: Option<&'a HashMap<String, Pointer>>,
    /// Objects new to storage: no manifest entry names them yet.
    pub new_objects: std::collections::HashSet<&'a str>,
}

/// A publish's changes, as the manifest takes them.
pub(crate) struct Batch<'a> {
    /// The pointers it changes (tombstones included).
    pub changed: &'a [Pointer],
    /// The published model with the batch applied.
    pub state: &'a SiteState,
    /// The documents it published (their moderation may have changed).
    pub docs: &'a [DocKey],
    /// What it knows without reading the manifest.
    pub known: Known<'a>,
}

/// Blobs decoded by earlier publishes, by name (a blob never changes): the
/// base of the root a publisher holds (its delta holds up to `[edge]
/// delta_entries` entries, too many to decode on every add), its moderation
/// list, and shards read lately.
#[derive(Default)]
pub(crate) struct Decoded {
    base: Option<(String, Arc<Base>)>,
    moderation: Option<(String, Moderation)>,
    shards: HashMap<String, Shard>,
}

/// Shards kept decoded at most (about 256 entries each by default).
const DECODED_SHARDS: usize = 512;

impl Decoded {
    async fn base(&mut self, project: &Project, root: &Root) -> Result<Arc<Base>, EngineError> {
        match &self.base {
            Some((name, base)) if *name == root.base => Ok(base.clone()),
            _ => {
                let base = Arc::new(read_base(project, root).await?);
                self.base = Some((root.base.clone(), base.clone()));
                Ok(base)
            }
        }
    }

    async fn moderation(&mut self, project: &Project, name: &str) -> Result<Moderation, EngineError> {
        match &self.moderation {
            Some((held, moderation)) if held == name => Ok(moderation.clone()),
            _ => read_blob(project, name).await,
        }
    }
}

/// Seals a root: its settings, its time, its blob.
fn finish(
    project: &Project,
    mut root: Root,
    shards: &[String],
    mut blobs: Blobs,
    full: bool,
) -> Result<Staged, EngineError> {
    root.serve = project.serve_rules();
    root.written = sesame_model::time::now();
    let written: BTreeSet<&String> = shards.iter().filter(|n| blobs.puts.contains_key(*n)).collect();
    let mut report = ManifestReport {
        generation: root.generation,
        full,
        shards_written: written.len() as u64,
        base_written: blobs.puts.contains_key(&root.base),
        blobs: blobs.puts.len() as u64,
        bytes: blobs.bytes(),
        root_bytes: 0,
        shards: shards.len() as u64,
        seconds: 0.0,
    };
    let name = blobs.add(&root)?;
    let json = root_json(&root)?;
    report.root_bytes = json.len() as u64;
    Ok(Staged { root, name, json, blobs, report })
}

/// Writes a staged manifest's blobs, its root included, with `objects` (the
/// publish's page objects not written yet), in one write where the storage
/// can. They are durable after the object storage's next `sync`.
pub(crate) async fn write_staged(
    project: &Project,
    staged: &Staged,
    mut objects: Vec<(String, Bytes)>,
) -> Result<(), EngineError> {
    objects.extend(staged.blobs.puts.iter().map(|(name, b)| (blob_key(name), b.clone())));
    project.objects.put_many(objects).await?;
    metrics::counter!("sesame_manifest_blobs_written_total").increment(staged.blobs.puts.len() as u64);
    metrics::counter!("sesame_manifest_bytes_written_total").increment(staged.blobs.bytes());
    Ok(())
}

/// Writes a committed generation's root where the Worker reads it: the
/// generation's copy (for `?v=`), then `current`.
pub(crate) async fn publish_root(project: &Project, staged: &Staged) -> Result<(), EngineError> {
    copy_root(project, staged.root.generation, staged.json.clone()).await
}

async fn copy_root(project: &Project, generation: u64, json: Bytes) -> Result<(), EngineError> {
    metrics::counter!("sesame_manifest_bytes_written_total").increment(2 * json.len() as u64);
    project.objects.replace_many(vec![(root_key(generation), json.clone()), (CURRENT.to_string(), json)]).await?;
    Ok(())
}

fn root_json(root: &Root) -> Result<Bytes, EngineError> {
    serde_json::to_vec(root)
        .map(Bytes::from)
        .map_err(|e| EngineError::Internal(format!("cannot encode manifest root: {e}")))
}

/// Reads the root a generation recorded (by its blob name); `None` when it
/// is of another format (the next publish writes the manifest whole).
pub async fn read_named_root(project: &Project, name: &str) -> Result<Option<Root>, EngineError> {
    let root: serde_json::Value = read_blob(project, name).await?;
    Ok(serde_json::from_value::<Root>(root).ok().filter(|r| r.format == FORMAT))
}

/// The root of the newest generation, as its commit recorded it: `None`
/// before the first build, for a generation committed before roots were
/// recorded, or for a root of another format.
pub async fn latest_root(project: &Project) -> Result<Option<Root>, EngineError> {
    match project.store.latest_root().await? {
        (generation, Some(name)) => Ok(read_named_root(project, &name).await?.filter(|r| r.generation == generation)),
        (_, None) => Ok(None),
    }
}

/// Brings `current` and the newest generation's root up to date for the
/// Worker (`sesame edge sync`: after a crash between a commit and writing
/// them); with `whole`, or when the newest generation recorded no readable
/// root, writes the whole manifest again from the live pointers and records
/// its root. The caller holds the publish lease.
pub async fn sync(project: &Project, state: &SiteState, whole: bool) -> Result<ManifestReport, EngineError> {
    let started = Instant::now();
    let existing = if whole { None } else { latest_root(project).await? };
    let staged = match existing {
        Some(root) => {
            let report =
                ManifestReport { generation: root.generation, shards: 1 << root.bits, ..ManifestReport::default() };
            copy_root(project, root.generation, root_json(&root)?).await?;
            return Ok(ManifestReport { seconds: started.elapsed().as_secs_f64(), ..report });
        }
        None => {
            let generation = project.store.latest_generation().await?;
            if generation == 0 {
                return Err(EngineError::Invalid("nothing is published yet: run `sesame build` first".into()));
            }
            let previous = read_root(project, CURRENT).await?;
            let mut blobs = Blobs::default();
            let (root, base) = rebuild(project, previous.as_ref(), state, generation, &[], &mut blobs).await?;
            finish(project, root, &base.shards, blobs, true)?
        }
    };
    write_staged(project, &staged, Vec::new()).await?;
    project.objects.sync().await?;
    project.store.set_root(staged.root.generation, &staged.name).await?;
    publish_root(project, &staged).await?;
    Ok(staged.report(started))
}

fn new_salt() -> String {
    let mut salt = [0u8; 16];
    if getrandom::fill(&mut salt).is_err() {
        // Only shard balance against crafted slugs rests on it.
        salt = fastrand::u128(..).to_le_bytes();
    }
    salt.iter().map(|b| format!("{b:02x}")).collect()
}

/// The documents of the published model taken down now.
fn taken_down(state: &SiteState) -> BTreeSet<String> {
    state.documents().filter(|d| d.status == Status::Removed).map(|d| d.key.to_string()).collect()
}

/// Writes every shard of generation `generation`: the live pointers with
/// `changed` (about to be committed) over them.
async fn rebuild(
    project: &Project,
    previous: Option<&Root>,
    state: &SiteState,
    generation: u64,
    changed: &[Pointer],
    blobs: &mut Blobs,
) -> Result<(Root, Arc<Base>), EngineError> {
    // Under the publish lease nothing commits meanwhile.
    let mut pointers: HashMap<String, Pointer> =
        project.store.pointers().await?.into_iter().map(|p| (p.path.clone(), p)).collect();
    for p in changed {
        pointers.insert(p.path.clone(), p.clone());
    }
    let salt = previous.map_or_else(new_salt, |r| r.salt.clone());
    // Objects that history must not serve stay so across a rewrite.
    let mut moderation = match previous {
        Some(prev) => read_blob::<Moderation>(project, &prev.moderation).await.unwrap_or_default(),
        None => Moderation::default(),
    };
    moderation.docs = taken_down(state);
    moderation.prune();
    let target = project.site.config.edge.shard_entries;
    let encoded = tokio::task::spawn_blocking(move || -> Result<_, EngineError> {
        let mut objects: HashMap<String, ObjectEntry> = HashMap::new();
        let mut paths = Vec::with_capacity(pointers.len());
        for p in pointers.values() {
            let Some(entry) = PathEntry::of(p) else { continue };
            if let PathEntry::Page { o, t, s, e, .. } = &entry {
                objects.entry(o.clone()).or_insert_with(|| ObjectEntry { n: 0, t: t.clone(), s: *s, e: *e }).n += 1;
            }
            paths.push((p.path.clone(), entry));
        }
        let (path_count, object_count) = (paths.len() as u64, objects.len() as u64);
        let bits = bits_for(path_count + object_count, target);
        let mut shards = vec![Shard::default(); 1 << bits];
        for (path, entry) in paths {
            shards[shard_of(&salt, &path, bits)].paths.insert(path, entry);
        }
        for (hash, entry) in objects {
            shards[shard_of(&salt, &hash, bits)].objects.insert(hash, entry);
        }
        let encoded: Vec<(String, Bytes)> = shards.par_iter().map(encode_blob).collect::<Result<_, _>>()?;
        Ok((salt, bits, path_count, object_count, encoded))
    })
    .await
    .map_err(|e| EngineError::Internal(format!("manifest task failed: {e}")))??;
    let (salt, bits, paths, objects, encoded) = encoded;
    let mut shards = Vec::with_capacity(encoded.len());
    for (name, bytes) in encoded {
        blobs.puts.insert(name.clone(), bytes);
        shards.push(name);
    }
    let moderation = blobs.add(&moderation)?;
    let base = Base { shards, delta: Overlay::default() };
    let root = Root {
        format: FORMAT,
        generation,
        written: 0,
        salt,
        bits,
        paths,
        objects,
        base: blobs.add(&base)?,
        moderation,
        serve: project.serve_rules(),
        recent: Overlay::default(),
    };
    Ok((root, Arc::new(base)))
}

/// The levels of a root as read so far: its recent entries, its base and
/// the shards loaded.
struct Levels<'r> {
    root: &'r Root,
    base: Arc<Base>,
    shards: HashMap<usize, Shard>,
}

impl<'r> Levels<'r> {
    async fn open(project: &Project, root: &'r Root, decoded: &mut Decoded) -> Result<Levels<'r>, EngineError> {
        Ok(Levels { root, base: decoded.base(project, root).await?, shards: HashMap::new() })
    }

    /// Loads the shards of the keys no upper level holds.
    async fn load<'k>(
        &mut self,
        project: &Project,
        keys: impl Iterator<Item = &'k str>,
        objects: bool,
        decoded: &mut Decoded,
    ) -> Result<(), EngineError> {
        let (salt, bits) = (self.root.salt.as_str(), self.root.bits);
        let (recent, delta) = (&self.root.recent, &self.base.delta);
        let upper = |k: &str| match objects {
            false => recent.paths.contains_key(k) || delta.paths.contains_key(k),
            true => recent.objects.contains_key(k) || delta.objects.contains_key(k),
        };
        let wanted: BTreeSet<usize> = keys.filter(|k| !upper(k)).map(|k| shard_of(salt, k, bits)).collect();
        // Shards decoded by an earlier publish are taken from memory.
        let mut unread = BTreeSet::new();
        for i in wanted {
            match decoded.shards.get(&self.base.shards[i]) {
                Some(shard) => {
                    self.shards.entry(i).or_insert_with(|| shard.clone());
                }
                None => {
                    unread.insert(i);
                }
            }
        }
        let before: BTreeSet<usize> = self.shards.keys().copied().collect();
        load(project, &self.base.shards, unread, &mut self.shards).await?;
        if decoded.shards.len() > DECODED_SHARDS {
            decoded.shards.clear();
        }
        for (i, shard) in self.shards.iter().filter(|(i, _)| !before.contains(i)) {
            decoded.shards.insert(self.base.shards[*i].clone(), shard.clone());
        }
        Ok(())
    }

    /// What a path serves, from the first level holding it (its shard loaded).
    fn path(&self, path: &str) -> Option<PathEntry> {
        match self.root.recent.paths.get(path).or_else(|| self.base.delta.paths.get(path)) {
            Some(entry) => entry.clone(),
            None => self.shards.get(&shard_of(&self.root.salt, path, self.root.bits))?.paths.get(path).cloned(),
        }
    }

    /// An object's entry, from the first level holding it (its shard loaded).
    fn object(&self, hash: &str) -> Option<ObjectEntry> {
        match self.root.recent.objects.get(hash).or_else(|| self.base.delta.objects.get(hash)) {
            Some(entry) => entry.clone(),
            None => self.shards.get(&shard_of(&self.root.salt, hash, self.root.bits))?.objects.get(hash).cloned(),
        }
    }
}

/// Puts the pointers the next generation changes over `prev` into the
/// root's recent entries, moving them down a level when one is full; `None`
/// when the table should be resharded instead.
async fn patch(
    project: &Project,
    prev: &Root,
    batch: Batch<'_>,
    blobs: &mut Blobs,
    decoded: &mut Decoded,
) -> Result<Option<(Root, Arc<Base>)>, EngineError> {
    let Batch { changed, state, docs, known } = batch;
    let (salt, bits) = (prev.salt.as_str(), prev.bits);
    let mut levels = Levels::open(project, prev, decoded).await?;
    // A path's previous entry is its previous pointer when the publish read
    // it (the manifest and the pointers are one table); else its shard's.
    if known.live.is_none() {
        levels.load(project, changed.iter().map(|p| p.path.as_str()), false, decoded).await?;
    }
    let previous = |path: &str| match known.live {
        Some(live) => live.get(path).and_then(PathEntry::of),
        None => levels.path(path),
    };

    let mut moderation = decoded.moderation(project, &prev.moderation).await?;
    let moderation_before = moderation.clone();
    for key in docs {
        let down = state.doc(key).is_some_and(|d| d.status == Status::Removed);
        if down {
            moderation.docs.insert(key.to_string());
        } else {
            moderation.docs.remove(&key.to_string());
        }
    }

    // Paths first, noting how each object's count of current paths changes.
    let mut recent = prev.recent.clone();
    let mut counts: BTreeMap<String, (i64, Option<ObjectEntry>)> = BTreeMap::new();
    let mut paths = prev.paths as i64;
    for p in changed {
        let new = PathEntry::of(p);
        let old = previous(&p.path);
        recent.paths.insert(p.path.clone(), new.clone());
        paths += i64::from(new.is_some()) - i64::from(old.is_some());
        if let Some(PathEntry::Page { o, d, .. }) = &old {
            counts.entry(o.clone()).or_default().0 -= 1;
            // A page built from a document taken down now: its bytes are not
            // served from history either.
            let down: BTreeSet<String> = Deps::parse(d)
                .map(|deps| deps.documents().map(|k| k.to_string()).filter(|k| moderation.docs.contains(k)).collect())
                .unwrap_or_default();
            if !down.is_empty() {
                moderation.objects.entry(o.clone()).or_default().extend(down);
            }
        }
        if let Some(PathEntry::Page { o, t, s, e, .. }) = &new {
            let slot = counts.entry(o.clone()).or_default();
            slot.0 += 1;
            slot.1 = Some(ObjectEntry { n: 0, t: t.clone(), s: *s, e: *e });
        }
    }
    moderation.prune();
    let stored = counts.keys().map(String::as_str).filter(|h| !known.new_objects.contains(h));
    levels.load(project, stored, true, decoded).await?;
    let mut objects = prev.objects as i64;
    for (hash, (delta, fresh)) in counts {
        let before = if known.new_objects.contains(hash.as_str()) { None } else { levels.object(&hash) };
        let n = before.as_ref().map_or(0, |o| i64::from(o.n)) + delta;
        let after = match before.clone().or(fresh) {
            _ if n <= 0 => None,
            Some(entry) => Some(ObjectEntry { n: u32::try_from(n).unwrap_or(u32::MAX), ..entry }),
            None => return Err(EngineError::Corrupt(format!("manifest has no entry for object {hash}"))),
        };
        if after != before {
            objects += i64::from(after.is_some()) - i64::from(before.is_some());
            recent.objects.insert(hash, after);
        }
    }
    let (paths, objects) = (paths.max(0) as u64, objects.max(0) as u64);
    let edge = &project.site.config.edge;
    if needs_resharding(paths + objects, bits, edge.shard_entries) {
        return Ok(None);
    }
    let mut root = Root { generation: prev.generation + 1, paths, objects, ..prev.clone() };
    let mut base = levels.base.clone();
    if recent.len() > edge.recent_entries as usize {
        // The recent entries move down to the delta ...
        let base = Arc::make_mut(&mut base);
        base.delta.extend(std::mem::take(&mut recent));
        if base.delta.len() > edge.delta_entries as usize {
            // ... and a full delta into the shards: a checkpoint.
            let wanted = base.delta.shards(salt, bits);
            load(project, &base.shards, wanted.clone(), &mut levels.shards).await?;
            let mut touched: HashMap<usize, Shard> =
                wanted.into_iter().filter_map(|i| levels.shards.remove(&i).map(|s| (i, s))).collect();
            std::mem::take(&mut base.delta).fold_into(salt, bits, &mut touched);
            base.shards = write_shards(&base.shards, touched, blobs).await?;
        }
        root.base = blobs.add(&*base)?;
    }
    root.recent = recent;
    if moderation != moderation_before {
        root.moderation = blobs.add(&moderation)?;
    }
    decoded.moderation = Some((root.moderation.clone(), moderation));
    Ok(Some((root, base)))
}

/// Encodes the `touched` shards (on every core, off the async threads) and
/// queues the changed ones; returns the shard names with theirs replaced.
async fn write_shards(
    names: &[String],
    touched: HashMap<usize, Shard>,
    blobs: &mut Blobs,
) -> Result<Vec<String>, EngineError> {
    let touched: Vec<(usize, Shard)> = touched.into_iter().collect();
    let encoded = tokio::task::spawn_blocking(move || {
        touched.par_iter().map(|(i, shard)| encode_blob(shard).map(|blob| (*i, blob))).collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| EngineError::Internal(format!("manifest task failed: {e}")))??;
    let mut shards = names.to_vec();
    for (i, (name, bytes)) in encoded {
        if name != names[i] {
            blobs.puts.insert(name.clone(), bytes);
        }
        shards[i] = name;
    }
    Ok(shards)
}

/// Reads the shards `wanted` that are not loaded yet.
async fn load(
    project: &Project,
    names: &[String],
    wanted: BTreeSet<usize>,
    loaded: &mut HashMap<usize, Shard>,
) -> Result<(), EngineError> {
    use futures::StreamExt;
    let missing: Vec<usize> = wanted.into_iter().filter(|i| !loaded.contains_key(i)).collect();
    let read: Vec<Result<(usize, Shard), EngineError>> = futures::stream::iter(missing)
        .map(|i| async move { read_blob::<Shard>(project, &names[i]).await.map(|s| (i, s)) })
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
pub async fn entries(project: &Project, root: &Root) -> Result<BTreeMap<String, PathEntry>, EngineError> {
    let mut all = BTreeMap::new();
    let mut loaded = HashMap::new();
    let base = read_base(project, root).await?;
    load(project, &base.shards, (0..base.shards.len()).collect(), &mut loaded).await?;
    for (i, shard) in loaded {
        for (path, entry) in shard.paths {
            if shard_of(&root.salt, &path, root.bits) != i {
                return Err(EngineError::Corrupt(format!("manifest path {path} is in the wrong shard")));
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

/// Where the manifest in storage disagrees with the live pointers of
/// `generation` (`expected`: the pointer, `live`: the manifest's entry):
/// the root the generation recorded, and whether `current` is that root;
/// empty when they agree.
pub async fn compare<'p>(
    project: &Project,
    generation: u64,
    live: impl IntoIterator<Item = &'p Pointer>,
) -> Result<Vec<Difference>, EngineError> {
    let differ = |path: &str, expected: String, found: String| Difference {
        path: path.to_string(),
        expected: Some(expected),
        live: Some(found),
    };
    let want = format!("generation {generation}");
    let Some(root) = latest_root(project).await?.filter(|r| r.generation == generation) else {
        // A project published before roots were recorded gets one from its
        // next publish, or from `sesame edge sync`.
        return Ok(vec![differ("manifest root", want, "none recorded: run `sesame edge sync`".into())]);
    };
    let mut out = Vec::new();
    match read_root(project, CURRENT).await? {
        Some(current) if current == root => {}
        Some(current) => out.push(differ(CURRENT, want, format!("generation {}", current.generation))),
        None => out.push(differ(CURRENT, want, "no manifest".into())),
    }
    let mut entries = entries(project, &root).await?;
    for p in live {
        match (PathEntry::of(p), entries.remove(&p.path)) {
            (Some(w), Some(got)) if w.same(&got) => {}
            (w, got) => out.push(differ(&p.path, format!("{w:?}"), format!("{got:?}"))),
        }
    }
    for (path, got) in entries {
        out.push(differ(&path, "nothing".into(), format!("{got:?}")));
    }
    Ok(out)
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
    fn entries_are_compact_json() {
        let e = PathEntry::Page { o: "ab".into(), t: "text/html".into(), s: 3, e: 0, m: 7, d: String::new() };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"k":"page","o":"ab","t":"text/html","s":3,"m":7}"#);
        let g = PathEntry::Gone { m: 1, d: "doc:a/b".into() };
        assert_eq!(serde_json::to_string(&g).unwrap(), r#"{"k":"gone","m":1,"d":"doc:a/b"}"#);
    }
}
