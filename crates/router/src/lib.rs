//! The router: serves the current generation over HTTP.
//!
//! Paths resolve through an in-memory table (path → object hash, redirect
//! or gone; `table.rs`), loaded from the generation's manifest root (the
//! published truth the edge Worker reads too) and kept current by applying
//! what each new root changed (`follow.rs`), so that a reader sees all of a
//! generation or none of it.
//! Bodies come from object storage by hash (small ones through an in-memory
//! cache; objects never change, so it needs no invalidation); nothing is ever
//! read by request path, so no request can reach outside the store.

mod bodies;
mod follow;
mod history;
mod plan;
mod respond;
mod rfc;
pub mod server;
mod table;
pub mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Most generations a refresh follows root by root; past that it loads the
/// newest root whole.
const FOLLOW_AT_MOST: u64 = 256;

/// How often the router reads the verified custom domains again.
const CUSTOM_HOSTS_EVERY: Duration = Duration::from_secs(2);

/// Longest a handshake waits for the certificate of a verified domain being
/// issued: within the header timeout's default (10 s), and ACME's usual
/// issuance (about a second) with room to spare.
pub const CERTIFICATE_WAIT: Duration = Duration::from_secs(8);

use axum::extract::Request;
use axum::extract::State;
use axum::response::Response;
use sesame_manifest::ManifestError;
use sesame_model::{OnDemandReply, ServeRules};
use sesame_objects::ObjectStorage;
use sesame_store::{GenerationWatch, MetaStore, StoreError};
use table::Table;
pub use table::{Entry, Hex, Object, Served};

/// Why the table could not be loaded or refreshed (the previous one is
/// still served).
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The manifest could not be read.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// A source of pages rendered on request. The router asks it only for
/// requests with an `after=` query or for a `feed.json` path.
#[async_trait::async_trait]
pub trait Dynamic: Send + Sync {
    /// The page for `path` and `query`, if this source renders it.
    async fn page(&self, path: &str, query: Option<&str>) -> Option<OnDemandReply>;
}

/// Router settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// How the site is answered (shared with the edge Worker).
    pub rules: ServeRules,
    /// Memory for hot object bodies, in bytes (0: none).
    pub cache_bytes: u64,
    /// Compress text objects stored without variants on request. Meant for
    /// sites that store none (`[publish] compress = false`): where variants
    /// follow a publish, the router waits for them, as the Worker does.
    pub compress_on_request: bool,
    /// The port HTTPS is answered on, when it is: a plain request for a
    /// custom domain with a certificate is then sent there.
    pub https_port: Option<u16>,
    /// Answer ACME's HTTP-01 challenges for custom domains, from the store
    /// (`[domains.acme]` is set up).
    pub answers_acme: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            rules: ServeRules::default(),
            cache_bytes: 64 * 1024 * 1024,
            compress_on_request: false,
            https_port: None,
            answers_acme: false,
        }
    }
}

/// A verified custom domain, as served.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CustomHost {
    /// The handle of the site it serves.
    site: String,
    /// The host it redirects to instead: an apex and its `www` both
    /// verified for one site are one address, the one attached first.
    redirect: Option<String>,
}

/// The verified custom domains as served.
#[derive(Debug, Default)]
struct CustomHosts {
    /// Host → site, and the apex/`www` pairs' redirects.
    hosts: HashMap<String, CustomHost>,
    /// Site → the domain it is served at once live, which its path form
    /// `/{site}/` redirects to.
    domains: HashMap<String, String>,
}

impl CustomHosts {
    fn new(verified: Vec<sesame_store::DomainRow>) -> CustomHosts {
        let domains =
            sesame_store::primary_domains(&verified).into_iter().map(|(s, h)| (s.to_string(), h.to_string())).collect();
        CustomHosts { hosts: custom_hosts(verified), domains }
    }
}

