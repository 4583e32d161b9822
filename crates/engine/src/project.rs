//! A project directory opened for work: configuration, templates, static
//! files, and the metadata and object stores it names.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use sesame_config::Config;
use sesame_model::ServeRules;
use sesame_objects::ObjectStorage;
use sesame_render::{Assets, Renderer};
use sesame_site::{STATIC_PREFIX, Site};
use sesame_store::MetaStore;

use crate::EngineError;

/// Folder of templates inside a project.
pub const TEMPLATES_DIR: &str = "templates";
/// Folder of files published as-is under `/static/`.
pub const STATIC_DIR: &str = "static";
/// Folder holding the embedded database and objects.
pub const STATE_DIR: &str = ".sesame";

/// An opened project.
pub struct Project {
    /// The project directory.
    pub dir: PathBuf,
    /// The compiled configuration.
    pub site: Arc<Site>,
    /// Compiled templates and the static files they link, replaced whole
    /// when a full build by another process rendered with others (see
    /// [`Project::follow_rendering`]).
    rendering: std::sync::RwLock<Arc<Rendering>>,
    /// The last full build's fingerprint that could not be followed (the
    /// files on disk differ from it): warned about once, not read again.
    unfollowed: std::sync::Mutex<Option<String>>,
    /// Metadata store.
    pub store: Arc<dyn MetaStore>,
    /// Object storage.
    pub objects: Arc<dyn ObjectStorage>,
    /// Serialises publishing within this process; the store's lease does it
    /// across processes.
    pub(crate) publishing: crate::publisher::LeaseGate,
    /// Set once the store's path claims follow this configuration.
    paths_indexed: tokio::sync::OnceCell<()>,
    /// The manifest blobs requests read (a change's status): kept decoded
    /// between them, since the same root and base answer until the next
    /// publish, and a base carries up to `[edge] delta_entries` entries.
    pub(crate) manifest_reads: tokio::sync::Mutex<crate::manifest::Decoded>,
}

impl std::fmt::Debug for Project {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Project")
            .field("dir", &self.dir)
            .field("store", &self.store)
            .field("objects", &self.objects)
            .finish()
    }
}

/// The key under which a full build records what it rendered with.
const RENDERED_WITH: &str = "rendered_with";

/// What pages are rendered with: the templates, and the fingerprinted URL
/// of each file of `static/` they link.
struct Rendering {
    renderer: Arc<Renderer>,
    asset_urls: Assets,
}

impl Rendering {
    /// Reads `templates/` and `static/` as they are now.
    fn load(dir: &Path, site: &Arc<Site>) -> Result<Rendering, EngineError> {
        let asset_urls: Assets = read_assets(dir)?
            .into_iter()
            .map(|a| (a.path.strip_prefix(STATIC_PREFIX).unwrap_or(&a.path).to_string(), a.fingerprinted))
            .collect();
        let renderer = Arc::new(Renderer::load(site.clone(), &dir.join(TEMPLATES_DIR), asset_urls.clone())?);
        Ok(Rendering { renderer, asset_urls })
    }
}

/// A file of the project's `static/` folder.
#[derive(Debug, Clone)]
pub struct Asset {
    /// URL path, `/static/...`.
    pub path: String,
    /// Contents.
    pub bytes: Vec<u8>,
    /// The path it is also published at, named by its content (what the
    /// `asset()` template function gives).
    pub fingerprinted: String,
}

impl Project {
    /// Opens the project in `dir`: reads `sesame.toml`, compiles templates and
    /// opens (creating if needed) the stores.
    pub async fn open(dir: &Path) -> Result<Project, EngineError> {
        let config = Config::load(dir)?;
        let database_url = resolve_url(dir, config.database_url.as_deref(), "sqlite://", ".sesame/sesame.db");
        let storage_url = match config.storage_url.as_deref() {
            Some(url) => storage_url(dir, url),
            None => default_storage(dir),
        };
        let schemas = read_schemas(dir, &config)?;
        let site = Site::with_schemas(config, schemas).map_err(|e| {
            let file = e.collection.clone();
            EngineError::Invalid(format!("collections.{file}.schema: {e}"))
        })?;
        let rendering = Rendering::load(dir, &site)?;
        if let Some(parent) = database_url.strip_prefix("sqlite://").and_then(|p| Path::new(p).parent()) {
            std::fs::create_dir_all(parent).map_err(|e| EngineError::io("creating", parent, e))?;
        }
        let store = sesame_store::open(&database_url).await?;
        let objects: Arc<dyn ObjectStorage> = sesame_objects::open(&storage_url)?;
        let project = Project {
            dir: dir.to_path_buf(),
            site,
            rendering: std::sync::RwLock::new(Arc::new(rendering)),
            unfollowed: Default::default(),
            store,
            objects,
            publishing: Default::default(),
            paths_indexed: Default::default(),
            manifest_reads: Default::default(),
        };
        crate::legacy::migrate(&project).await?;
        Ok(project)
    }

