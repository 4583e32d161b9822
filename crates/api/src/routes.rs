//! The handlers, each documented for the OpenAPI document.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sesame_engine::{Actor, By, Event, Located, Missing, PurgeJob, WriteResult};
use sesame_model::Op;
use sesame_model::{Document, Status};
use sesame_store::{Credential, Debounce, Registration, Role};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;
use crate::auth::own_site;
use crate::auth::{Caller, new_token, token_hash};
use crate::error::{ApiError, ErrorBody};
use crate::input::{ApiPath, Fields, JsonBody, doc_key, handle, path_doc_key, site_key};

type S = State<Arc<ApiState>>;

#[derive(OpenApi)]
#[openapi(
    info(title = "sesame", description = "Write API of a sesame site: accounts, sites, documents, moderation."),
    modifiers(&Bearer),
    tags(
        (name = "accounts", description = "Sign-up"),
        (name = "sites", description = "One site per account, at /{handle}/"),
        (name = "documents", description = "Documents of any collection, owner-checked"),
        (name = "drafts", description = "Drafts, scheduled publishing and preview links"),
        (name = "admin", description = "Moderation (admin token)"),
        (name = "changes", description = "Where a change is on its way to the site"),
        (name = "media", description = "Image uploads"),
    )
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The `/api` routes; uploads take bodies up to `upload_limit` bytes.
pub(crate) fn api(upload_limit: usize) -> OpenApiRouter<Arc<ApiState>> {
    let api = OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(get_site, put_site, patch_site))
        .routes(routes!(build_site))
        .routes(routes!(invalidate_site))
        .routes(routes!(site_versions))
        .routes(routes!(rollback_site))
        .routes(routes!(get_doc, put_doc, patch_doc, delete_doc))
        .routes(routes!(takedown))
        .routes(routes!(restore))
        .routes(routes!(flag))
        .routes(routes!(moderate))
        .routes(routes!(change))
        .routes(routes!(crate::drafts::preview_site))
        .routes(routes!(crate::drafts::preview_doc))
        .routes(routes!(
            crate::drafts::get_draft,
            crate::drafts::put_draft,
            crate::drafts::patch_draft,
            crate::drafts::delete_draft
        ))
        .routes(routes!(crate::drafts::publish_draft))
        .routes(routes!(crate::drafts::get_schedule, crate::drafts::put_schedule))
        .routes(routes!(crate::drafts::add_link, crate::drafts::links))
        .routes(routes!(crate::drafts::revoke_link))
        .routes(routes!(crate::drafts::shared_preview))
        .routes(routes!(crate::drafts::export_site))
        .routes(routes!(crate::domains::list_domains, crate::domains::attach_domain))
        .routes(routes!(crate::domains::check_domain))
        .routes(routes!(crate::domains::detach_domain));
    // Images are larger than any JSON body: their own limit.
    let uploads = OpenApiRouter::new()
        .routes(routes!(crate::drafts::upload_media))
        .routes(routes!(crate::drafts::import_site))
        .layer(axum::extract::DefaultBodyLimit::max(upload_limit));
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api", api.merge(uploads))
}

// ---------------------------------------------------------------- responses

/// A write was accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The change id (to poll at `/api/changes/{id}`), absent when nothing changed.
    change: Option<i64>,
    /// `queued`, or `unchanged` when the write changed nothing.
    status: &'static str,
}

pub(crate) fn accepted(state: &ApiState, result: WriteResult) -> Response {
    if result.event.is_some() {
        state.accepted();
    }
    match result.event {
        Some(id) => (
            StatusCode::ACCEPTED,
            [(header::LOCATION, format!("/api/changes/{id}"))],
            Json(Accepted { change: Some(id), status: "queued" }),
        )
            .into_response(),
        None => (StatusCode::OK, Json(Accepted { change: None, status: "unchanged" })).into_response(),
    }
}