/// The verified claims as served: host → site, and the apex/`www` pairs'
/// redirects.
fn custom_hosts(verified: Vec<sesame_store::DomainRow>) -> HashMap<String, CustomHost> {
    let attached: HashMap<(&str, &str), (i64, &str)> =
        verified.iter().map(|d| ((d.host.as_str(), d.site.as_str()), (d.created, d.host.as_str()))).collect();
    let mut hosts = HashMap::with_capacity(verified.len());
    for d in &verified {
        let twin = match d.host.strip_prefix("www.") {
            Some(apex) => apex.to_string(),
            None => format!("www.{}", d.host),
        };
        let redirect = attached
            .get(&(twin.as_str(), d.site.as_str()))
            .filter(|first| **first < (d.created, d.host.as_str()))
            .map(|_| twin.clone());
        hosts.insert(d.host.clone(), CustomHost { site: d.site.clone(), redirect });
    }
    hosts
}

/// The serving side of sesame.
pub struct Router {
    table: Table,
    /// Held while a refresh reads and applies generations, one at a time:
    /// the manifest root the table reflects (`None`: nothing loaded yet).
    refreshing: tokio::sync::Mutex<Option<follow::Held>>,
    /// The blob name of the served generation's moderation list: a copy of
    /// the held root's, read without waiting for a refresh to end.
    moderation: std::sync::RwLock<Option<String>>,
    store: Arc<dyn MetaStore>,
    objects: Arc<dyn ObjectStorage>,
    config: RouterConfig,
    dynamic: Option<Arc<dyn Dynamic>>,
    bodies: Option<bodies::Bodies>,
    /// Manifest blobs of retained generations, for `?v=`.
    history: history::History,
    /// Header values fixed by the configuration.
    fixed: respond::FixedHeaders,
    /// Header values of recently served entries.
    headers: respond::HeaderCache,
    /// Custom domains verified for a site, by host.
    custom_hosts: std::sync::RwLock<Arc<CustomHosts>>,
    /// When the custom domains were last read.
    custom_hosts_read: std::sync::Mutex<Option<std::time::Instant>>,
    /// Held across a read of the custom domains and its use, so that a
    /// slower, older read never replaces a newer one.
    custom_hosts_reading: tokio::sync::Mutex<()>,
    /// Their certificates, for the HTTPS listener.
    certificates: Arc<tls::Certificates>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("generation", &self.generation()).field("paths", &self.len()).finish()
    }
}

impl Router {
    /// Loads the current pointers. `dynamic` serves pages rendered on request.
    pub async fn load(
        store: Arc<dyn MetaStore>,
        objects: Arc<dyn ObjectStorage>,
        config: RouterConfig,
        dynamic: Option<Arc<dyn Dynamic>>,
    ) -> Result<Arc<Router>, RefreshError> {
        let bodies = bodies::Bodies::new(config.cache_bytes);
        let fixed = respond::FixedHeaders::new(&config);
        let headers = respond::HeaderCache::new();
        let refreshing = tokio::sync::Mutex::new(None);
        let table = Table::default();
        let custom_hosts = Default::default();
        let custom_hosts_read = Default::default();
        let custom_hosts_reading = Default::default();
        let router = Arc::new(Router {
            table,
            refreshing,
            moderation: Default::default(),
            store,
            objects,
            config,
            dynamic,
            bodies,
            history: history::History::new(),
            fixed,
            headers,
            custom_hosts,
            custom_hosts_read,
            custom_hosts_reading,
            certificates: Default::default(),
        });
        router.refresh().await?;
        router.refresh_custom_hosts().await?;
        Ok(router)
    }

