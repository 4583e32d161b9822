//! The HTTP API under `/api`: accounts, sites, documents, moderation, change
//! status, plus `/healthz` and `/metrics`.
//!
//! Every write is one transaction (document + change event) that is durable
//! when the API answers 202; the publisher publishes it when it is due. Every
//! write checks ownership inside that transaction. Bodies are size-limited and
//! every error is a JSON body naming the field. The OpenAPI document at
//! `/api/openapi.json` is generated from the same route list the router uses.

mod acme;
mod auth;
mod dashboard;
mod domains;
mod drafts;
mod error;
mod input;
mod openapi;
mod routes;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sesame_engine::{Actor, Project, PublishLoopHandle, Purger};
use sesame_store::Debounce;

pub use auth::{new_token, token_hash};
pub use error::{ApiError, ErrorBody};

/// Renders the metrics in the Prometheus text format.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// The generation the router of this process serves.
pub type ServedGeneration = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What the process does when custom domains change (its router reads them
/// again), awaited before the change is answered.
pub type DomainsChanged = Box<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Handles that no account may take, whatever the configuration.
/// Names of the platform itself, of infrastructure and of the roles people
/// trust; a handle is also a host name in host mode.
const BUILT_IN_RESERVED: &[&str] = &[
    "about",
    "abuse",
    "account",
    "accounts",
    "admin",
    "administrator",
    "api",
    "app",
    "assets",
    "auth",
    "dashboard",
    "feed",
    "ftp",
    "help",
    "healthz",
    "hostmaster",
    "localhost",
    "login",
    "logout",
    "mail",
    "media",
    "metrics",
    "moderator",
    "postmaster",
    "root",
    "security",
    "sesame",
    "signup",
    "sitemaps",
    "static",
    "status",
    "support",
    "system",
    "webmaster",
    "www",
];

/// What every handler needs.
pub struct ApiState {
    project: Arc<Project>,
    publisher: PublishLoopHandle,
    purger: Option<Purger>,
    served: Option<ServedGeneration>,
    writes: DefaultKeyedRateLimiter<String>,
    invalidations: DefaultKeyedRateLimiter<String>,
    status_reads: DefaultKeyedRateLimiter<String>,
    previews: DefaultKeyedRateLimiter<String>,
    uploads: DefaultKeyedRateLimiter<String>,
    archives: DefaultKeyedRateLimiter<String>,
    /// One import at a time: a restore holds its documents' text until they
    /// are written.
    importing: tokio::sync::Semaphore,
    signups: DefaultKeyedRateLimiter<IpAddr>,
    /// Custom domains' DNS checks (`None`: no `[domains]` set up).
    dns: Option<domains::Dns>,
    /// Wakes the certificate issuer (a domain went live).
    acme_wake: tokio::sync::Notify,
    /// Told when verified domains or their certificates change (this
    /// process's router reads them again before the change is answered).
    domains_changed: std::sync::OnceLock<DomainsChanged>,
    admin_token: Option<blake3::Hash>,
    reserved: BTreeSet<String>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").field("reserved", &self.reserved).finish_non_exhaustive()
    }
}

impl ApiState {
    /// Builds the state from the project's `[api]` settings. With `served`, a
    /// change counts as published once the router of this process serves it.
    pub fn new(
        project: Arc<Project>,
        publisher: PublishLoopHandle,
        purger: Option<Purger>,
        served: Option<ServedGeneration>,
    ) -> Arc<ApiState> {
        let api = &project.site.config.api;
        let at_least_one = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let per_hour = |n: u32| Quota::per_hour(at_least_one(n));
        let mut reserved: BTreeSet<String> = BUILT_IN_RESERVED.iter().map(|s| s.to_string()).collect();
        reserved.extend(api.reserved_handles.iter().cloned());
        reserved.extend(project.site.reserved_names());
        let admin_token = api.admin_token.as_ref().map(|t| token_hash(&t.0));
        let domains = &project.site.config.domains;
        let dns = domains.enabled().then(|| domains::Dns::new(domains)).and_then(|made| {
            made.inspect_err(|e| tracing::warn!(error = %e, "custom domains are off: no DNS resolver")).ok()
        });
        let checks = dns.is_some();
        let state = Arc::new(ApiState {
            writes: RateLimiter::keyed(per_hour(api.max_updates_per_hour)),
            invalidations: RateLimiter::keyed(per_hour(api.invalidations_per_hour)),
            status_reads: RateLimiter::keyed(Quota::per_minute(at_least_one(api.status_reads_per_minute))),
            previews: RateLimiter::keyed(Quota::per_minute(at_least_one(api.previews_per_minute))),
            uploads: RateLimiter::keyed(per_hour(project.site.config.media.uploads_per_hour)),
            archives: RateLimiter::keyed(per_hour(api.archives_per_hour)),
            importing: tokio::sync::Semaphore::new(1),
            signups: RateLimiter::keyed(per_hour(api.signups_per_hour)),
            dns,
            acme_wake: tokio::sync::Notify::new(),
            domains_changed: std::sync::OnceLock::new(),
            admin_token,
            reserved,
            project,
            publisher,
            purger,
            served,
        });
        if checks {
            tokio::spawn(domains::check_in_background(state.clone()));
            tokio::spawn(acme::issue_in_background(state.clone()));
        }
        state
    }

