//! Writing the generation manifest (its format and readers are the
//! `sesame-manifest` crate, re-exported here).
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use sesame_model::{Deps, DocKey, Status};
use sesame_site::SiteState;
use sesame_store::Pointer;

pub use sesame_manifest::*;

use crate::{Difference, EngineError, Project};

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
/// it builds on (`None`: the first build, or a publish that could not read
/// it, which rendered every page: the table is written whole). The caller
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
    let mut blobs = Blobs::default();
    let mut patched = None;
    // A change to most of the table (a template change) is cheaper written
    // whole than patched shard by shard. A root of another generation than
    // the one this publish builds on is not patched either.
    let patchable = |p: &&Root| p.generation + 1 == generation && (batch.changed.len() as u64) < p.paths / 4 + 64;
    if let Some(prev) = prev.filter(patchable) {
        match patch(project, prev, &batch, &mut blobs, decoded).await {
            Ok(root) => patched = root,
            Err(e) => tracing::warn!(error = %e, "cannot update the manifest in place; rewriting it whole"),
        }
    }
    let full = patched.is_none();
    let (root, base) = match patched {
        Some(patched) => patched,
        None => {
            blobs = Blobs::default();
            let Batch { changed, state, known, .. } = batch;
            let read;
            let table = match known.whole {
                true => known.live,
                false => {
                    read = table(project, prev).await?;
                    &read
                }
            };
            let entries = entries_over(table, changed);
            decoded.objects = Some(ObjectSet::of(generation, entries.iter().map(|(_, e)| e)));
            rebuild(project, prev, entries, state, generation, &mut blobs).await?
        }
    };
    let staged = finish(project, root, &base.shards, blobs, full)?;
    decoded.base = Some((staged.root.base.clone(), base));
    Ok(staged)
}

/// What a publish knows without reading the manifest again.
#[derive(Clone)]
pub(crate) struct Known<'a> {
    /// The previous pointer of every path it changes.
    pub live: &'a HashMap<String, Pointer>,
    /// Whether `live` is the previous root's whole table (a full build).
    pub whole: bool,
    /// Objects new to storage: no manifest entry names them yet.
    pub new_objects: std::collections::HashSet<&'a str>,
}

/// A publish's changes, as the manifest takes them.
pub(crate) struct Batch<'a> {
    /// The pointers it changes (tombstones included): moved into the table
    /// when it is written whole (a template change changes every page).
    pub changed: Vec<Pointer>,
    /// The published model with the batch applied.
    pub state: &'a SiteState,
    /// The documents it published (their moderation may have changed).
    pub docs: &'a [DocKey],
    /// What it knows without reading the manifest.
    pub known: Known<'a>,
}

/// Blobs decoded by earlier publishes or reads, by name (a blob never
/// changes): the newest root read, the base of the root held (its delta
/// holds up to `[edge] delta_entries` entries, too many to decode on every
/// add), its moderation list, shards read lately, and the objects the root
/// names.
#[derive(Default)]
pub(crate) struct Decoded {
    root: Option<(String, Arc<Root>)>,
    base: Option<(String, Arc<Base>)>,
    moderation: Option<(String, Moderation)>,
    shards: HashMap<String, Shard>,
    objects: Option<ObjectSet>,
}

/// The objects the pages of one generation's root serve, by hash: whether
/// storage holds an object a publish rendered, known without reading its
/// shard (an add's new objects fall in random shards, seldom decoded).
/// About 50 bytes an object; kept up to date by each publish's staging.
struct ObjectSet {
    generation: u64,
    hashes: HashSet<blake3::Hash>,
    /// Objects this publisher saw the root stop naming, and when (Unix
    /// seconds): the sweep keeps what the generations live during the grace
    /// period named, so they are still stored for that long (a page that
    /// changes back, as listings do when an item comes and goes).
    released: HashMap<blake3::Hash, i64>,
}