/// A document as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocOut {
    collection: String,
    id: String,
    owner: Option<String>,
    /// `live` or `removed`.
    status: &'static str,
    flags: Vec<String>,
    /// RFC 3339.
    created: String,
    /// RFC 3339.
    updated: String,
    /// The user fields.
    #[schema(value_type = Object)]
    doc: Fields,
}

impl From<&Document> for DocOut {
    fn from(d: &Document) -> DocOut {
        DocOut {
            collection: d.key.collection.to_string(),
            id: d.key.id.to_string(),
            owner: d.owner.as_deref().map(str::to_string),
            status: d.status.as_str(),
            flags: d.flags.clone(),
            created: sesame_model::time::rfc3339(d.created),
            updated: sesame_model::time::rfc3339(d.updated),
            doc: d.data.to_map(),
        }
    }
}

// ---------------------------------------------------------------- accounts

/// The client address, when the server records it.
pub(crate) struct ClientIp(pub Option<IpAddr>);

impl<T: Send + Sync> FromRequestParts<T> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &T) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}

/// Sign-up request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    /// Lowercase letters, digits and inner hyphens, 1-63 characters.
    handle: String,
}

/// A new account and its token, shown only this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedUp {
    handle: String,
    /// Send as `Authorization: Bearer TOKEN`. Store it: it cannot be shown again.
    token: String,
}

/// Creates an account and returns its token.
#[utoipa::path(post, path = "/accounts", tag = "accounts", request_body = SignUp, responses(
    (status = 201, body = SignedUp), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn sign_up(
    State(state): S,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<SignUp>,
) -> Result<Response, ApiError> {
    let handle = handle(&body.handle).map_err(|e| e.field("handle"))?.to_string();
    state.handle_available(&handle)?;
    state.charge_signup(ip)?;
    let token = new_token()?;
    let sites = state.project.site.config.api.sites.as_deref();
    match state
        .project
        .store
        .create_account(&handle, Role::User, Credential::Token(&token_hash(&token).to_hex()), sites)
        .await?
    {
        Registration::Created(_) => Ok((StatusCode::CREATED, Json(SignedUp { handle, token })).into_response()),
        Registration::Taken => Err(ApiError::conflict("handle", format!("handle {handle:?} is taken"))),
        Registration::OwnsContent => Err(ApiError::conflict(
            "handle",
            format!("handle {handle:?} names existing content; the operator can hand it over (sesame accounts claim)"),
        )),
    }
}

// ---------------------------------------------------------------- sites

