//! Request input: JSON bodies with precise errors, and path parameters
//! validated before anything touches the store.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use sesame_model::DocKey;
use sesame_model::slug::validate_handle;
use sesame_site::{KeyError, Site};

use crate::ApiState;
use crate::error::ApiError;

/// A JSON body. Malformed JSON is a 400, a wrong shape a 422 naming the
/// field, a body over the size limit a 413 and another media type a 415, all
/// with a JSON error body.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json =
            req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
                ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected Content-Type: application/json"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large")
            }
            other => ApiError::bad_request(format!("cannot read the body: {other}")),
        })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut de).map(JsonBody).map_err(shape_error)
    }
}

/// A typed body read from a JSON object only (serde would also take a
/// struct from an array), with [`JsonBody`]'s errors.
pub(crate) fn from_object<T: DeserializeOwned>(fields: Fields) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(serde_json::Value::Object(fields)).map_err(shape_error)
}

/// Malformed JSON: 400; a wrong shape: 422 naming the field.
fn shape_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    let path = e.path().to_string();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::bad_request(format!("malformed JSON: {inner}"));
    }
    let err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, inner.to_string());
    if path == "." { err } else { err.field(path) }
}

/// Path parameters; a malformed one is a 400 with a JSON body.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(e) => Err(ApiError::bad_request(format!("bad path parameter: {}", e.body_text()))),
        }
    }
}

/// A handle from the path.
pub fn handle(h: &str) -> Result<&str, ApiError> {
    validate_handle(h).map_err(|m| ApiError::invalid("handle", format!("handle {h:?} {m}")))?;
    Ok(h)
}

/// A document key from the path: the collection must be declared (404
/// otherwise) and the id a valid path segment (422).
pub fn doc_key(site: &Site, collection: &str, id: &str) -> Result<DocKey, ApiError> {
    site.doc_key(collection, id).map_err(|e| match e {
        KeyError::Collection(m) => ApiError::not_found(m).field("collection"),
        KeyError::Id(m) => ApiError::invalid("id", m),
    })
}

/// [`doc_key`] of a document URL: there a site's id, which becomes its
/// owner's handle, has at most 63 characters (as the OpenAPI document says).
pub(crate) fn path_doc_key(site: &Site, collection: &str, id: &str) -> Result<DocKey, ApiError> {
    let key = doc_key(site, collection, id)?;
    if site.config.api.sites.as_deref() == Some(collection) && id.len() > 63 {
        return Err(ApiError::invalid("id", "a site's id is a handle: at most 63 characters"));
    }
    Ok(key)
}

/// A document's user fields, as sent.
pub(crate) type Fields = serde_json::Map<String, serde_json::Value>;

/// The key of the site of `handle_text` (a path parameter) in the `[api]
/// sites` collection.
pub(crate) fn site_key(state: &ApiState, handle_text: &str) -> Result<DocKey, ApiError> {
    let collection = state.project.site.config.api.sites.as_deref().ok_or_else(|| {
        ApiError::not_found("this site has no collection of account sites (set [api] sites in sesame.toml)")
    })?;
    let h = handle(handle_text)?;
    Ok(DocKey::new(collection, h))
}