    /// Applies generations committed since the last refresh; returns the
    /// generation now served.
    pub async fn refresh(&self) -> Result<u64, RefreshError> {
        let mut held = self.refreshing.lock().await;
        let known = self.table.generation();
        let (latest, name) = self.store.latest_root().await?;
        if latest == known && known != 0 {
            return Ok(known);
        }
        let Some(name) = name else {
            return match latest {
                0 => Ok(0),
                _ => Err(ManifestError::Corrupt(format!("generation {latest} recorded no manifest root")).into()),
            };
        };
        let objects = self.objects.as_ref();
        // Far behind (a router stalled while publishes went on), loading the
        // table whole reads less than following every root.
        if let Some(from) = held.clone().filter(|h| h.generation < latest && latest - h.generation <= FOLLOW_AT_MOST) {
            let mut roots = Vec::new();
            for name in self.store.roots_since(from.generation + 1).await? {
                roots.extend(sesame_manifest::read_named_root(objects, &name).await?);
            }
            // A root this version cannot read is left out of `roots`: the
            // generations after it are then loaded whole, or it fails below.
            if let Some(now) = follow::follow(&self.table, objects, &from, &roots).await?
                && now.generation >= latest
            {
                let generation = now.generation;
                self.hold(&mut held, now);
                return Ok(generation);
            }
        }
        let root = sesame_manifest::read_named_root(objects, &name)
            .await?
            .filter(|r| r.generation == latest)
            .ok_or_else(|| {
                ManifestError::Corrupt(format!(
                    "the root of generation {latest} is not one this version reads: run `sesame build`"
                ))
            })?;
        let now = follow::load_whole(&self.table, &self.objects, &root).await?;
        self.hold(&mut held, now);
        Ok(latest)
    }

    fn hold(&self, held: &mut Option<follow::Held>, now: follow::Held) {
        *self.moderation.write().unwrap_or_else(|e| e.into_inner()) = Some(now.moderation.clone());
        *held = Some(now);
    }

    /// The moderation list of the generation served (`None` before the
    /// first): the objects `/_v/<hash>` answers 410 for.
    pub(crate) async fn moderation(&self) -> Result<Option<Arc<sesame_manifest::Moderation>>, RefreshError> {
        let name = self.moderation.read().unwrap_or_else(|e| e.into_inner()).clone();
        match name {
            Some(name) => Ok(Some(self.history.moderation(&self.objects, &name).await?)),
            None => Ok(None),
        }
    }

    /// Reads the custom domains verified for sites, and their
    /// certificates, again.
    pub async fn refresh_custom_hosts(&self) -> Result<(), StoreError> {
        let _reading = self.custom_hosts_reading.lock().await;
        let hosts = CustomHosts::new(self.store.verified_domains().await?);
        let certificates = self.store.certificates().await?;
        self.certificates.replace(&certificates);
        *self.custom_hosts.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(hosts);
        *self.custom_hosts_read.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        Ok(())
    }

    /// The certificates of verified custom domains, by host (for TLS).
    pub fn certificates(&self) -> Arc<tls::Certificates> {
        self.certificates.clone()
    }

    /// Whether `host` has a certificate to answer HTTPS with.
    fn has_certificate(&self, host: &str) -> bool {
        self.certificates.has(host)
    }

    /// How the HTTPS listener holds the first clients of a verified domain
    /// whose certificate is being ordered (ACME is set up here): until it
    /// is stored, at most [`CERTIFICATE_WAIT`]. Any other name goes on at
    /// once (and is refused when it has no certificate).
    pub fn certificate_wait(self: &Arc<Self>) -> Option<server::CertificateWait> {
        if !self.config.answers_acme {
            return None;
        }
        let router = Arc::downgrade(self);
        Some(Arc::new(move |host: String| {
            let router = router.clone();
            Box::pin(async move {
                let Some(router) = router.upgrade() else { return };
                if router.custom_host(&host).is_some() && !router.has_certificate(&host) {
                    router.certificates.wait_for(&host, CERTIFICATE_WAIT).await;
                }
            })
        }))
    }