/// The latest saved state of my site (published or not yet).
#[utoipa::path(get, path = "/sites/{handle}", tag = "sites", security(("token" = [])),
    params(("handle" = String, Path)), responses((status = 200, body = DocOut), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_site(
    State(state): S,
    Caller(actor): Caller,
    ApiPath(h): ApiPath<String>,
) -> Result<Json<DocOut>, ApiError> {
    let key = site_key(&state, &h)?;
    own_site(&actor, &h)?;
    let doc =
        sesame_engine::read(&state.project, &actor, &key).await?.ok_or_else(|| ApiError::not_found("no site yet"))?;
    Ok(Json(DocOut::from(doc.as_ref())))
}

/// Replaces my site document; published after the quiet period.
#[utoipa::path(put, path = "/sites/{handle}", tag = "sites", security(("token" = [])), params(("handle" = String, Path)),
    request_body(content = Object, description = "The site's fields"), responses(
    (status = 202, body = Accepted), (status = 200, body = Accepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn put_site(
    State(state): S,
    Caller(actor): Caller,
    ApiPath(h): ApiPath<String>,
    JsonBody(fields): JsonBody<Fields>,
) -> Result<Response, ApiError> {
    let key = site_key(&state, &h)?;
    own_site(&actor, &h)?;
    state.charge(&actor)?;
    let result = sesame_engine::write(&state.project, &actor, &key, Op::Put(fields), state.debounce()).await?;
    Ok(accepted(&state, result))
}

/// Merges fields into my site document (JSON merge patch: null removes a field).
#[utoipa::path(patch, path = "/sites/{handle}", tag = "sites", security(("token" = [])), params(("handle" = String, Path)),
    request_body(content = Object, description = "Fields to change"), responses(
    (status = 202, body = Accepted), (status = 200, body = Accepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn patch_site(
    State(state): S,
    Caller(actor): Caller,
    ApiPath(h): ApiPath<String>,
    JsonBody(patch): JsonBody<Fields>,
) -> Result<Response, ApiError> {
    let key = site_key(&state, &h)?;
    own_site(&actor, &h)?;
    state.charge(&actor)?;
    let result = sesame_engine::write(&state.project, &actor, &key, Op::Patch(patch), state.debounce()).await?;
    Ok(accepted(&state, result))
}

/// How many pending changes a build made due.
#[derive(Debug, Serialize, ToSchema)]
pub struct Forced {
    /// Pending events now due.
    pending: u64,
}

/// Publishes my pending changes now, without waiting for the quiet period.
#[utoipa::path(post, path = "/sites/{handle}/build", tag = "sites", security(("token" = [])), params(("handle" = String, Path)),
    responses((status = 202, body = Forced), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn build_site(State(state): S, Caller(actor): Caller, ApiPath(h): ApiPath<String>) -> Result<Response, ApiError> {
    let key = site_key(&state, &h)?;
    own_site(&actor, &h)?;
    state.charge(&actor)?;
    let pending = state.project.store.force_due(&[key]).await?;
    state.publisher.wake();
    Ok((StatusCode::ACCEPTED, Json(Forced { pending })).into_response())
}

/// URLs sent to the CDN for purging.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invalidated {
    urls: usize,
}

/// Purges my site's URLs (and its cache tag) at the CDN.
#[utoipa::path(post, path = "/sites/{handle}/invalidate", tag = "sites", security(("token" = [])), params(("handle" = String, Path)),
    responses((status = 202, body = Invalidated), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn invalidate_site(
    State(state): S,
    Caller(actor): Caller,
    ApiPath(h): ApiPath<String>,
) -> Result<Response, ApiError> {
    let key = site_key(&state, &h)?;
    own_site(&actor, &h)?;
    state.charge_invalidation(&actor)?;
    let purger = state
        .purger
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "no CDN purge is configured ([purge] in sesame.toml)"))?;
    let site = &state.project.site;
    let prefix = format!("/{h}/");
    let (_, table) = sesame_engine::manifest::published(&state.project).await?;
    let urls: Vec<String> = table.into_keys().filter(|p| p.starts_with(&prefix)).map(|p| site.absolute(&p)).collect();
    let n = urls.len();
    purger.purge(PurgeJob { generation: 0, urls, tags: vec![format!("doc:{key}")] });
    Ok((StatusCode::ACCEPTED, Json(Invalidated { urls: n })).into_response())
}

/// A published version of a site.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionOut {
    generation: u64,
    /// When it was published (RFC 3339).
    published_at: String,
    /// `live`, `removed` or `deleted`.
    state: &'static str,
    /// The site's name (its title field) in that version.
    title: Option<String>,
}

/// Lists the published versions of my site, newest first.
#[utoipa::path(get, path = "/sites/{handle}/versions", tag = "sites", security(("token" = [])), params(("handle" = String, Path)),
    responses((status = 200, body = Vec<VersionOut>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn site_versions(
    State(state): S,
    Caller(actor): Caller,
    ApiPath(h): ApiPath<String>,
) -> Result<Json<Vec<VersionOut>>, ApiError> {
    let key = site_key(&state, &h)?;
    own_site(&actor, &h)?;
    let versions = state.project.store.versions(&key, 200).await?;
    let site = &state.project.site;
    Ok(Json(
        versions
            .into_iter()
            .map(|v| VersionOut {
                generation: v.generation,
                published_at: sesame_model::time::rfc3339(v.created),
                state: match &v.doc {
                    None => "deleted",
                    Some(d) if d.status == Status::Removed => "removed",
                    Some(_) => "live",
                },
                title: v.doc.as_ref().map(|d| site.title(d).to_string()),
            })
            .collect(),
    ))
}

/// Which version to return to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackTo {
    /// A generation listed by `versions`.
    #[serde(deserialize_with = "integer")]
    generation: u64,
}

/// A non-negative integer as JSON Schema counts them: `7` and `7.0` alike.
pub(crate) fn integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    match (n.as_u64(), n.as_f64()) {
        (Some(n), _) => Ok(n),
        // Integral and exactly representable: below 2^53.
        (None, Some(f)) if f.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(&f) => Ok(f as u64),
        _ => Err(serde::de::Error::custom(format!("expected a non-negative integer, got {n}"))),
    }
}

/// Returns my site to the version a generation published, as a new change
/// (roll forward by rolling back to a later generation).
#[utoipa::path(post, path = "/sites/{handle}/rollback", tag = "sites", security(("token" = [])), params(("handle" = String, Path)),
    request_body = RollbackTo, responses((status = 202, body = Accepted), (status = 200, body = Accepted),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rollback_site(
    State(state): S,
    Caller(actor): Caller,
    ApiPath(h): ApiPath<String>,
    JsonBody(to): JsonBody<RollbackTo>,
) -> Result<Response, ApiError> {
    let key = site_key(&state, &h)?;
    own_site(&actor, &h)?;
    state.charge(&actor)?;
    let event = sesame_engine::rollback(&state.project, &actor, &key, to.generation).await.map_err(|e| match e {
        sesame_engine::WriteError::NotFound(m) => ApiError::not_found(m).field("generation"),
        other => other.into(),
    })?;
    Ok(accepted(&state, WriteResult { event, doc: None }))
}

// ---------------------------------------------------------------- documents

/// A document I own.
#[utoipa::path(get, path = "/collections/{collection}/docs/{id}", tag = "documents", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = DocOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn get_doc(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
) -> Result<Json<DocOut>, ApiError> {
    let key = path_doc_key(&state.project.site, &c, &id)?;
    let doc = sesame_engine::read(&state.project, &actor, &key)
        .await?
        .ok_or_else(|| ApiError::not_found("no such document"))?;
    Ok(Json(DocOut::from(doc.as_ref())))
}

/// Creates or replaces a document (I become the owner of a new one).
#[utoipa::path(put, path = "/collections/{collection}/docs/{id}", tag = "documents", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)), request_body(content = Object, description = "The user fields"),
    responses((status = 202, body = Accepted), (status = 200, body = Accepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn put_doc(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
    JsonBody(fields): JsonBody<Fields>,
) -> Result<Response, ApiError> {
    let key = path_doc_key(&state.project.site, &c, &id)?;
    state.charge(&actor)?;
    let result = sesame_engine::write(&state.project, &actor, &key, Op::Put(fields), state.debounce()).await?;
    Ok(accepted(&state, result))
}

/// Merges fields into a document I own.
#[utoipa::path(patch, path = "/collections/{collection}/docs/{id}", tag = "documents", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)), request_body(content = Object, description = "Fields to change"),
    responses((status = 202, body = Accepted), (status = 200, body = Accepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn patch_doc(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
    JsonBody(patch): JsonBody<Fields>,
) -> Result<Response, ApiError> {
    let key = path_doc_key(&state.project.site, &c, &id)?;
    state.charge(&actor)?;
    let result = sesame_engine::write(&state.project, &actor, &key, Op::Patch(patch), state.debounce()).await?;
    Ok(accepted(&state, result))
}

/// Deletes a document I own.
#[utoipa::path(delete, path = "/collections/{collection}/docs/{id}", tag = "documents", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)),
    responses((status = 202, body = Accepted), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn delete_doc(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let key = path_doc_key(&state.project.site, &c, &id)?;
    state.charge(&actor)?;
    let result = sesame_engine::write(&state.project, &actor, &key, Op::Delete, state.debounce()).await?;
    Ok(accepted(&state, result))
}

// ---------------------------------------------------------------- admin

/// A document to moderate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    collection: String,
    id: String,
}

/// A flag to set or clear.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagIn {
    collection: String,
    id: String,
    /// E.g. `adult`.
    flag: String,
    value: bool,
}

fn admin_only(actor: &Actor) -> Result<(), ApiError> {
    if actor.admin { Ok(()) } else { Err(ApiError::forbidden("this is for admins")) }
}

async fn moderate_one(
    state: &ApiState,
    actor: &Actor,
    collection: &str,
    id: &str,
    op: Op,
) -> Result<Response, ApiError> {
    admin_only(actor)?;
    let key = doc_key(&state.project.site, collection, id)?;
    let result = sesame_engine::write(&state.project, actor, &key, op, Debounce::NONE).await?;
    Ok(accepted(state, result))
}

/// Takes a document down: its page answers 410 and it leaves every listing.
#[utoipa::path(post, path = "/admin/takedown", tag = "admin", security(("token" = [])), request_body = Target,
    responses((status = 202, body = Accepted), (status = 200, body = Accepted), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn takedown(State(state): S, Caller(actor): Caller, JsonBody(t): JsonBody<Target>) -> Result<Response, ApiError> {
    moderate_one(&state, &actor, &t.collection, &t.id, Op::Takedown).await
}

/// Restores a taken-down document.
#[utoipa::path(post, path = "/admin/restore", tag = "admin", security(("token" = [])), request_body = Target,
    responses((status = 202, body = Accepted), (status = 200, body = Accepted), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn restore(State(state): S, Caller(actor): Caller, JsonBody(t): JsonBody<Target>) -> Result<Response, ApiError> {
    moderate_one(&state, &actor, &t.collection, &t.id, Op::Restore).await
}

/// Sets or clears a flag (`adult` gates the page and marks it noindex).
#[utoipa::path(post, path = "/admin/flag", tag = "admin", security(("token" = [])), request_body = FlagIn,
    responses((status = 202, body = Accepted), (status = 200, body = Accepted), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn flag(State(state): S, Caller(actor): Caller, JsonBody(f): JsonBody<FlagIn>) -> Result<Response, ApiError> {
    moderate_one(&state, &actor, &f.collection, &f.id, Op::Flag(f.flag, f.value)).await
}

/// Bulk moderation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModerateIn {
    collection: String,
    /// Ids to take down.
    #[serde(default)]
    removed: Vec<String>,
    /// Ids to flag as adult.
    #[serde(default)]
    adult: Vec<String>,
}

/// What a bulk moderation did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Moderated {
    changed: usize,
    unchanged: usize,
    /// Ids that do not exist (skipped).
    missing: usize,
}

/// Takes down and flags many documents as one batch, published at once.
#[utoipa::path(post, path = "/admin/moderate", tag = "admin", security(("token" = [])), request_body = ModerateIn,
    responses((status = 202, body = Moderated), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn moderate(
    State(state): S,
    Caller(actor): Caller,
    JsonBody(m): JsonBody<ModerateIn>,
) -> Result<Response, ApiError> {
    admin_only(&actor)?;
    state.project.site.declares(&m.collection).map_err(|e| ApiError::invalid("collection", e.to_string()))?;
    let file: Arc<str> = Arc::from("request");
    let mut events = Vec::new();
    for (i, id) in m.removed.iter().enumerate() {
        doc_key(&state.project.site, &m.collection, id).map_err(|e| e.field(format!("removed[{i}]")))?;
        events.push(Event::Takedown { collection: m.collection.clone(), id: id.clone().into() });
    }
    for (i, id) in m.adult.iter().enumerate() {
        doc_key(&state.project.site, &m.collection, id).map_err(|e| e.field(format!("adult[{i}]")))?;
        let (collection, id) = (m.collection.clone(), id.clone().into());
        events.push(Event::Flag { collection, id, flag: sesame_model::FLAG_ADULT.into(), value: true });
    }
    let located: Vec<Located> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Located { file: file.clone(), line: i as u64 + 1, event })
        .collect();
    let n = sesame_engine::ingest(&state.project, &located, By::Actor(&actor), Missing::Skip, Debounce::NONE).await?;
    state.publisher.wake();
    Ok((StatusCode::ACCEPTED, Json(Moderated { changed: n.written, unchanged: n.unchanged, missing: n.missing }))
        .into_response())
}

// ---------------------------------------------------------------- changes

/// Where a change is.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeOut {
    id: i64,
    /// `queued`, `building`, `published` or `failed`.
    status: &'static str,
    collection: String,
    #[serde(rename = "doc_id")]
    doc: String,
    /// The generation that published it.
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    /// The document's page URLs (once published).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    urls: Vec<String>,
    /// The same pages as they were in that generation (immutable URLs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    versioned_urls: Vec<String>,
    /// Why publishing failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The site-relative paths of `urls` (the dashboard links to them).
    #[serde(skip)]
    pub(crate) paths: Vec<String>,
}

/// The status of one of my changes.
#[utoipa::path(get, path = "/changes/{id}", tag = "changes", security(("token" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = ChangeOut), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn change(
    State(state): S,
    Caller(actor): Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<ChangeOut>, ApiError> {
    change_status(&state, &actor, id).await.map(Json)
}

/// Where one of `actor`'s changes is (another account's is "no such change").
pub(crate) async fn change_status(state: &ApiState, actor: &Actor, id: i64) -> Result<ChangeOut, ApiError> {
    state.charge_status_read(actor)?;
    let served = state.served.as_ref().map(|served| served());
    let status = sesame_engine::change_status(&state.project, actor, id, &state.publisher, served)
        .await?
        .ok_or_else(|| ApiError::not_found("no such change"))?;
    let site = &state.project.site;
    let versioned = match status.generation {
        Some(g) if site.config.serve.versioned_urls => {
            status.paths.iter().map(|p| site.absolute(&format!("{p}?v={g}"))).collect()
        }
        _ => Vec::new(),
    };
    Ok(ChangeOut {
        id,
        status: status.stage.name(),
        collection: status.key.collection.to_string(),
        doc: status.key.id.to_string(),
        generation: status.generation,
        urls: status.paths.iter().map(|p| site.absolute(p)).collect(),
        versioned_urls: versioned,
        error: status.error,
        paths: status.paths,
    })
}

// ---------------------------------------------------------------- operations

/// What the operations endpoints need.
pub(crate) struct Ops {
    pub project: Arc<sesame_engine::Project>,
    pub metrics: Option<crate::MetricsRender>,
}

/// Liveness and the state of the queue.
pub(crate) async fn healthz(State(state): State<Arc<Ops>>) -> Response {
    let store = &state.project.store;
    match (store.latest_generation().await, store.pending_events().await) {
        (Ok(generation), Ok(pending)) => {
            Json(serde_json::json!({ "status": "ok", "generation": generation, "pending": pending })).into_response()
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "unavailable" }))).into_response()
        }
    }
}

/// Prometheus text format.
pub(crate) async fn metrics(State(state): State<Arc<Ops>>) -> Response {
    match &state.metrics {
        Some(render) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render()).into_response(),
        None => ApiError::not_found("metrics are not enabled").into_response(),
    }
}

/// Unknown API path.
pub(crate) async fn api_not_found() -> ApiError {
    ApiError::not_found("no such API endpoint (see /api/openapi.json)")
}