impl ObjectSet {
    fn of<'e>(generation: u64, entries: impl Iterator<Item = &'e PathEntry>) -> ObjectSet {
        let hashes = entries.filter_map(|e| match e {
            PathEntry::Page { o, .. } => blake3::Hash::from_hex(o).ok(),
            _ => None,
        });
        ObjectSet { generation, hashes: hashes.collect(), released: HashMap::new() }
    }

    /// Whether storage holds `hash`: named by the root, or released since
    /// `since`.
    fn stored(&self, hash: &str, since: i64) -> bool {
        blake3::Hash::from_hex(hash)
            .is_ok_and(|h| self.hashes.contains(&h) || self.released.get(&h).is_some_and(|at| *at >= since))
    }

    /// This generation's changes (hash, whether the root names it now), at
    /// `now`; releases before `since` are forgotten.
    fn apply(&mut self, generation: u64, changes: Vec<(String, bool)>, now: i64, since: i64) {
        for (hash, named) in changes {
            let Ok(hash) = blake3::Hash::from_hex(&hash) else { continue };
            if named {
                self.hashes.insert(hash);
                self.released.remove(&hash);
            } else if self.hashes.remove(&hash) {
                self.released.insert(hash, now);
            }
        }
        self.released.retain(|_, at| *at >= since);
        self.generation = generation;
    }
}

/// Since when a released object is still known to be stored: half the
/// grace period ago (the other half covers clocks that differ between
/// processes); never with no grace period.
fn released_since(project: &Project, now: i64) -> i64 {
    match project.site.config.retention.grace_seconds {
        0 => i64::MAX,
        grace => now - (grace / 2) as i64,
    }
}

/// Shards kept decoded at most (about 256 entries each by default).
const DECODED_SHARDS: usize = 512;

impl Decoded {
    async fn base(&mut self, project: &Project, root: &Root) -> Result<Arc<Base>, EngineError> {
        match &self.base {
            Some((name, base)) if *name == root.base => Ok(base.clone()),
            _ => {
                let base = Arc::new(read_base(project.objects.as_ref(), root).await?);
                self.base = Some((root.base.clone(), base.clone()));
                Ok(base)
            }
        }
    }

    /// The objects `root` names: read whole the first time (a few seconds
    /// at 250,000 items), then followed publish by publish.
    async fn objects(&mut self, project: &Project, root: &Root) -> Result<&ObjectSet, EngineError> {
        if self.objects.as_ref().is_none_or(|set| set.generation != root.generation) {
            let entries = entries(project.objects.as_ref(), root).await?;
            self.objects = Some(ObjectSet::of(root.generation, entries.values()));
        }
        Ok(self.objects.as_ref().expect("just set"))
    }

    async fn moderation(&mut self, project: &Project, name: &str) -> Result<Moderation, EngineError> {
        match &self.moderation {
            Some((held, moderation)) if held == name => Ok(moderation.clone()),
            _ => Ok(read_blob(project.objects.as_ref(), name).await?),
        }
    }
}

