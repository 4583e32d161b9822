//! Content before it is published: previews of a draft and image uploads.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::Serialize;
use sesame_engine::Actor;
use sesame_model::{Media, Op};
use sesame_store::{DraftRow, PreviewLinkRow, ScheduleAction, ScheduleRow};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::auth::own_site;
use crate::error::{ApiError, ErrorBody};
use crate::input::{ApiPath, JsonBody, from_object, path_doc_key};
use crate::input::{Fields, site_key};

type S = State<Arc<ApiState>>;

/// A preview may show images and style, never run script, never be indexed
/// or cached, and only be framed by the site itself (the dashboard).
const PREVIEW_CSP: &str = "default-src 'none'; img-src 'self' data: https:; style-src 'self' 'unsafe-inline'; \
font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'";

pub(crate) fn html(bytes: Vec<u8>) -> Response {
    metrics::counter!("sesame_previews_total").increment(1);
    let mut r = (StatusCode::OK, bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    h.insert("content-security-policy", HeaderValue::from_static(PREVIEW_CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

/// The page my site would publish with these fields, rendered exactly as
/// publishing would, with nothing written anywhere.
#[utoipa::path(post, path = "/preview/sites/{handle}", tag = "sites", security(("token" = [])),
    params(("handle" = String, Path)), request_body(content = Object, description = "The site's draft fields"),
    responses((status = 200, description = "The page, as HTML", content_type = "text/html"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn preview_site(
    State(state): S,
    Caller(actor): Caller,
    ApiPath(h): ApiPath<String>,
    JsonBody(fields): JsonBody<Fields>,
) -> Result<Response, ApiError> {
    let key = site_key(&state, &h)?;
    own_site(&actor, &h)?;
    state.charge_preview(&actor, &fields)?;
    let page = sesame_engine::preview(&state.project, &actor, &key, Op::Put(fields)).await?;
    Ok(html(page))
}

/// The page a document would publish with these fields, rendered exactly as
/// publishing would, with nothing written anywhere.
#[utoipa::path(post, path = "/preview/collections/{collection}/docs/{id}", tag = "documents", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)), request_body(content = Object, description = "The draft fields"),
    responses((status = 200, description = "The page, as HTML", content_type = "text/html"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn preview_doc(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
    JsonBody(fields): JsonBody<Fields>,
) -> Result<Response, ApiError> {
    let key = path_doc_key(&state.project.site, &c, &id)?;
    state.charge_preview(&actor, &fields)?;
    let page = sesame_engine::preview(&state.project, &actor, &key, Op::Put(fields)).await?;
    Ok(html(page))
}

/// Most bytes read and dropped after an upload went past its limit, and for
/// how long, so that a client still sending reads the 413 rather than a
/// reset connection (what nginx calls a lingering close).
const DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The body, if it holds at most `limit` bytes; past that, the rest is
/// drained within [`DRAIN_BYTES`] and [`DRAIN_TIME`] and `None` returned
/// (also when the client breaks off: nobody reads that answer).
pub(crate) async fn read_upload(mut body: axum::body::Body, limit: usize) -> Option<Bytes> {
    let mut kept = bytes::BytesMut::new();
    while let Some(frame) = next_data(&mut body).await {
        let data = frame.ok()?;
        if kept.len() + data.len() > limit {
            drain(&mut body).await;
            return None;
        }
        kept.extend_from_slice(&data);
    }
    Some(kept.freeze())
}

/// The data of a body's next frame (trailers count as empty).
async fn next_data(body: &mut axum::body::Body) -> Option<Result<Bytes, axum::Error>> {
    use axum::body::HttpBody;
    let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await;
    frame.map(|f| f.map(|f| f.into_data().unwrap_or_default()))
}

/// Reads and drops what is left of a refused upload, up to [`DRAIN_BYTES`]
/// for at most [`DRAIN_TIME`], so that a client still sending reads the
/// answer instead of a reset connection.
async fn drain(body: &mut axum::body::Body) {
    let drain = async {
        let mut dropped = 0;
        while dropped < DRAIN_BYTES {
            match next_data(body).await {
                Some(Ok(data)) => dropped += data.len(),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

/// An uploaded image.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    /// What a document field of `format: media` holds: `HASH.EXT`.
    #[serde(rename = "ref")]
    pub(crate) reference: String,
    /// Blake3 of the stored bytes (metadata stripped).
    hash: String,
    /// Where it is served (immutable).
    url: String,
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
    #[serde(rename = "type")]
    content_type: &'static str,
    width: u32,
    height: u32,
    /// Stored bytes.
    size: u64,
    /// Resized copies (WebP), made shortly after the upload; until then each
    /// redirects to the original.
    variants: Vec<String>,
}

/// Uploads an image: PNG, JPEG, GIF or WebP, recognised by its bytes, with
/// its metadata (EXIF, GPS, comments) removed. The body is the image itself
/// (any `Content-Type`) or `multipart/form-data` with a `file` field.
#[utoipa::path(post, path = "/media", tag = "media", security(("token" = [])),
    request_body(content(
        (Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/gif"), (Vec<u8> = "image/webp")
    ), description = "The image (or multipart/form-data with a `file` field)"),
    responses((status = 201, body = Uploaded), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
    (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn upload_media(
    State(state): S,
    Caller(actor): Caller,
    request: Request,
) -> Result<Response, ApiError> {
    state.charge_upload(&actor)?;
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("multipart/form-data"));
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the file is too large").field("file");
    let bytes = if multipart {
        let mut form = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the form: {}", e.body_text())))?;
        let mut file = None;
        while let Some(field) =
            form.next_field().await.map_err(|e| ApiError::bad_request(format!("cannot read the form: {e}")))?
        {
            if field.name() == Some("file") {
                file = Some(field.bytes().await.map_err(|_| too_large())?);
                break;
            }
        }
        file.ok_or_else(|| ApiError::invalid("file", "the form has no \"file\" field"))?
    } else {
        let limit = state.project.site.config.media.max_bytes;
        read_upload(request.into_body(), limit).await.ok_or_else(too_large)?
    };
    Ok((StatusCode::CREATED, Json(store_upload(&state, &actor, bytes).await?)).into_response())
}

/// Stores an uploaded image for `actor` (limits checked by the caller).
pub(crate) async fn store_upload(state: &ApiState, actor: &Actor, bytes: Bytes) -> Result<Uploaded, ApiError> {
    let row = sesame_engine::media::upload(&state.project, actor.account, bytes).await?;
    state.publisher.wake(); // its variants
    let info = Media { format: row.format, width: row.width, height: row.height };
    let url = |variant| format!("/{}", sesame_model::media::media_key(&row.hash, row.format, variant));
    Ok(Uploaded {
        reference: row.reference(),
        url: url(None),
        variants: info.variant_widths().map(|w| url(Some(w))).collect(),
        hash: row.hash.clone(),
        content_type: row.format.content_type(),
        width: row.width,
        height: row.height,
        size: row.size,
    })
}

// ---------------------------------------------------------------- drafts and schedules

/// When a document's draft is published, and when the document is taken off
/// the site (RFC 3339; absent: not scheduled).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ScheduleOut {
    publish_at: Option<String>,
    unpublish_at: Option<String>,
    /// Why the scheduled publish was refused when it fell due (it no longer is due).
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_error: Option<String>,
    /// Why the scheduled unpublish was refused when it fell due.
    #[serde(skip_serializing_if = "Option::is_none")]
    unpublish_error: Option<String>,
}

impl ScheduleOut {
    fn of(rows: &[ScheduleRow]) -> ScheduleOut {
        let mut out = ScheduleOut::default();
        for r in rows {
            let (at, error) = match r.action {
                ScheduleAction::Publish => (&mut out.publish_at, &mut out.publish_error),
                ScheduleAction::Unpublish => (&mut out.unpublish_at, &mut out.unpublish_error),
            };
            *at = Some(sesame_model::time::rfc3339_ms(r.due));
            error.clone_from(&r.error);
        }
        out
    }
}

/// A document's draft: fields saved and not published.
#[derive(Debug, Serialize, ToSchema)]
pub struct DraftOut {
    collection: String,
    id: String,
    /// When it was last saved (RFC 3339).
    updated: String,
    /// The draft's user fields.
    #[schema(value_type = Object)]
    doc: Fields,
    schedule: ScheduleOut,
}

fn draft_out(draft: DraftRow, schedules: &[ScheduleRow]) -> DraftOut {
    DraftOut {
        collection: draft.key.collection.to_string(),
        id: draft.key.id.to_string(),
        updated: sesame_model::time::rfc3339_ms(draft.updated),
        doc: draft.data,
        schedule: ScheduleOut::of(schedules),
    }
}

/// The draft of a document I own (or may create).
#[utoipa::path(get, path = "/collections/{collection}/docs/{id}/draft", tag = "drafts", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = DraftOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_draft(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
) -> Result<Json<DraftOut>, ApiError> {
    let key = path_doc_key(&state.project.site, &c, &id)?;
    let found = sesame_engine::drafts::draft_state(&state.project, &actor, &key).await?;
    let draft = found.draft.ok_or_else(|| ApiError::not_found(format!("{key} has no draft")))?;
    Ok(Json(draft_out(draft, &found.schedules)))
}

/// Saves a draft of a document: checked as a put of these fields would be,
/// and never published until published (`POST …/draft/publish`) or
/// scheduled (`PUT …/schedule`).
#[utoipa::path(put, path = "/collections/{collection}/docs/{id}/draft", tag = "drafts", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)), request_body(content = Object, description = "The user fields"),
    responses((status = 200, body = DraftOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn put_draft(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
    JsonBody(fields): JsonBody<Fields>,
) -> Result<Json<DraftOut>, ApiError> {
    save_draft(&state, &actor, &c, &id, Op::Put(fields)).await
}

/// Merges fields into a document's draft (or, with no draft yet, into the
/// document's fields): JSON merge patch, `null` removes a field.
#[utoipa::path(patch, path = "/collections/{collection}/docs/{id}/draft", tag = "drafts", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)), request_body(content = Object, description = "Fields to change"),
    responses((status = 200, body = DraftOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn patch_draft(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
    JsonBody(patch): JsonBody<Fields>,
) -> Result<Json<DraftOut>, ApiError> {
    save_draft(&state, &actor, &c, &id, Op::Patch(patch)).await
}

async fn save_draft(state: &ApiState, actor: &Actor, c: &str, id: &str, op: Op) -> Result<Json<DraftOut>, ApiError> {
    let key = path_doc_key(&state.project.site, c, id)?;
    state.charge(actor)?;
    let draft = sesame_engine::drafts::save_draft(&state.project, actor, &key, op).await?;
    let schedules = state.project.store.schedules(&key).await?;
    Ok(Json(draft_out(draft, &schedules)))
}

/// Discards a document's draft, with its scheduled publish and its preview links.
#[utoipa::path(delete, path = "/collections/{collection}/docs/{id}/draft", tag = "drafts", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_draft(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let key = path_doc_key(&state.project.site, &c, &id)?;
    state.charge(&actor)?;
    match sesame_engine::drafts::discard_draft(&state.project, &actor, &key).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found(format!("{key} has no draft"))),
    }
}

/// Publishes a document's draft now (the draft is dropped in the same write).
#[utoipa::path(post, path = "/collections/{collection}/docs/{id}/draft/publish", tag = "drafts", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)),
    responses((status = 202, body = crate::routes::Accepted), (status = 200, body = crate::routes::Accepted), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn publish_draft(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let key = path_doc_key(&state.project.site, &c, &id)?;
    state.charge(&actor)?;
    let result = sesame_engine::drafts::publish_draft(&state.project, &actor, &key, state.debounce()).await?;
    Ok(crate::routes::accepted(&state, result))
}

/// The schedule to set: both times replace what was set (absent or `null`:
/// none of that kind).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleIn {
    /// When to publish the document's draft (RFC 3339, in the future, at most five years ahead).
    #[serde(default)]
    #[schema(format = DateTime)]
    publish_at: Option<String>,
    /// When to take the document off the site, keeping its content as its draft (RFC 3339).
    #[serde(default)]
    #[schema(format = DateTime)]
    unpublish_at: Option<String>,
}

fn parse_time(field: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    text.map(|t| {
        sesame_model::time::parse_rfc3339_ms(t).ok_or_else(|| {
            ApiError::invalid(field, format!("{field}: expected an RFC 3339 time such as 2027-01-31T09:00:00Z"))
        })
    })
    .transpose()
}

/// The schedule of a document I own.
#[utoipa::path(get, path = "/collections/{collection}/docs/{id}/schedule", tag = "drafts", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = ScheduleOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn get_schedule(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
) -> Result<Json<ScheduleOut>, ApiError> {
    let key = path_doc_key(&state.project.site, &c, &id)?;
    let found = sesame_engine::drafts::draft_state(&state.project, &actor, &key).await?;
    Ok(Json(ScheduleOut::of(&found.schedules)))
}

/// Schedules a document: its draft published at `publish_at`, the document
/// taken off the site at `unpublish_at`. The publisher lands each on time,
/// once, through restarts.
#[utoipa::path(put, path = "/collections/{collection}/docs/{id}/schedule", tag = "drafts", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)), request_body = ScheduleIn,
    responses((status = 200, body = ScheduleOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn put_schedule(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
    JsonBody(body): JsonBody<Fields>,
) -> Result<Json<ScheduleOut>, ApiError> {
    let body: ScheduleIn = from_object(body)?;
    let key = path_doc_key(&state.project.site, &c, &id)?;
    let request = sesame_engine::drafts::ScheduleRequest {
        publish_at: parse_time("publish_at", body.publish_at.as_deref())?,
        unpublish_at: parse_time("unpublish_at", body.unpublish_at.as_deref())?,
    };
    state.charge(&actor)?;
    let set = sesame_engine::drafts::set_schedule(&state.project, &actor, &key, request).await?;
    // The publisher's sleep ends at the earliest due time it knew of.
    state.publisher.wake();
    Ok(Json(ScheduleOut::of(&set)))
}

/// How long a new preview link works.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkIn {
    /// Seconds, from 60 to 2,592,000 (30 days); 7 days when absent.
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(value_type = Option<u64>, minimum = 60, maximum = 2_592_000)]
    expires_in: Option<u64>,
}

/// An optional non-negative integer as JSON Schema counts them (`7.0` too).
fn optional_integer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Integer(#[serde(deserialize_with = "crate::routes::integer")] u64);
    Option::<Integer>::deserialize(d).map(|n| n.map(|n| n.0))
}

/// A preview link.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkOut {
    /// Names it for revoking.
    id: String,
    /// The link to share (only when it is made: its token is not kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// RFC 3339.
    created: String,
    /// RFC 3339.
    expires: String,
}

/// Characters of a link's token hash that name it.
const LINK_ID_CHARS: usize = 16;
const LINK_TTL_DEFAULT: i64 = 7 * 24 * 3600;
const LINK_TTL_RANGE: std::ops::RangeInclusive<i64> = 60..=30 * 24 * 3600;

fn link_out(row: &PreviewLinkRow, url: Option<String>) -> LinkOut {
    LinkOut {
        id: row.hash[..LINK_ID_CHARS.min(row.hash.len())].to_string(),
        url,
        created: sesame_model::time::rfc3339(row.created),
        expires: sesame_model::time::rfc3339(row.expires),
    }
}

/// Makes a link that shows the document's draft to whoever has it, without
/// signing in, until it expires or is revoked (or the draft is published or
/// discarded). The page is `noindex` and never cached.
#[utoipa::path(post, path = "/collections/{collection}/docs/{id}/draft/links", tag = "drafts", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)), request_body = LinkIn,
    responses((status = 201, body = LinkOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn add_link(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
    JsonBody(body): JsonBody<Fields>,
) -> Result<Response, ApiError> {
    let body: LinkIn = from_object(body)?;
    let key = path_doc_key(&state.project.site, &c, &id)?;
    let ttl = body.expires_in.map_or(LINK_TTL_DEFAULT, |s| i64::try_from(s).unwrap_or(i64::MAX));
    if !LINK_TTL_RANGE.contains(&ttl) {
        return Err(ApiError::invalid("expires_in", "expires_in: from 60 seconds to 30 days (2592000)"));
    }
    state.charge(&actor)?;
    let token = crate::auth::new_token()?;
    let hash = crate::auth::token_hash(&token).to_hex().to_string();
    let row = sesame_engine::drafts::add_preview_link(&state.project, &actor, &key, hash, ttl).await?;
    let url = state.project.site.absolute(&format!("/api/previews/{token}"));
    Ok((StatusCode::CREATED, Json(link_out(&row, Some(url)))).into_response())
}

/// The preview links of a document's draft.
#[utoipa::path(get, path = "/collections/{collection}/docs/{id}/draft/links", tag = "drafts", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Vec<LinkOut>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn links(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id)): ApiPath<(String, String)>,
) -> Result<Json<Vec<LinkOut>>, ApiError> {
    let key = path_doc_key(&state.project.site, &c, &id)?;
    sesame_engine::drafts::draft_state(&state.project, &actor, &key).await?;
    let rows = state.project.store.preview_links(&key).await?;
    Ok(Json(rows.iter().map(|r| link_out(r, None)).collect()))
}

/// Revokes a preview link: it answers 404 from then on.
#[utoipa::path(delete, path = "/collections/{collection}/docs/{id}/draft/links/{link}", tag = "drafts", security(("token" = [])),
    params(("collection" = String, Path), ("id" = String, Path), ("link" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_link(
    State(state): S,
    Caller(actor): Caller,
    ApiPath((c, id, link)): ApiPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let key = path_doc_key(&state.project.site, &c, &id)?;
    sesame_engine::drafts::draft_state(&state.project, &actor, &key).await?;
    if link.len() != LINK_ID_CHARS {
        return Err(ApiError::not_found("no such link").field("link"));
    }
    match state.project.store.revoke_preview_link(&key, &link).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found("no such link").field("link")),
    }
}

/// The page a shared draft would publish, for whoever holds the link.
#[utoipa::path(get, path = "/previews/{token}", tag = "drafts", params(("token" = String, Path)),
    responses((status = 200, description = "The page, as HTML", content_type = "text/html"), (status = 404, body = ErrorBody),
    (status = 429, body = ErrorBody)))]
pub(crate) async fn shared_preview(State(state): S, ApiPath(token): ApiPath<String>) -> Result<Response, ApiError> {
    let gone = || ApiError::not_found("this preview link is unknown, expired or revoked");
    if !token.starts_with("ssm_") || token.len() > 100 {
        return Err(gone());
    }
    let hash = crate::auth::token_hash(&token).to_hex().to_string();
    // Only a live link is charged: a guessed token costs a lookup, and no
    // entry in the limiter (whose keys would otherwise be the guesser's).
    if state.project.store.preview_link(&hash, sesame_model::time::now()).await?.is_none() {
        return Err(gone());
    }
    state.charge_link_view(&hash)?;
    let page = sesame_engine::drafts::render_preview_link(&state.project, &hash).await?.ok_or_else(gone)?;
    let mut response = html(page);
    // The token is in the URL: no page it links to learns it.
    response.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(response)
}

// ---------------------------------------------------------------- archives

/// Downloads my site as one `tar.gz`: my documents in the import format
/// (`documents/{collection}.ndjson`), and under `site/` its published pages,
/// static files and images as a tree any static host serves. Made as it is
/// sent; limited per account (`[api] archives_per_hour`).
#[utoipa::path(get, path = "/sites/{handle}/export", tag = "sites", security(("token" = [])), params(("handle" = String, Path)),
    responses((status = 200, description = "The archive", content_type = "application/gzip"), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn export_site(
    State(state): S,
    Caller(actor): Caller,
    ApiPath(h): ApiPath<String>,
) -> Result<Response, ApiError> {
    site_key(&state, &h)?;
    own_site(&actor, &h)?;
    archive_response(&state, &actor, &h).await
}

/// The archive of the site of `handle` as a download, for `actor` who may
/// edit it (the API's and the dashboard's export).
pub(crate) async fn archive_response(state: &ApiState, actor: &Actor, h: &str) -> Result<Response, ApiError> {
    let key = site_key(state, h)?;
    // The site's account: the caller's, or for an admin the site's owner's.
    let account = match actor.account.filter(|_| !actor.admin) {
        Some(a) => a,
        None => state
            .project
            .store
            .document(&key)
            .await?
            .and_then(|s| s.account)
            .ok_or_else(|| ApiError::not_found(format!("{key} belongs to no account")))?,
    };
    state.charge_archive(actor)?;
    let (sink, mut chunks) = tokio::sync::mpsc::channel(4);
    let project = state.project.clone();
    let prefix = format!("/{h}/");
    tokio::spawn(async move {
        if let Err(e) = sesame_engine::archive::export_owner(&project, account, &prefix, &sink).await {
            tracing::warn!(error = %e, site = %prefix, "an export stopped");
            // The body ends in an error: the client sees a broken download, never a short archive.
            let _ = sink.send(Err(std::io::Error::other("the export stopped"))).await;
        }
    });
    let body = axum::body::Body::from_stream(futures::stream::poll_fn(move |cx| chunks.poll_recv(cx)));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let disposition = format!("attachment; filename=\"{h}.sesame.tar.gz\"");
    headers
        .insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(|e| ApiError::internal(&e))?);
    Ok(response)
}

/// Why an archive's upload was cut off.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stopped {
    /// Past `archive_max_mb`.
    TooLarge,
    /// Still arriving after `archive_upload_seconds`.
    TooSlow,
}

/// Hands the request body to a restore a frame at a time, cutting it off
/// past `limit` bytes or after `time` (the restore then reads an
/// error, and the answer says which). A restore that stopped early (a
/// refused entry) no longer reads: the rest of the body is drained for a
/// moment so that the client, still sending, reads the answer.
async fn feed_archive(
    mut body: axum::body::Body,
    limit: u64,
    time: std::time::Duration,
    source: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Option<Stopped> {
    let deadline = tokio::time::Instant::now() + time;
    let mut sent: u64 = 0;
    let cut = |why: Stopped| std::io::Error::other(format!("the upload was cut off: {why:?}"));
    loop {
        let data = match tokio::time::timeout_at(deadline, next_data(&mut body)).await {
            Err(_) => {
                let _ = source.send(Err(cut(Stopped::TooSlow))).await;
                return Some(Stopped::TooSlow);
            }
            Ok(None) => return None,
            Ok(Some(Err(e))) => {
                let _ = source.send(Err(std::io::Error::other(e))).await;
                return None;
            }
            Ok(Some(Ok(data))) => data,
        };
        sent += data.len() as u64;
        if sent > limit {
            let _ = source.send(Err(cut(Stopped::TooLarge))).await;
            drain(&mut body).await;
            return Some(Stopped::TooLarge);
        }
        if source.send(Ok(data)).await.is_err() {
            drain(&mut body).await;
            return None;
        }
    }
}

/// What a restore wrote.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportedOut {
    /// Documents written.
    documents: u64,
    /// Images stored.
    media: u64,
    /// Drafts saved.
    drafts: u64,
    /// Schedules set (one whose time passed while away lands at once).
    schedules: u64,
    /// The last change, to follow at `/api/changes/{id}`.
    change: Option<i64>,
}

/// Restores an archive made by `export` (from this sesame or another) as
/// mine: its images become my uploads, its documents, drafts and schedules
/// mine (ids kept), written together or not at all. The body is the `tar.gz`.
#[utoipa::path(post, path = "/sites/{handle}/import", tag = "sites", security(("token" = [])), params(("handle" = String, Path)),
    request_body(content((Vec<u8> = "application/gzip")), description = "The archive"),
    responses((status = 202, body = ImportedOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn import_site(
    State(state): S,
    Caller(actor): Caller,
    ApiPath(h): ApiPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    site_key(&state, &h)?;
    own_site(&actor, &h)?;
    // One restore at a time: it holds a blocking thread while it unpacks
    // and its documents until they are written.
    let _permit = state
        .importing
        .try_acquire()
        .map_err(|_| ApiError::too_many("another archive is being restored, try again in a minute", 60))?;
    state.charge_archive(&actor)?;
    let limit = state.project.site.config.api.archive_max_mb.saturating_mul(1 << 20);
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("an archive may have {limit} bytes at most"))
            .field("archive")
    };
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        drain(&mut request.into_body()).await;
        return Err(too_large());
    }
    let (source, received) = tokio::sync::mpsc::channel(4);
    let upload_time = std::time::Duration::from_secs(state.project.site.config.api.archive_upload_seconds);
    let feeding = feed_archive(request.into_body(), limit, upload_time, source);
    let restoring = sesame_engine::archive::import_owner(&state.project, &actor, received, limit.saturating_mul(2));
    let (stopped, restored) = tokio::join!(feeding, restoring);
    use sesame_engine::archive::ArchiveError;
    // What stopped the upload explains the restore's failure.
    let restored = restored.map_err(|e| match (stopped, e) {
        (Some(Stopped::TooLarge), _) => too_large(),
        (Some(Stopped::TooSlow), _) => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "the archive took too long to arrive").field("archive")
        }
        (_, e @ ArchiveError::TooLarge { .. }) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).field("archive")
        }
        (_, ArchiveError::Refused { entry, message } | ArchiveError::Media { entry, message }) => {
            ApiError::invalid(entry.clone(), format!("{entry}: {message}"))
        }
        (_, ArchiveError::Document { entry, error }) => {
            let message = format!("{entry}: {error}");
            ApiError::new(ApiError::from(*error).status(), message).field(entry)
        }
        (_, ArchiveError::Engine(e)) => e.into(),
    })?;
    state.publisher.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(ImportedOut {
            documents: restored.documents,
            media: restored.media,
            drafts: restored.drafts,
            schedules: restored.schedules,
            change: restored.change,
        }),
    )
        .into_response())
}
