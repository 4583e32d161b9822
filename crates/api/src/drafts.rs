//! Content before it is published: previews of a draft and image uploads.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sesame_engine::Actor;
use sesame_model::{Media, Op};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::auth::own_site;
use crate::error::{ApiError, ErrorBody};
use crate::input::{ApiPath, JsonBody, doc_key};
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
    let key = doc_key(&state.project.site, &c, &id)?;
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
    use axum::body::HttpBody;
    // The data of the next frame (trailers count as empty).
    async fn next(body: &mut axum::body::Body) -> Option<Result<Bytes, axum::Error>> {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await;
        frame.map(|f| f.map(|f| f.into_data().unwrap_or_default()))
    }
    let mut kept = bytes::BytesMut::new();
    while let Some(frame) = next(&mut body).await {
        let data = frame.ok()?;
        if kept.len() + data.len() > limit {
            let drain = async {
                let mut dropped = 0;
                while dropped < DRAIN_BYTES {
                    match next(&mut body).await {
                        Some(Ok(data)) => dropped += data.len(),
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            return None;
        }
        kept.extend_from_slice(&data);
    }
    Some(kept.freeze())
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