    /// Makes sure the store's path claims (which document holds which page
    /// path) follow this configuration's routes, rebuilding them once when the
    /// routes changed. Every document write calls it first.
    pub async fn index_paths(&self) -> Result<(), EngineError> {
        self.paths_indexed
            .get_or_try_init(|| async {
                let site = self.site.clone();
                let rebuilt = self.store.reindex_paths(&site.paths_fingerprint(), &|d| site.doc_paths(d)).await?;
                if rebuilt {
                    tracing::info!("path claims rebuilt for the current routes");
                }
                Ok::<(), EngineError>(())
            })
            .await?;
        Ok(())
    }

    /// How the published site is answered, from `sesame.toml`: the router
    /// serves with these, and the edge manifest's root hands them to the Worker.
    pub fn serve_rules(&self) -> ServeRules {
        let config = &self.site.config;
        ServeRules {
            csp: Some(config.serve.csp.clone()).filter(|c| !c.is_empty()),
            // As hosts are compared: lowercase, without the root's trailing dot.
            host_suffix: config.serve.host_suffix.as_deref().map(|s| s.trim_end_matches('.').to_ascii_lowercase()),
            versioned_urls: config.serve.versioned_urls,
            head_routes: self.site.head_route_tags(),
            ..ServeRules::new(config.publish.max_age, config.publish.stale_while_revalidate)
        }
    }

    /// Reads the files of `static/` (missing folder: none), as the pages
    /// rendered by this project link them: a file changed since the project
    /// was opened is an error (its pages would link a version never
    /// published).
    pub fn assets(&self) -> Result<Vec<Asset>, EngineError> {
        let assets = read_assets(&self.dir)?;
        let rendering = self.rendering();
        let urls = &rendering.asset_urls;
        let linked = |a: &Asset| urls.get(a.path.strip_prefix(STATIC_PREFIX).unwrap_or(&a.path));
        if assets.len() != urls.len() || assets.iter().any(|a| linked(a) != Some(&a.fingerprinted)) {
            return Err(EngineError::Invalid(
                "the files of static/ changed while this command ran: run it again".into(),
            ));
        }
        Ok(assets)
    }

