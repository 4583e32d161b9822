//! The site-owner dashboard: server-rendered HTML under `[dashboard] path`
//! (default `/_/`) for signing up and in, editing a site with a live
//! preview, its history and rollback, API tokens, and the admin console.
//!
//! It is a second front door to the API's write path: every save, preview,
//! upload and rollback goes through the same engine calls, limits and
//! ownership checks as `/api`, with a session cookie instead of a bearer
//! token and a CSRF token on every form. Every flow works without
//! JavaScript; `assets/dashboard.js` adds the live preview, instant uploads
//! and change progress. Pages are `no-store`, `noindex` and carry the site's
//! CSP, which allows no inline script.

mod account;
mod admin;
mod domains;
mod drafts;
mod edit;
mod form;
mod session;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use sesame_config::DashboardAccess;

use crate::ApiState;
use crate::error::ApiError;
use session::Session;
pub(crate) use session::{PASSWORD_LENGTH, hash_password};

/// The dashboard's state: the API's (limits, engine, publisher) and its own.
pub(crate) struct Dashboard {
    api: Arc<ApiState>,
    /// Where it is mounted, e.g. `/_/`.
    path: String,
    /// Sign-ins by client network (an IPv6 /64 counts as one address).
    logins_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    /// Sign-ins by account: only existing accounts are keys, so guesses at
    /// made-up handles cannot grow it.
    logins_by_account: DefaultKeyedRateLimiter<i64>,
}

/// A failure shown as a page (or, to the script, as JSON).
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure { status, message: message.into(), retry_after: None }
    }

    pub fn internal(cause: &dyn std::fmt::Display) -> Failure {
        ApiError::internal(cause).into()
    }

    pub fn csrf() -> Failure {
        Failure::new(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from this site. Go back, reload the page and try again.",
        )
    }

    pub fn not_found() -> Failure {
        Failure::new(StatusCode::NOT_FOUND, "There is nothing here.")
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        Failure { status: e.status(), message: e.message().to_string(), retry_after: e.retry_after() }
    }
}

impl From<sesame_store::StoreError> for Failure {
    fn from(e: sesame_store::StoreError) -> Failure {
        ApiError::from(e).into()
    }
}

impl From<sesame_engine::WriteError> for Failure {
    fn from(e: sesame_engine::WriteError) -> Failure {
        ApiError::from(e).into()
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let ctx = serde_json::json!({ "title": title, "message": self.message, "status": self.status.as_u16() });
        let mut response = (self.status, render("error.html", &ctx)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The templates, compiled once; part of the binary.
static TEMPLATES: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    for (name, source) in [
        ("_layout.html", include_str!("../../dashboard/templates/_layout.html")),
        ("error.html", include_str!("../../dashboard/templates/error.html")),
        ("sign_in.html", include_str!("../../dashboard/templates/sign_in.html")),
        ("edit.html", include_str!("../../dashboard/templates/edit.html")),
        ("history.html", include_str!("../../dashboard/templates/history.html")),
        ("domains.html", include_str!("../../dashboard/templates/domains.html")),
        ("tokens.html", include_str!("../../dashboard/templates/tokens.html")),
        ("admin.html", include_str!("../../dashboard/templates/admin.html")),
        ("preview_errors.html", include_str!("../../dashboard/templates/preview_errors.html")),
    ] {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "a dashboard template does not compile");
        }
    }
    env
});

const CSS: &str = include_str!("../../dashboard/assets/dashboard.css");
const JS: &str = include_str!("../../dashboard/assets/dashboard.js");

/// Renders a template as an HTML page (a failure to render is logged and
/// answered with a plain message).
fn render(name: &str, ctx: &Value) -> Response {
    let html = TEMPLATES.get_template(name).and_then(|t| t.render(minijinja::value::Serde(ctx))).unwrap_or_else(|e| {
        tracing::error!(template = name, error = %e, "cannot render a dashboard page");
        "<!doctype html><title>Error</title><p>This page cannot be shown right now.".to_string()
    });
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], html).into_response()
}

/// The dashboard's routes, or none when `[dashboard] access = "off"`.
pub(crate) fn router(api: Arc<ApiState>) -> axum::Router {
    let config = api.project.site.config.dashboard.clone();
    if config.access == DashboardAccess::Off {
        return axum::Router::new();
    }
    let per_hour = Quota::per_hour(NonZeroU32::new(config.logins_per_hour).unwrap_or(NonZeroU32::MIN));
    let form_limit = api.project.site.config.api.max_body_bytes;
    // An edit form may carry an image (without the script).
    let edit_limit =
        axum::extract::DefaultBodyLimit::max(form_limit + api.project.site.config.media.max_bytes + 64 * 1024);
    let p = config.path.clone();
    let dashboard = Arc::new(Dashboard {
        api,
        path: p.clone(),
        logins_by_ip: RateLimiter::keyed(per_hour),
        logins_by_account: RateLimiter::keyed(per_hour),
    });
    let at = |rest: &str| format!("{p}{rest}");
    axum::Router::new()
        .route(&p, get(home))
        .route(&at("assets/dashboard.css"), get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .route(&at("assets/dashboard.js"), get(|| async { asset("text/javascript; charset=utf-8", JS) }))
        .route(&at("login"), get(account::login_page).post(account::login))
        .route(&at("signup"), get(account::signup_page).post(account::signup))
        .route(&at("logout"), post(account::logout))
        .route(&at("tokens"), get(account::tokens_page).post(account::create_token))
        .route(&at("tokens/revoke"), post(account::revoke_token))
        .route(&at("sites/{handle}"), get(edit::edit_page).post(edit::save).layer(edit_limit))
        .route(&at("sites/{handle}/preview"), post(edit::preview).layer(edit_limit))
        .route(&at("sites/{handle}/history"), get(edit::history))
        .route(&at("sites/{handle}/rollback"), post(edit::rollback))
        .route(&at("sites/{handle}/draft/publish"), post(drafts::publish))
        .route(&at("sites/{handle}/draft/discard"), post(drafts::discard))
        .route(&at("sites/{handle}/schedule"), post(drafts::schedule))
        .route(&at("sites/{handle}/export"), get(drafts::export))
        .route(&at("sites/{handle}/domains"), get(domains::page).post(domains::attach))
        .route(&at("sites/{handle}/domains/check"), post(domains::check))
        .route(&at("sites/{handle}/domains/remove"), post(domains::remove))
        .route(&at("media"), post(edit::upload))
        .route(&at("changes/{id}"), get(edit::change))
        .route(&at("admin"), get(admin::console).post(admin::moderate))
        .route(&at("{*rest}"), axum::routing::any(|| async { Failure::not_found() }))
        .layer(axum::extract::DefaultBodyLimit::max(form_limit))
        .layer(axum::middleware::map_response_with_state(dashboard.clone(), headers))
        .with_state(dashboard)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "private, max-age=300")], body).into_response()
}

