//! Turning a request into a response: lookups, redirects, conditional
//! requests, content negotiation and byte ranges.

use axum::body::Body;
use axum::http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, LOCATION, RANGE, VARY,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use sesame_model::time::{http_date, parse_http_date};
use sesame_objects::{Encoding, compress, compressible, object_key};
use sesame_store::{ObjectRow, Target, encodings};

use crate::{Entry, Router, RouterConfig};

/// Cloudflare's cache tag header.
const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");
/// Longest `Cache-Tag` value sent (Cloudflare accepts 16 KB in total).
const MAX_CACHE_TAG: usize = 8 * 1024;

/// Cache lifetimes of served pages.
#[derive(Debug, Clone)]
pub struct Caching {
    /// `max-age` of pages at their plain path.
    pub max_age: u32,
    /// `stale-while-revalidate` of pages at their plain path.
    pub stale_while_revalidate: u32,
}

impl Default for Caching {
    fn default() -> Self {
        Caching { max_age: 60, stale_while_revalidate: 600 }
    }
}

impl Caching {
    fn pointer(&self) -> String {
        format!("public, max-age={}, stale-while-revalidate={}", self.max_age, self.stale_while_revalidate)
    }
}

/// Largest body compressed on request (bigger ones are sent as stored).
const ON_REQUEST_MAX: u64 = 1024 * 1024;

/// Content-addressed URLs never change: cache them for a year.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");

/// Header values fixed by the configuration, built once.
#[derive(Debug)]
pub(crate) struct FixedHeaders {
    /// `Cache-Control` of pages at their plain path.
    pointer: HeaderValue,
    /// `Content-Security-Policy` of HTML pages.
    csp: Option<HeaderValue>,
}

impl FixedHeaders {
    pub(crate) fn new(config: &RouterConfig) -> FixedHeaders {
        FixedHeaders { pointer: header(&config.caching.pointer()), csp: config.csp.as_deref().map(header) }
    }
}

/// Header values of one entry, built on its first request and kept with it.
#[derive(Debug, Clone)]
pub(crate) struct EntryHeaders {
    content_type: HeaderValue,
    last_modified: HeaderValue,
    cache_tag: Option<HeaderValue>,
    /// `ETag` of the identity bytes (pages only).
    etag: Option<HeaderValue>,
}

impl EntryHeaders {
    fn of(entry: &Entry) -> EntryHeaders {
        let (content_type, etag) = match &entry.target {
            Target::Page { content_type, object } => {
                (content_type.as_str(), Some(header(&format!("\"{}\"", object.hash))))
            }
            _ => ("", None),
        };
        let mut tags = String::new();
        for dep in entry.deps.split(' ').filter(|d| !d.is_empty()) {
            if tags.len() + dep.len() + 1 > MAX_CACHE_TAG {
                break;
            }
            if !tags.is_empty() {
                tags.push(',');
            }
            tags.push_str(dep);
        }
        EntryHeaders {
            content_type: header(content_type),
            last_modified: header(&http_date(entry.modified)),
            cache_tag: (!tags.is_empty()).then(|| header(&tags)),
            etag,
        }
    }
}

impl Entry {
    fn headers(&self) -> &EntryHeaders {
        self.headers.get_or_init(|| EntryHeaders::of(self))
    }
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

fn redirect(to: &str, query: Option<&str>) -> Response {
    let location = match query {
        Some(q) => format!("{to}?{q}"),
        None => to.to_string(),
    };
    let mut r = plain(StatusCode::MOVED_PERMANENTLY, "Moved Permanently\n");
    r.headers_mut().insert(LOCATION, header(&location));
    r
}

/// In host mode, the site a request's host names: `HANDLE.SUFFIX` → `HANDLE`.
fn host_site<'h>(router: &Router, headers: &'h HeaderMap) -> Option<&'h str> {
    let suffix = router.config.host_suffix.as_deref()?;
    let host = headers.get(axum::http::header::HOST)?.to_str().ok()?;
    let host =
        host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    let handle = host.strip_suffix(suffix)?.strip_suffix('.')?;
    let valid = !handle.is_empty() && handle.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then_some(handle)
}

/// The generation asked for with `?v=N`, if any.
fn version(uri: &Uri) -> Option<u64> {
    uri.query()?.split('&').find_map(|kv| kv.strip_prefix("v=")).and_then(|v| v.parse().ok())
}