/// Seals a root: its settings, its time, its blob.
pub(crate) fn finish(
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

/// The root of the newest generation, as its commit recorded it: `None`
/// before the first build. A generation whose root is not recorded, or
/// cannot be read, is an error (`sesame build` renders the site again and
/// records a new one).
pub async fn latest_root(project: &Project) -> Result<Option<Root>, EngineError> {
    // The temporary's copy is dropped with the statement, so the root is
    // moved out, not cloned.
    let root = latest_root_in(project, &mut Decoded::default()).await?;
    Ok(root.map(Arc::unwrap_or_clone))
}

/// [`latest_root`], the root taken from `decoded` when it holds it.
async fn latest_root_in(project: &Project, decoded: &mut Decoded) -> Result<Option<Arc<Root>>, EngineError> {
    let (generation, name) = project.store.latest_root().await?;
    if generation == 0 {
        return Ok(None);
    }
    let unreadable = |why: &str| {
        EngineError::Corrupt(format!(
            "the manifest root of generation {generation} {why}: run `sesame build` to publish the site whole again"
        ))
    };
    let name = name.ok_or_else(|| unreadable("is not recorded"))?;
    if let Some((held, root)) = &decoded.root
        && *held == name
    {
        return Ok(Some(root.clone()));
    }
    match read_named_root(project.objects.as_ref(), &name).await?.map(Arc::new) {
        Some(root) if root.generation == generation => {
            decoded.root = Some((name, root.clone()));
            Ok(Some(root))
        }
        Some(_) => Err(unreadable("names another generation")),
        None => Err(unreadable("is of another format")),
    }
}

/// A root's path table read whole, as pointers (their `generation`
/// unknown: 0); empty for no root.
pub async fn table(project: &Project, root: Option<&Root>) -> Result<HashMap<String, Pointer>, EngineError> {
    let Some(root) = root else { return Ok(HashMap::new()) };
    let entries = entries(project.objects.as_ref(), root).await?;
    entries.into_iter().map(|(path, entry)| Ok((path.clone(), pointer_of(&path, &entry)?))).collect()
}

/// The newest generation and what each of its paths serves.
pub async fn published(project: &Project) -> Result<(u64, HashMap<String, Pointer>), EngineError> {
    let root = latest_root(project).await?;
    Ok((root.as_ref().map_or(0, |r| r.generation), table(project, root.as_ref()).await?))
}

fn pointer_of(path: &str, entry: &PathEntry) -> Result<Pointer, EngineError> {
    entry
        .pointer(path)
        .ok_or_else(|| EngineError::Corrupt(format!("manifest entry of {path} has malformed dependency keys")))
}

/// What `paths` serve in `root` (the paths that serve something), reading
/// only the shards that hold them.
pub(crate) async fn lookup(
    project: &Project,
    root: &Root,
    decoded: &mut Decoded,
    paths: &[String],
) -> Result<HashMap<String, Pointer>, EngineError> {
    let mut levels = Levels::open(project, root, decoded).await?;
    levels.load(project, paths.iter().map(String::as_str), false, decoded).await?;
    let mut found = HashMap::new();
    for path in paths {
        if let Some(entry) = levels.path(path) {
            found.insert(path.clone(), pointer_of(path, &entry)?);
        }
    }
    Ok(found)
}

/// What `paths` serve in the newest generation (the paths that serve
/// something). The blobs it reads stay decoded for the next call
/// (`Project::manifest_reads`).
pub async fn pointers_at(project: &Project, paths: &[String]) -> Result<HashMap<String, Pointer>, EngineError> {
    let mut decoded = project.manifest_reads.lock().await;
    match latest_root_in(project, &mut decoded).await? {
        Some(root) => lookup(project, &root, &mut decoded, paths).await,
        None => Ok(HashMap::new()),
    }
}

/// Which of `hashes` storage is known to hold: those the pages of `root`
/// serve, and those it stopped serving within the grace period. A publisher
/// that holds the root's object set ([`prepare`], then each publish) answers
/// from it; one that does not (a one-shot `sesame apply`) reads only the
/// shards of `hashes` rather than the whole table.
pub(crate) async fn named(
    project: &Project,
    root: &Root,
    decoded: &mut Decoded,
    hashes: &[&str],
) -> Result<HashSet<String>, EngineError> {
    if let Some(set) = decoded.objects.as_ref().filter(|set| set.generation == root.generation) {
        let since = released_since(project, sesame_model::time::now());
        return Ok(hashes.iter().filter(|h| set.stored(h, since)).map(|h| h.to_string()).collect());
    }
    let mut levels = Levels::open(project, root, decoded).await?;
    levels.load(project, hashes.iter().copied(), true, decoded).await?;
    Ok(hashes.iter().filter(|h| levels.object(h).is_some()).map(|h| h.to_string()).collect())
}

/// Reads what a publisher needs before its first publish (the objects the
/// root names), so that the first one does not wait for it.
pub(crate) async fn prepare(project: &Project, root: &Root, decoded: &mut Decoded) -> Result<(), EngineError> {
    decoded.objects(project, root).await.map(|_| ())
}

/// Brings `current` and the newest generation's root up to date for the
/// Worker (`sesame edge sync`: after a crash between a commit and writing
/// them); with `whole`, writes every shard of the newest generation's table
/// again (in the shard count its size wants) and records the new
/// root. The caller holds the publish lease.
pub async fn sync(project: &Project, state: &SiteState, whole: bool) -> Result<ManifestReport, EngineError> {
    let started = Instant::now();
    let Some(root) = latest_root(project).await? else {
        return Err(EngineError::Invalid("nothing is published yet: run `sesame build` first".into()));
    };
    if !whole {
        let report =
            ManifestReport { generation: root.generation, shards: 1 << root.bits, ..ManifestReport::default() };
        copy_root(project, root.generation, root_json(&root)?).await?;
        return Ok(ManifestReport { seconds: started.elapsed().as_secs_f64(), ..report });
    }
    let entries = entries(project.objects.as_ref(), &root).await?.into_iter().collect();
    let mut blobs = Blobs::default();
    let (rewritten, base) = rebuild(project, Some(&root), entries, state, root.generation, &mut blobs).await?;
    let staged = finish(project, rewritten, &base.shards, blobs, true)?;
    write_staged(project, &staged, Vec::new()).await?;
    project.objects.sync().await?;
    project.store.set_root(staged.root.generation, &staged.name).await?;
    publish_root(project, &staged).await?;
    Ok(staged.report(started))
}

pub(crate) fn new_salt() -> String {
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

/// The entries of `table` with `changed` over it (tombstones remove); the
/// changes' paths are moved, not copied.
fn entries_over(table: &HashMap<String, Pointer>, changed: Vec<Pointer>) -> Vec<(String, PathEntry)> {
    let mut entries: Vec<(String, PathEntry)> = {
        let over: HashSet<&str> = changed.iter().map(|p| p.path.as_str()).collect();
        let kept = table.values().filter(|p| !over.contains(p.path.as_str()));
        kept.filter_map(|p| PathEntry::of(p).map(|e| (p.path.clone(), e))).collect()
    };
    entries.reserve(changed.len());
    entries.extend(changed.into_iter().filter_map(|p| PathEntry::of(&p).map(|e| (p.path, e))));
    entries
}

/// Writes every shard of generation `generation`, of `entries`.
async fn rebuild(
    project: &Project,
    previous: Option<&Root>,
    entries: Vec<(String, PathEntry)>,
    state: &SiteState,
    generation: u64,
    blobs: &mut Blobs,
) -> Result<(Root, Arc<Base>), EngineError> {
    let salt = previous.map_or_else(new_salt, |r| r.salt.clone());
    // Objects that history must not serve stay so across a rewrite.
    let mut moderation = match previous {
        Some(prev) => read_blob::<Moderation>(project.objects.as_ref(), &prev.moderation).await.unwrap_or_default(),
        None => Moderation::default(),
    };
    moderation.docs = taken_down(state);
    moderation.prune();
    let (serve, target) = (project.serve_rules(), project.site.config.edge.shard_entries);
    let mut queued = std::mem::take(blobs);
    let (whole, queued) = tokio::task::spawn_blocking(move || {
        whole(generation, salt, entries, &moderation, serve, target, &mut queued).map(|w| (w, queued))
    })
    .await
    .map_err(|e| EngineError::Internal(format!("manifest task failed: {e}")))??;
    *blobs = queued;
    Ok((whole.root, Arc::new(whole.base)))
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
        load_shards(project.objects.as_ref(), &self.base.shards, unread, &mut self.shards).await?;
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
    batch: &Batch<'_>,
    blobs: &mut Blobs,
    decoded: &mut Decoded,
) -> Result<Option<(Root, Arc<Base>)>, EngineError> {
    let Batch { changed, state, docs, known } = batch;
    let (salt, bits) = (prev.salt.as_str(), prev.bits);
    let mut levels = Levels::open(project, prev, decoded).await?;
    // A path's previous entry is what the publish read before rendering.
    let previous = |path: &str| known.live.get(path).and_then(PathEntry::of);

    let mut moderation = decoded.moderation(project, &prev.moderation).await?;
    let moderation_before = moderation.clone();
    for key in docs.iter() {
        let down = state.doc(key).is_some_and(|d| d.status == Status::Removed);
        if down {
            moderation.docs.insert(key.to_string());
        } else {
            moderation.docs.remove(&key.to_string());
        }
    }

    // Paths first, noting how each object's count of current paths changes.
    let mut changes = Overlay::default();
    let mut counts: BTreeMap<String, (i64, Option<ObjectEntry>)> = BTreeMap::new();
    let mut paths = prev.paths as i64;
    for p in changed {
        let new = PathEntry::of(p);
        let old = previous(&p.path);
        changes.paths.insert(p.path.clone(), new.clone());
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
            changes.objects.insert(hash, after);
        }
    }
    let (paths, objects) = (paths.max(0) as u64, objects.max(0) as u64);
    let named_now: Vec<(String, bool)> = changes.objects.iter().map(|(h, e)| (h.clone(), e.is_some())).collect();
    let edge = &project.site.config.edge;
    if needs_resharding(paths + objects, bits, edge.shard_entries) {
        return Ok(None);
    }
    let parent = Some(prev.generation);
    let mut root = Root { generation: prev.generation + 1, paths, objects, parent, ..prev.clone() };
    let mut base = levels.base.clone();
    let mut recent = prev.recent.clone();
    recent.extend(changes.clone());
    let limit = edge.recent_entries as usize;
    if recent.len() > limit {
        // The previous recent entries move down to the delta ...
        let base = Arc::make_mut(&mut base);
        base.delta.extend(prev.recent.clone());
        if base.delta.len() > edge.delta_entries as usize {
            // ... and a full delta into the shards: a checkpoint.
            let wanted = base.delta.shards(salt, bits);
            load_shards(project.objects.as_ref(), &base.shards, wanted.clone(), &mut levels.shards).await?;
            let mut touched: HashMap<usize, Shard> =
                wanted.into_iter().filter_map(|i| levels.shards.remove(&i).map(|s| (i, s))).collect();
            std::mem::take(&mut base.delta).fold_into(salt, bits, &mut touched);
            base.shards = write_shards(&base.shards, touched, blobs).await?;
        }
        // ... and this generation's changes stay above the shards (a reader
        // following the roots applies them, see `Root::parent`): in the
        // root, or in the new delta when they are more than it carries.
        recent = if changes.len() > limit {
            base.delta.extend(changes);
            Overlay::default()
        } else {
            changes
        };
        root.base = blobs.add(&*base)?;
    }
    root.recent = recent;
    if moderation != moderation_before {
        root.moderation = blobs.add(&moderation)?;
    }
    decoded.moderation = Some((root.moderation.clone(), moderation));
    // The objects the new root names: the held set, with this generation's
    // changes (another generation's set is read again when needed).
    match decoded.objects.as_mut().filter(|set| set.generation == prev.generation) {
        Some(set) => {
            let now = sesame_model::time::now();
            set.apply(root.generation, named_now, now, released_since(project, now));
        }
        None => decoded.objects = None,
    }
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
    use rayon::prelude::*;
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

/// Where the copy of the newest root the Worker reads (`current`)
/// disagrees with `root`, the one its generation recorded; empty when they
/// agree.
pub async fn compare_copies(project: &Project, root: &Root) -> Result<Vec<Difference>, EngineError> {
    let want = format!("generation {}", root.generation);
    let found = match read_root(project.objects.as_ref(), CURRENT).await? {
        Some(current) if current == *root => return Ok(Vec::new()),
        Some(current) => format!("generation {}", current.generation),
        None => "no manifest".into(),
    };
    Ok(vec![Difference { path: CURRENT.to_string(), expected: Some(want), live: Some(found) }])
}