/// Every dashboard response: never stored by a shared cache, never indexed,
/// the site's CSP (a preview keeps its own, stricter one).
async fn headers(axum::extract::State(d): axum::extract::State<Arc<Dashboard>>, mut response: Response) -> Response {
    let h = response.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert("x-robots-tag", HeaderValue::from_static("noindex, nofollow"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    let csp = &d.api.project.site.config.serve.csp;
    if !h.contains_key(header::CONTENT_SECURITY_POLICY)
        && !csp.is_empty()
        && let Ok(v) = HeaderValue::from_str(csp)
    {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    response
}

/// `/_/`: the signed-in person's site (or the admin console), else sign-in.
async fn home(axum::extract::State(d): axum::extract::State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    match d.session(&headers).await {
        Ok(Some(s)) => Redirect::to(&d.landing(&s.account)).into_response(),
        Ok(None) => Redirect::to(&format!("{}login", d.path)).into_response(),
        Err(f) => f.into_response(),
    }
}

impl Dashboard {
    fn config(&self) -> &sesame_config::Dashboard {
        &self.api.project.site.config.dashboard
    }

    /// Whether people may sign up here.
    fn signup_open(&self) -> bool {
        self.config().access == DashboardAccess::Everyone
    }

    /// Where a session starts: its own site, or the console for admins.
    fn landing(&self, account: &sesame_store::Account) -> String {
        if account.role == sesame_store::Role::Admin || self.api.project.site.config.api.sites.is_none() {
            format!("{}admin", self.path)
        } else {
            format!("{}sites/{}", self.path, account.handle)
        }
    }

    /// The signed-in session, or a redirect to the sign-in page.
    async fn require(&self, headers: &HeaderMap) -> Result<Session, Response> {
        match self.session(headers).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(Redirect::to(&format!("{}login", self.path)).into_response()),
            Err(f) => Err(f.into_response()),
        }
    }

    /// The session of a form post whose token matches it: a redirect to
    /// sign in without a session, 403 with a wrong or missing token.
    async fn require_form(&self, form: &FormPost) -> Result<Session, Response> {
        let s = self.require(&form.headers).await?;
        session::check_csrf(&s.csrf(), form.get("csrf")).map_err(IntoResponse::into_response)?;
        Ok(s)
    }

    /// The session of a request from the page's script, which is answered
    /// JSON: 401 without one.
    async fn script_session(&self, headers: &HeaderMap) -> Result<Session, ApiError> {
        self.session(headers)
            .await
            .map_err(|f| ApiError::new(f.status, f.message))?
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "sign in first"))
    }

    /// Renders a page with what every page shows: where the dashboard is,
    /// who is signed in, and the form token.
    fn page(&self, session: Option<&Session>, template: &str, mut ctx: Value) -> Response {
        if let Value::Object(o) = &mut ctx {
            o.insert("base".into(), self.path.clone().into());
            o.insert("site_title".into(), self.api.project.site.config.title.clone().into());
            o.insert("signup_open".into(), self.signup_open().into());
            if let Some(s) = session {
                o.insert("me".into(), serde_json::json!({ "handle": s.account.handle, "admin": s.is_admin() }));
                o.entry("csrf").or_insert_with(|| s.csrf().into());
                let own_site = self.api.project.site.config.api.sites.is_some() && !s.is_admin();
                o.insert("own_site".into(), own_site.into());
            }
        }
        render(template, &ctx)
    }
}

/// The pairs of an `application/x-www-form-urlencoded` body.
fn form_pairs(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).take(2000).collect()
}

/// The first value of a form field.
fn field<'f>(pairs: &'f [(String, String)], name: &str) -> &'f str {
    pairs.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
}

/// A form post: the request's headers and the body's pairs, read within
/// the form size limit (`[api] max_body_bytes`).
pub(crate) struct FormPost {
    headers: HeaderMap,
    pairs: Vec<(String, String)>,
}

impl FormPost {
    fn get(&self, name: &str) -> &str {
        field(&self.pairs, name)
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for FormPost {
    type Rejection = Failure;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = request.headers().clone();
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|_| Failure::new(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."))?;
        Ok(FormPost { headers, pairs: form_pairs(&bytes) })
    }
}