    /// Runs `f` whenever verified domains or their certificates change
    /// here, and waits for it before answering the change (once: later
    /// calls are ignored).
    pub fn on_domains_changed(&self, f: DomainsChanged) {
        let _ = self.domains_changed.set(f);
    }

    async fn domains_changed(&self) {
        if let Some(f) = self.domains_changed.get() {
            f().await;
        }
    }

    /// Whether `host` is one of the platform's own: its base URL's, a
    /// `{handle}.{host_suffix}` host, or the CNAME target.
    fn is_platform_host(&self, host: &str) -> bool {
        let config = &self.project.site.config;
        let base = config.base_url.parse::<axum::http::Uri>().ok().and_then(|u| u.host().map(str::to_ascii_lowercase));
        let under = |suffix: &str| host == suffix || host.ends_with(&format!(".{suffix}"));
        base.as_deref() == Some(host)
            || config.serve.host_suffix.as_deref().is_some_and(under)
            || config.domains.cname_target.as_deref().is_some_and(under)
    }

    /// Counts an accepted change and wakes the publisher to publish it.
    fn accepted(&self) {
        metrics::counter!("sesame_events_accepted_total").increment(1);
        self.publisher.wake();
    }

    fn debounce(&self) -> Debounce {
        let q = &self.project.site.config.queue;
        Debounce { quiet_ms: q.quiet_ms, max_wait_ms: q.max_wait_ms }
    }

    /// Counts a write (a save, a forced build, a rollback) against the
    /// account's hourly budget.
    fn charge(&self, actor: &Actor) -> Result<(), ApiError> {
        limit(&self.writes, actor, "max updates per hour").inspect_err(|_| {
            metrics::counter!("sesame_events_rejected_total").increment(1);
        })
    }

    /// Counts a CDN invalidation against the account's hourly budget.
    fn charge_invalidation(&self, actor: &Actor) -> Result<(), ApiError> {
        limit(&self.invalidations, actor, "max invalidations per hour")
    }

    /// Counts a preview of `fields` against the account's budget, by the
    /// work it asks for: one unit, and one more per [`PREVIEW_UNIT_BYTES`]
    /// of text (rendering is linear in the text, markdown's nesting and
    /// output being bounded), at most the whole minute's budget.
    fn charge_preview(&self, actor: &Actor, fields: &input::Fields) -> Result<(), ApiError> {
        let burst = self.project.site.config.api.previews_per_minute.max(1);
        let units = 1 + text_bytes(fields.values()) / PREVIEW_UNIT_BYTES;
        let units = NonZeroU32::new(u32::try_from(units).unwrap_or(u32::MAX).min(burst)).unwrap_or(NonZeroU32::MIN);
        limit_n(&self.previews, actor, "max previews per minute", units)
    }

    /// Counts a view through a preview link against the link's budget (the
    /// previews per minute of an account): whoever holds a link can render
    /// its draft, not the server's whole CPU.
    fn charge_link_view(&self, hash: &str) -> Result<(), ApiError> {
        let link = Actor { account: None, handle: format!("link:{hash}"), admin: false };
        limit(&self.previews, &link, "max previews per minute")
    }

    /// Counts a site archive (export or import) against the account's budget.
    fn charge_archive(&self, actor: &Actor) -> Result<(), ApiError> {
        limit(&self.archives, actor, "max archives per hour")
    }

    /// Counts an upload against the account's budget.
    fn charge_upload(&self, actor: &Actor) -> Result<(), ApiError> {
        limit(&self.uploads, actor, "max uploads per hour")
    }

    /// Counts a sign-up against the client address's budget.
    fn charge_signup(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        match ip.map(|ip| check_network(&self.signups, ip)) {
            Some(Err(not_until)) => {
                let (seconds, when) = retry_in(&not_until);
                Err(ApiError::too_many(format!("too many sign-ups from this address, try again in {when}"), seconds))
            }
            _ => Ok(()),
        }
    }

    /// Counts a change-status read against the account's budget.
    fn charge_status_read(&self, actor: &Actor) -> Result<(), ApiError> {
        limit(&self.status_reads, actor, "max status reads per minute")
    }

    /// Whether a well-formed handle may be signed up: the platform's own
    /// names and the site's route names are taken by the system (409).
    fn handle_available(&self, handle: &str) -> Result<(), ApiError> {
        if self.reserved.contains(handle) || self.project.site.reserved_by_route(&format!("/{handle}/")) {
            return Err(ApiError::conflict("handle", format!("handle {handle:?} is reserved")));
        }
        Ok(())
    }
}