pub(crate) async fn respond(router: &Router, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let mut response = route(router, method, uri, headers).await;
    // In host mode, a redirect within the requested site is relative to its host.
    if let Some(handle) = host_site(router, headers)
        && let Some(location) = response.headers().get(LOCATION).and_then(|v| v.to_str().ok())
        && let Some(rest) = location.strip_prefix(&format!("/{handle}/"))
    {
        let local = format!("/{rest}");
        response.headers_mut().insert(LOCATION, header(&local));
    }
    let html =
        response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("text/html"));
    if html && let Some(csp) = &router.fixed.csp {
        response.headers_mut().insert("content-security-policy", csp.clone());
    }
    response
}

async fn route(router: &Router, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let head = *method == Method::HEAD;
    if !head && *method != Method::GET {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let hosted;
    let path = match host_site(router, headers) {
        Some(handle) => {
            hosted = format!("/{handle}{}", uri.path());
            hosted.as_str()
        }
        None => uri.path(),
    };
    if router.config.versioned_urls
        && let Some(generation) = version(uri)
    {
        return match router.store.pointer_at(path, generation).await {
            Ok(Some(p)) => match &p.target {
                Target::Page { object, content_type } => {
                    send_object(router, StatusCode::OK, object, content_type, IMMUTABLE, None, headers, head, None)
                        .await
                }
                Target::Redirect(to) => redirect(to, uri.query()),
                Target::Gone => error_page(router, StatusCode::GONE, head).await,
                Target::Removed => error_page(router, StatusCode::NOT_FOUND, head).await,
            },
            Ok(None) => error_page(router, StatusCode::NOT_FOUND, head).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot read pointer history");
                plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n")
            }
        };
    }
    if let Some(hash) = path.strip_prefix("/_v/") {
        return match router.table.object(hash) {
            Some((object, content_type)) => {
                send_object(router, StatusCode::OK, &object, &content_type, IMMUTABLE, None, headers, head, None).await
            }
            None => error_page(router, StatusCode::NOT_FOUND, head).await,
        };
    }
    let on_request = uri.query().is_some_and(|q| q.contains("after=")) || path.ends_with("/feed.json");
    if on_request
        && let Some(dynamic) = &router.dynamic
        && let Some(page) = dynamic.page(path, uri.query()).await
    {
        let entry = Entry::new(
            Target::Page { object: page.object.clone(), content_type: page.content_type.clone() },
            page.deps.clone(),
            page.modified,
        );
        let cc = router.fixed.pointer.clone();
        let (object, content_type) = (&page.object, &page.content_type);
        return send_object(router, StatusCode::OK, object, content_type, cc, Some(&entry), headers, head, page.inline)
            .await;
    }
    match router.table.get(path) {
        Some(entry) => match &entry.target {
            Target::Page { object, content_type } => {
                let cc = router.fixed.pointer.clone();
                send_object(router, StatusCode::OK, object, content_type, cc, Some(&entry), headers, head, None).await
            }
            Target::Redirect(to) => redirect(to, uri.query()),
            Target::Gone => error_page(router, StatusCode::GONE, head).await,
            Target::Removed => error_page(router, StatusCode::NOT_FOUND, head).await,
        },
        None => {
            if !path.ends_with('/') {
                let dir = format!("{path}/");
                if router.table.get(&dir).is_some() {
                    return redirect(&dir, uri.query());
                }
            }
            if let Some(dir) = path.strip_suffix("index.html").filter(|d| d.ends_with('/'))
                && router.table.get(dir).is_some()
            {
                return redirect(dir, uri.query());
            }
            error_page(router, StatusCode::NOT_FOUND, head).await
        }
    }
}

/// The project's 404 (or 410) page with the given status, or plain text.
async fn error_page(router: &Router, status: StatusCode, head: bool) -> Response {
    let paths = if status == StatusCode::GONE {
        vec![router.config.gone.as_str(), router.config.not_found.as_str()]
    } else {
        vec![router.config.not_found.as_str()]
    };
    for p in paths {
        if let Some(entry) = router.table.get(p)
            && let Target::Page { object, content_type } = &entry.target
        {
            let cc = router.fixed.pointer.clone();
            return send_object(router, status, object, content_type, cc, None, &HeaderMap::new(), head, None).await;
        }
    }
    let text = if status == StatusCode::GONE { "Gone\n" } else { "Not Found\n" };
    plain(status, text)
}