    /// How the HTTPS listener finds the answers to ACME's TLS-ALPN-01
    /// validations (from the store), when this router answers them.
    pub fn alpn_challenges(self: &Arc<Self>) -> Option<server::AlpnChallenges> {
        if !self.config.answers_acme {
            return None;
        }
        let store = self.store.clone();
        Some(Arc::new(move |host: String| {
            let store = store.clone();
            Box::pin(async move {
                let (chain, key) = match store.alpn_challenge(&host).await {
                    Ok(found) => found?,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read a challenge certificate");
                        return None;
                    }
                };
                tls::challenge_config(&chain, &key)
                    .inspect_err(|e| tracing::warn!(%host, error = %e, "cannot read a challenge certificate"))
                    .ok()
            })
        }))
    }

    /// The answer to ACME's HTTP-01 challenge `token` for `host`, while an
    /// order for that host waits on it.
    async fn challenge_answer(&self, host: &str, token: &str) -> Option<String> {
        let well_formed = !token.is_empty()
            && token.len() <= 128
            && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !self.config.answers_acme || !well_formed {
            return None;
        }
        match self.store.challenge(token).await {
            Ok(Some((for_host, answer))) if for_host == host => Some(answer),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a challenge answer");
                None
            }
        }
    }

    /// The site a verified custom domain serves, and where it redirects.
    fn custom_host(&self, host: &str) -> Option<CustomHost> {
        self.custom_hosts.read().unwrap_or_else(|e| e.into_inner()).hosts.get(host).cloned()
    }

    /// The domain `site` is served at, once live.
    fn site_domain(&self, site: &str) -> Option<String> {
        self.custom_hosts.read().unwrap_or_else(|e| e.into_inner()).domains.get(site).cloned()
    }

    /// The generation being served.
    pub fn generation(&self) -> u64 {
        self.table.generation()
    }

    /// Number of paths served.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether nothing is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry for a path.
    pub fn entry(&self, path: &str) -> Option<Arc<Entry>> {
        self.table.get(path)
    }

    /// What `path` served at `generation`: the current entry from the
    /// generation served on (as the edge Worker answers); before it, from
    /// the manifest root that generation recorded, read as the Worker reads
    /// it; nothing for a generation no longer retained.
    pub async fn entry_at(&self, path: &str, generation: u64) -> Result<Option<Arc<Entry>>, RefreshError> {
        if generation >= self.generation() {
            return Ok(self.table.get(path));
        }
        if generation < self.store.oldest_retained().await? {
            return Ok(None);
        }
        let entry = self.history.path_at(self.store.as_ref(), &self.objects, path, generation).await?;
        Ok(self.table.entry(entry))
    }

    /// Follows generations committed by other processes: at once when the
    /// store announces them (PostgreSQL), and by polling every `interval` in
    /// case an announcement is missed (or the store cannot announce). In-process
    /// publishers call [`Router::refresh`] directly right after committing.
    pub fn follow(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let router = Arc::downgrade(self);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut watch = GenerationWatch::new(store.as_ref(), interval).await;
            loop {
                watch.next().await;
                let Some(router) = router.upgrade() else { return };
                if let Err(e) = router.refresh().await {
                    tracing::warn!(error = %e, "cannot refresh pointers; serving the previous generation");
                }
                // Domains are verified outside generations: read at most every few seconds.
                let read = *router.custom_hosts_read.lock().unwrap_or_else(|e| e.into_inner());
                if read.is_none_or(|at| at.elapsed() >= CUSTOM_HOSTS_EVERY)
                    && let Err(e) = router.refresh_custom_hosts().await
                {
                    tracing::warn!(error = %e, "cannot read the custom domains; serving the previous ones");
                }
            }
        })
    }

    /// An axum service answering every path.
    pub fn app(self: &Arc<Self>) -> axum::Router {
        axum::Router::new().fallback(serve).with_state(self.clone())
    }
}

async fn serve(State(router): State<Arc<Router>>, request: Request) -> Response {
    // The request's parts by reference: extracting them one by one would copy them.
    let (parts, _) = request.into_parts();
    let secure = parts.extensions.get::<server::OverTls>().is_some();
    respond::respond(&router, &parts.method, &parts.uri, &parts.headers, secure).await
}