/// Hashes a dashboard password with Argon2id; refuses one too short or too
/// long.
pub async fn hash_password(password: String) -> Result<String, String> {
    let range = dashboard::PASSWORD_LENGTH;
    if !range.contains(&password.chars().count()) {
        return Err(format!("a password has {} to {} characters", range.start(), range.end()));
    }
    dashboard::hash_password(password).await.map_err(|f| f.to_string())
}

/// Checks `actor` against a per-account limiter (admins are not limited):
/// 429 with `Retry-After` and the wait in words when the budget is spent.
fn limit(limiter: &DefaultKeyedRateLimiter<String>, actor: &Actor, what: &str) -> Result<(), ApiError> {
    limit_n(limiter, actor, what, NonZeroU32::MIN)
}

/// [`limit`], spending `units` of the budget at once.
fn limit_n(
    limiter: &DefaultKeyedRateLimiter<String>,
    actor: &Actor,
    what: &str,
    units: NonZeroU32,
) -> Result<(), ApiError> {
    if actor.admin {
        return Ok(());
    }
    // By account id: a handle is only a name.
    let key = actor.account.map_or_else(|| actor.handle.clone(), |id| id.to_string());
    match limiter.check_key_n(&key, units) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => {
            let (seconds, when) = retry_in(&not_until);
            Err(ApiError::too_many(format!("{what} reached, try again in {when}"), seconds))
        }
        // More than the whole budget: callers cap `units` at it.
        Err(_) => Err(ApiError::too_many(format!("{what}: this request alone exceeds it"), 60)),
    }
}

/// Text a preview renders per unit charged against `previews_per_minute`:
/// a preview of a 100 KB essay costs as much as seven short ones.
pub const PREVIEW_UNIT_BYTES: usize = 16 * 1024;

/// Bytes of text in JSON values (strings, at any depth).
fn text_bytes<'a>(values: impl Iterator<Item = &'a serde_json::Value>) -> usize {
    values
        .map(|v| match v {
            serde_json::Value::String(s) => s.len(),
            serde_json::Value::Array(a) => text_bytes(a.iter()),
            serde_json::Value::Object(o) => text_bytes(o.values()),
            _ => 0,
        })
        .sum()
}

/// Checks a limiter keyed by client address. An IPv6 client is keyed by its
/// /64 (one subscriber's network hands out the rest of its addresses
/// freely), and the limiter forgets idle keys once it holds many, so a flood
/// of new addresses cannot grow it without bound.
fn check_network(
    limiter: &DefaultKeyedRateLimiter<IpAddr>,
    ip: IpAddr,
) -> Result<(), governor::NotUntil<governor::clock::QuantaInstant>> {
    const FORGET_ABOVE: usize = 100_000;
    let key = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
        v4 => v4,
    };
    if limiter.len() > FORGET_ABOVE {
        limiter.retain_recent();
    }
    limiter.check_key(&key)
}

/// How long until a limiter lets the next request through: seconds (at
/// least 1) and the same in words ("12 minutes").
fn retry_in(not_until: &governor::NotUntil<governor::clock::QuantaInstant>) -> (u64, String) {
    let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
    let seconds = wait.as_secs().max(1);
    let when = if seconds < 60 { format!("{seconds} seconds") } else { format!("{} minutes", seconds.div_ceil(60)) };
    (seconds, when)
}

/// The `/api` routes with the body size limit, and the dashboard (under
/// `[dashboard] path`, unless it is off). It has no fallback: `serve` hands
/// every other path to the router.
pub fn router(state: Arc<ApiState>) -> axum::Router {
    let limit = state.project.site.config.api.max_body_bytes;
    // Room for a multipart envelope around the largest image.
    let upload_limit = state.project.site.config.media.max_bytes + 64 * 1024;
    let (api, generated) = routes::api(upload_limit).split_for_parts();
    let openapi = Arc::new(openapi::document(&state.project.site, &generated));
    let dashboard = dashboard::router(state.clone());
    axum::Router::new()
        .merge(api)
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let doc = openapi.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .route("/api/{*rest}", axum::routing::any(routes::api_not_found))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
        .merge(dashboard)
}

/// `/healthz` (liveness, generation, queue depth) and `/metrics`
/// (Prometheus), for every process role.
pub fn ops(project: Arc<Project>, metrics: Option<MetricsRender>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(routes::healthz))
        .route("/metrics", axum::routing::get(routes::metrics))
        .with_state(Arc::new(routes::Ops { project, metrics }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_network_shares_one_budget() {
        let limiter = RateLimiter::keyed(Quota::per_hour(NonZeroU32::MIN));
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        assert!(check_network(&limiter, ip("2001:db8:1:2::1")).is_ok());
        assert!(check_network(&limiter, ip("2001:db8:1:2:ffff::9")).is_err(), "the same /64");
        assert!(check_network(&limiter, ip("2001:db8:1:3::1")).is_ok(), "another /64");
        assert!(check_network(&limiter, ip("192.0.2.7")).is_ok());
        assert!(check_network(&limiter, ip("::ffff:192.0.2.7")).is_err(), "an IPv4 address written as IPv6");
    }
}