/// Whether an `If-None-Match` value matches the object (weak comparison; any
/// encoding of the same bytes matches).
fn etag_matches(value: &HeaderValue, hash: &str) -> bool {
    let Ok(value) = value.to_str() else { return false };
    value.split(',').map(str::trim).any(|tag| {
        if tag == "*" {
            return true;
        }
        let tag = tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"');
        tag.split('.').next() == Some(hash)
    })
}

/// Picks the best precompressed variant the client accepts: brotli, then gzip.
fn negotiate(accept: Option<&HeaderValue>, available: u8) -> Encoding {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else { return Encoding::Identity };
    let accepts = |name: &str| {
        accept.split(',').any(|part| {
            let mut it = part.split(';');
            let coding = it.next().unwrap_or("").trim();
            let q =
                it.find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok())).unwrap_or(1.0);
            (coding.eq_ignore_ascii_case(name) || coding == "*") && q > 0.0
        })
    };
    if available & encodings::BROTLI != 0 && accepts("br") {
        Encoding::Brotli
    } else if available & encodings::GZIP != 0 && accepts("gzip") {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

/// Serves an object with validators, negotiation and ranges. Conditional
/// requests and ranges only apply to 200 responses.
#[allow(clippy::too_many_arguments)]
async fn send_object(
    router: &Router,
    status: StatusCode,
    object: &ObjectRow,
    content_type: &str,
    cache_control: HeaderValue,
    entry: Option<&Entry>,
    req: &HeaderMap,
    head: bool,
    inline: Option<Bytes>,
) -> Response {
    let ok = status == StatusCode::OK;
    let mut h = HeaderMap::new();
    let fixed = entry.map(Entry::headers);
    h.insert(CONTENT_TYPE, fixed.map_or_else(|| header(content_type), |f| f.content_type.clone()));
    h.insert(CACHE_CONTROL, cache_control);
    h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if let Some(fixed) = fixed {
        h.insert(LAST_MODIFIED, fixed.last_modified.clone());
        if let Some(tags) = &fixed.cache_tag {
            h.insert(CACHE_TAG, tags.clone());
        }
    }
    if ok {
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let etag = fixed.and_then(|f| f.etag.clone()).unwrap_or_else(|| header(&format!("\"{}\"", object.hash)));
        h.insert(ETAG, etag);
        let not_modified = match (req.get(IF_NONE_MATCH), req.get(IF_MODIFIED_SINCE), entry) {
            (Some(inm), _, _) => etag_matches(inm, &object.hash),
            (None, Some(ims), Some(entry)) => {
                ims.to_str().ok().and_then(parse_http_date).is_some_and(|since| entry.modified <= since)
            }
            _ => false,
        };
        if not_modified {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            *r.headers_mut() = h;
            return r;
        }
    }
    // Ranges are served from the identity bytes; If-Range must match to apply.
    let range = req.get(RANGE).filter(|_| ok).filter(|_| match req.get(IF_RANGE) {
        Some(v) => etag_matches(v, &object.hash),
        None => true,
    });
    let mut encoding =
        if range.is_some() { Encoding::Identity } else { negotiate(req.get(ACCEPT_ENCODING), object.encodings) };
    // Stored without variants (`[publish] compress = false`): compress on
    // request, once per object while it stays in the cache.
    let on_request = range.is_none()
        && inline.is_none()
        && object.encodings == 0
        && router.config.compress
        && compressible(content_type, object.size)
        && object.size <= ON_REQUEST_MAX;
    if on_request {
        encoding = negotiate(req.get(ACCEPT_ENCODING), encodings::GZIP | encodings::BROTLI);
    }
    let key = object_key(&object.hash, encoding);
    if let Some(coding) = encoding.header() {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
        h.insert(ETAG, header(&format!("\"{}{}\"", object.hash, encoding.suffix())));
    }
    let unavailable = |error: Option<sesame_objects::ObjectError>| {
        match error {
            Some(e) => tracing::error!(object = %key, error = %e, "cannot read object"),
            None => tracing::error!(object = %key, "object missing from storage"),
        }
        plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n")
    };
    let finish = |status: StatusCode, mut h: HeaderMap, length: u64, body: Body| {
        h.insert(CONTENT_LENGTH, HeaderValue::from(length));
        let mut r = Response::new(if head { Body::empty() } else { body });
        *r.status_mut() = status;
        *r.headers_mut() = h;
        r
    };
    // One byte range, read from the identity bytes.
    if let Some(range) = range {
        let size = inline.as_ref().map_or(object.size, |b| b.len() as u64);
        match range.to_str().ok().map(http_range_header::parse_range_header).map(|r| r.and_then(|r| r.validate(size))) {
            Some(Ok(ranges)) if ranges.len() == 1 => {
                let (start, end) = (*ranges[0].start(), *ranges[0].end());
                let bytes = match &inline {
                    Some(b) => b.slice(start as usize..=end as usize),
                    None => match router.objects.get_range(&key, start..end + 1).await {
                        Ok(Some(b)) => b,
                        Ok(None) => return unavailable(None),
                        Err(e) => return unavailable(Some(e)),
                    },
                };
                h.insert(CONTENT_RANGE, header(&format!("bytes {start}-{end}/{size}")));
                let length = bytes.len() as u64;
                return finish(StatusCode::PARTIAL_CONTENT, h, length, Body::from(bytes));
            }
            Some(Ok(_)) => {} // several ranges: the whole body is a valid answer
            _ => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                h.insert(CONTENT_RANGE, header(&format!("bytes */{size}")));
                *r.headers_mut() = h;
                return r;
            }
        }
    }
    // The whole body: from memory, read whole (small objects) or streamed.
    if let Some(bytes) = inline {
        let length = bytes.len() as u64;
        return finish(status, h, length, Body::from(bytes));
    }
    if on_request && encoding != Encoding::Identity {
        if let Some(bytes) = router.bodies.as_ref().and_then(|b| b.get(&key)) {
            let length = bytes.len() as u64;
            return finish(status, h, length, Body::from(bytes));
        }
        let identity_key = object_key(&object.hash, Encoding::Identity);
        let identity = match router.bodies.as_ref().and_then(|b| b.get(&identity_key)) {
            Some(bytes) => bytes,
            None => match router.objects.get(&identity_key).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return unavailable(None),
                Err(e) => return unavailable(Some(e)),
            },
        };
        let Ok(coded) = tokio::task::spawn_blocking(move || compress(&identity, encoding)).await else {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n");
        };
        let coded = Bytes::from(coded);
        if let Some(bodies) = &router.bodies {
            bodies.insert(&key, coded.clone());
        }
        let length = coded.len() as u64;
        return finish(status, h, length, Body::from(coded));
    }
    if let Some(bodies) = &router.bodies {
        if let Some(bytes) = bodies.get(&key) {
            let length = bytes.len() as u64;
            return finish(status, h, length, Body::from(bytes));
        }
        // `size` is the identity size; compressed variants are smaller.
        if bodies.admits(object.size) {
            return match router.objects.get(&key).await {
                Ok(Some(bytes)) => {
                    bodies.insert(&key, bytes.clone());
                    let length = bytes.len() as u64;
                    finish(status, h, length, Body::from(bytes))
                }
                Ok(None) => unavailable(None),
                Err(e) => unavailable(Some(e)),
            };
        }
    }
    match router.objects.open(&key).await {
        Ok(Some((size, stream))) => finish(status, h, size, Body::from_stream(stream)),
        Ok(None) => unavailable(None),
        Err(e) => unavailable(Some(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_compare_weakly_across_encodings() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(etag_matches(&v("\"abc\""), "abc"));
        assert!(etag_matches(&v("W/\"abc.gz\""), "abc"));
        assert!(etag_matches(&v("\"x\", \"abc\""), "abc"));
        assert!(etag_matches(&v("*"), "abc"));
        assert!(!etag_matches(&v("\"abd\""), "abc"));
    }

    #[test]
    fn negotiates_best_available_encoding() {
        let v = |s: &'static str| Some(HeaderValue::from_static(s));
        let both = encodings::GZIP | encodings::BROTLI;
        assert_eq!(negotiate(v("gzip, deflate, br").as_ref(), both), Encoding::Brotli);
        assert_eq!(negotiate(v("gzip").as_ref(), both), Encoding::Gzip);
        assert_eq!(negotiate(v("br;q=0, gzip").as_ref(), both), Encoding::Gzip);
        assert_eq!(negotiate(v("br").as_ref(), encodings::GZIP), Encoding::Identity);
        assert_eq!(negotiate(None, both), Encoding::Identity);
    }
}
