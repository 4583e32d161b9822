//! The HTTP API under `/api`: accounts, sites, documents, moderation, change
//! status, plus `/healthz` and `/metrics`.
//!
//! Every write is one transaction (document + change event) that is durable
//! when the API answers 202; the worker publishes it when it is due. Every
//! write checks ownership inside that transaction. Bodies are size-limited and
//! every error is a JSON body naming the field. The OpenAPI document at
//! `/api/openapi.json` is generated from the same route list the router uses.

mod auth;
mod error;
mod input;
mod routes;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sesame_config::RouteKind;
use sesame_engine::{Actor, Project, Purger, WorkerHandle};
use sesame_store::Debounce;

pub use auth::{new_token, token_hash};
pub use error::{ApiError, ErrorBody};

/// Renders the metrics in the Prometheus text format.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// The generation the router of this process serves.
pub type ServedGeneration = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Handles that no account may take, whatever the configuration.
const BUILT_IN_RESERVED: &[&str] =
    &["api", "_v", "admin", "static", "sitemaps", "healthz", "metrics", "www", "root", "sesame", "assets", "feed"];

/// What every handler needs.
pub struct ApiState {
    project: Arc<Project>,
    worker: WorkerHandle,
    purger: Option<Purger>,
    served: Option<ServedGeneration>,
    writes: DefaultKeyedRateLimiter<String>,
    signups: DefaultKeyedRateLimiter<IpAddr>,
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
        worker: WorkerHandle,
        purger: Option<Purger>,
        served: Option<ServedGeneration>,
    ) -> Arc<ApiState> {
        let api = &project.site.config.api;
        let per_hour = |n: u32| Quota::per_hour(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        let mut reserved: BTreeSet<String> = BUILT_IN_RESERVED.iter().map(|s| s.to_string()).collect();
        reserved.extend(api.reserved_handles.iter().cloned());
        for route in &project.site.config.routes {
            let first = match &route.kind {
                RouteKind::Listing(l) => l.path.segments().first().and_then(|s| match s {
                    sesame_config::Segment::Literal(l) => Some(l.clone()),
                    sesame_config::Segment::Hole(_) => None,
                }),
                RouteKind::Document(d) => d.path.segments().first().and_then(|s| match s {
                    sesame_config::Segment::Literal(l) => Some(l.clone()),
                    sesame_config::Segment::Hole(_) => None,
                }),
                RouteKind::Page(p) => p.path.trim_start_matches('/').split('/').next().map(str::to_string),
                RouteKind::Sitemap(_) => Some("sitemap.xml".into()),
                RouteKind::Robots(_) => Some("robots.txt".into()),
            };
            reserved.extend(first.filter(|s| !s.is_empty()));
        }
        let admin_token = api.admin_token.as_ref().map(|t| token_hash(&t.0));
        Arc::new(ApiState {
            writes: RateLimiter::keyed(per_hour(api.max_updates_per_hour)),
            signups: RateLimiter::keyed(per_hour(api.signups_per_hour)),
            admin_token,
            reserved,
            project,
            worker,
            purger,
            served,
        })
    }

    fn debounce(&self) -> Debounce {
        let q = &self.project.site.config.queue;
        Debounce { quiet_ms: q.quiet_ms, max_wait_ms: q.max_wait_ms }
    }

    /// Counts a write against the account's hourly budget.
    fn charge(&self, actor: &Actor) -> Result<(), ApiError> {
        if actor.admin {
            return Ok(());
        }
        match self.writes.check_key(&actor.handle) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait =
                    not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                let seconds = wait.as_secs().max(1);
                metrics::counter!("sesame_events_rejected_total").increment(1);
                Err(ApiError::too_many(
                    format!("max updates per hour reached, try again in {} minutes", seconds.div_ceil(60)),
                    seconds,
                ))
            }
        }
    }

    /// Whether a handle may be signed up.
    fn handle_available(&self, handle: &str) -> Result<(), ApiError> {
        if self.reserved.contains(handle) || self.project.site.reserved_by_route(&format!("/{handle}/")) {
            return Err(ApiError::invalid("handle", format!("handle {handle:?} is reserved")));
        }
        Ok(())
    }
}

/// The `/api` routes with the body size limit. It has no fallback: `serve`
/// hands every other path to the router.
pub fn router(state: Arc<ApiState>) -> axum::Router {
    let limit = state.project.site.config.api.max_body_bytes;
    let (api, openapi) = routes::api().split_for_parts();
    let openapi = Arc::new(openapi);
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
}

/// `/healthz` (liveness, generation, queue depth) and `/metrics`
/// (Prometheus), for every process role.
pub fn ops(project: Arc<Project>, metrics: Option<MetricsRender>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(routes::healthz))
        .route("/metrics", axum::routing::get(routes::metrics))
        .with_state(Arc::new(routes::Ops { project, metrics }))
}