    fn rendering(&self) -> Arc<Rendering> {
        self.rendering.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The compiled templates pages are rendered with now.
    pub fn renderer(&self) -> Arc<Renderer> {
        self.rendering().renderer.clone()
    }

    /// Records, after a full build, what it rendered with: publishers in
    /// other processes follow it ([`Project::follow_rendering`]).
    pub async fn record_rendering(&self) -> Result<(), EngineError> {
        Ok(self.store.set_meta(RENDERED_WITH, self.renderer().fingerprint()).await?)
    }

    /// Keeps rendering with what the last full build rendered with: when it
    /// used other templates or static files than this process loaded (a
    /// `sesame build` run beside a running `serve` after a template change),
    /// reads them again, so pages published from now on match the rest of
    /// the site. When the files on disk differ from the build's too (edited
    /// since, not built yet), this process keeps what it has and says so
    /// once. Returns whether it reloaded.
    pub async fn follow_rendering(&self) -> Result<bool, EngineError> {
        let Some(built) = self.store.meta(RENDERED_WITH).await? else { return Ok(false) };
        if built == self.renderer().fingerprint() {
            return Ok(false);
        }
        let known = self.unfollowed.lock().unwrap_or_else(|e| e.into_inner()).as_deref() == Some(built.as_str());
        if known {
            // Read once already for this build, and not its files: not again
            // for every publish (the next build records another).
            return Ok(false);
        }
        let fresh = Rendering::load(&self.dir, &self.site)?;
        if fresh.renderer.fingerprint() == built {
            *self.rendering.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
            tracing::info!("templates and static files reloaded: the last full build rendered with them");
            return Ok(true);
        }
        tracing::warn!(
            "the last full build rendered with other templates or static files than these, and those on disk \
             differ from both: run `sesame build` to publish them"
        );
        *self.unfollowed.lock().unwrap_or_else(|e| e.into_inner()) = Some(built);
        Ok(false)
    }
}

/// The files of a project's `static/` folder (missing folder: none).
fn read_assets(dir: &Path) -> Result<Vec<Asset>, EngineError> {
    let root = dir.join(STATIC_DIR);
    let mut out = Vec::new();
    if root.is_dir() {
        walk(&root, &root, &mut out)?;
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The JSON Schemas the collections name, read and parsed (an error names the file).
fn read_schemas(dir: &Path, config: &Config) -> Result<BTreeMap<String, serde_json::Value>, EngineError> {
    let mut schemas = BTreeMap::new();
    for (name, collection) in &config.collections {
        let Some(file) = &collection.schema else { continue };
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| EngineError::io("reading", &path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::Invalid(format!("{}: not valid JSON: {e}", path.display())))?;
        schemas.insert(name.clone(), value);
    }
    Ok(schemas)
}

/// The embedded object store: `.sesame/objects.lmdb`. A project made before
/// it existed keeps its directory of files (`.sesame/objects`) until
/// `sesame migrate-objects` has copied them and the directory is removed.
fn default_storage(dir: &Path) -> String {
    let legacy = dir.join(".sesame/objects");
    if legacy.is_dir() && !dir.join(LMDB_DEFAULT).exists() {
        tracing::warn!(
            "objects are served from the directory of files .sesame/objects; `sesame migrate-objects \
             file://.sesame/objects lmdb://{LMDB_DEFAULT}`, then removing that directory, moves them into \
             the embedded store"
        );
        return resolve_url(dir, None, "file://", ".sesame/objects");
    }
    resolve_url(dir, None, "lmdb://", LMDB_DEFAULT)
}

/// A storage URL with a relative `lmdb://` or `file://` path taken from the
/// project directory.
pub(crate) fn storage_url(dir: &Path, url: &str) -> String {
    let scheme = if url.starts_with("lmdb://") { "lmdb://" } else { "file://" };
    resolve_url(dir, Some(url), scheme, "")
}

/// Where the embedded object store lives in a project.
const LMDB_DEFAULT: &str = ".sesame/objects.lmdb";

/// A configured URL, or the embedded default; relative paths in `sqlite://`,
/// `lmdb://` and `file://` URLs are taken relative to the project directory.
fn resolve_url(dir: &Path, configured: Option<&str>, scheme: &str, default: &str) -> String {
    let url = configured.map(str::to_string).unwrap_or_else(|| format!("{scheme}{default}"));
    match url.strip_prefix(scheme) {
        Some(path) if !path.starts_with('/') && !path.starts_with(':') => {
            let abs = std::path::absolute(dir.join(path)).unwrap_or_else(|_| dir.join(path));
            format!("{scheme}{}", abs.display())
        }
        _ => url,
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Asset>) -> Result<(), EngineError> {
    for entry in std::fs::read_dir(dir).map_err(|e| EngineError::io("reading", dir, e))? {
        let entry = entry.map_err(|e| EngineError::io("reading", dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, out)?;
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let parts: Vec<String> = rel
            .components()
            .map(|c| match c {
                Component::Normal(s) => Ok(s.to_string_lossy().to_string()),
                _ => Err(()),
            })
            .collect::<Result<_, _>>()
            .map_err(|()| EngineError::Invalid(format!("static file {} has an unusable path", path.display())))?;
        let ok = parts.iter().all(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c)));
        if !ok {
            return Err(EngineError::Invalid(format!(
                "static file {}: names may only use letters, digits and -_.~",
                path.display()
            )));
        }
        let bytes = std::fs::read(&path).map_err(|e| EngineError::io("reading", &path, e))?;
        let path = format!("{STATIC_PREFIX}{}", parts.join("/"));
        let fingerprinted = sesame_model::serve::fingerprinted(&path, &sesame_objects::hash_hex(&bytes));
        out.push(Asset { path, bytes, fingerprinted });
    }
    Ok(())
}
