//! Turning a request into a response: lookups, redirects, moderation of
//! history, conditional requests, content negotiation and byte ranges. The
//! header rules themselves are in [`crate::rfc`].

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, HOST, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED,
    LOCATION, RANGE, RETRY_AFTER, VARY,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use sesame_model::time::{http_date, parse_http_date};
use sesame_model::{Deps, DocKey, MediaFormat, OnDemandPage, OnDemandReply};
use sesame_objects::{Encoding, compress, compressible, object_key};
use sesame_store::{ObjectRow, Target, encodings};

use crate::rfc::{self, RangeAsk};
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

/// Paths every host serves as they are, in host mode too: the shared static
/// files, content-addressed objects and uploaded images.
const SHARED_PREFIXES: [&str; 3] = ["/static/", "/_v/", "/media/"];

/// Header values fixed by the configuration, built once.
#[derive(Debug)]
pub(crate) struct FixedHeaders {
    /// `Cache-Control` of pages at their plain path.
    pointer: HeaderValue,
    /// `Content-Security-Policy` of HTML pages.
    csp: Option<HeaderValue>,
    /// Host mode's suffix, lowercase, without a trailing dot.
    host_suffix: Option<String>,
}

impl FixedHeaders {
    pub(crate) fn new(config: &RouterConfig) -> FixedHeaders {
        FixedHeaders {
            pointer: header(&config.caching.pointer()),
            csp: config.csp.as_deref().map(header),
            host_suffix: config.host_suffix.as_deref().map(|s| s.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
}

/// Header values of one entry, built on its first request and kept with it.
#[derive(Debug, Clone)]
pub(crate) struct EntryHeaders {
    content_type: HeaderValue,
    /// `Last-Modified`, when known, with its time (to one second).
    last_modified: Option<(HeaderValue, i64)>,
    cache_tag: Option<HeaderValue>,
    /// `ETag` of each representation (identity, gzip, brotli), for the
    /// table's pages: built once, not per request.
    etags: Option<[HeaderValue; 3]>,
}

impl EntryHeaders {
    fn of(content_type: &str, deps: &Deps, modified: Option<i64>) -> EntryHeaders {
        EntryHeaders {
            content_type: header(content_type),
            last_modified: modified.map(|m| (header(&http_date(m)), m)),
            cache_tag: cache_tag(deps),
            etags: None,
        }
    }

    fn etag(&self, hash: &str, encoding: Encoding) -> HeaderValue {
        let slot = match encoding {
            Encoding::Identity => 0,
            Encoding::Gzip => 1,
            Encoding::Brotli => 2,
        };
        self.etags.as_ref().map_or_else(|| etag(hash, encoding), |tags| tags[slot].clone())
    }
}

impl Entry {
    fn headers(&self) -> &EntryHeaders {
        self.headers.get_or_init(|| match &self.target {
            Target::Page { content_type, object } => {
                let mut h = EntryHeaders::of(content_type, &self.deps, Some(self.modified));
                let encodings = [Encoding::Identity, Encoding::Gzip, Encoding::Brotli];
                h.etags = Some(encodings.map(|e| etag(&object.hash, e)));
                h
            }
            _ => EntryHeaders::of("", &self.deps, Some(self.modified)),
        })
    }
}

/// `Cache-Tag` from dependency keys.
fn cache_tag(deps: &Deps) -> Option<HeaderValue> {
    let mut tags = String::new();
    for dep in deps.tags() {
        if tags.len() + dep.len() + 1 > MAX_CACHE_TAG {
            break;
        }
        if !tags.is_empty() {
            tags.push(',');
        }
        tags.push_str(dep);
    }
    (!tags.is_empty()).then(|| header(&tags))
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

/// 503 for a failure of storage or the database: nothing is wrong with the
/// page, so clients and CDNs are told to come back.
fn unavailable() -> Response {
    let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n");
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
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

/// In host mode, the site a request's host names: `HANDLE.SUFFIX` (any case,
/// any port, with or without the trailing dot of a fully qualified name) →
/// `handle`.
fn host_site(router: &Router, headers: &HeaderMap) -> Option<String> {
    let suffix = router.fixed.host_suffix.as_deref()?;
    let host = headers.get(HOST)?.to_str().ok()?;
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') || h.starts_with('[') => {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        }
        _ => host,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let handle = host.strip_suffix(suffix)?.strip_suffix('.')?;
    let valid = !handle.is_empty() && handle.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then(|| handle.to_string())
}

/// The generation asked for with `?v=N`, if any.
fn version(uri: &Uri) -> Option<u64> {
    uri.query()?.split('&').find_map(|kv| kv.strip_prefix("v=")).and_then(|v| v.parse().ok())
}

pub(crate) async fn respond(router: &Router, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let site = host_site(router, headers);
    let mut response = route(router, method, uri, headers, site.as_deref()).await;
    // In host mode, a redirect within the requested site is relative to its host.
    if let Some(handle) = &site
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

async fn route(router: &Router, method: &Method, uri: &Uri, headers: &HeaderMap, site: Option<&str>) -> Response {
    let head = *method == Method::HEAD;
    if !head && *method != Method::GET {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let request = Request { headers, head };
    let hosted;
    let path = match site {
        Some(handle) if !SHARED_PREFIXES.iter().any(|p| uri.path().starts_with(p)) => {
            hosted = format!("/{handle}{}", uri.path());
            hosted.as_str()
        }
        _ => uri.path(),
    };
    if router.config.versioned_urls
        && let Some(generation) = version(uri)
    {
        return from_history(router, &request, path, generation, uri.query()).await;
    }
    if let Some(hash) = path.strip_prefix("/_v/") {
        return by_hash(router, &request, hash).await;
    }
    if path.starts_with("/media/") {
        return media(router, &request, path).await;
    }
    let on_request = uri.query().is_some_and(|q| q.contains("after=")) || path.ends_with("/feed.json");
    if on_request
        && let Some(dynamic) = &router.dynamic
        && let Some(reply) = dynamic.page(path, uri.query()).await
    {
        return match reply {
            OnDemandReply::Page(page) => {
                let meta = EntryHeaders::of(&page.content_type, &page.deps, Some(page.modified));
                let cc = router.fixed.pointer.clone();
                send(router, &request, StatusCode::OK, &Source::Memory(page), &meta, cc).await
            }
            OnDemandReply::Redirect(to) => redirect(&to, None),
        };
    }
    match router.table.get(path) {
        Some(entry) => match &entry.target {
            Target::Page { object, .. } => {
                let cc = router.fixed.pointer.clone();
                send(router, &request, StatusCode::OK, &Source::Stored(object), entry.headers(), cc).await
            }
            Target::Redirect(to) => redirect(to, uri.query()),
            Target::Gone => error_page(router, &request, StatusCode::GONE).await,
            Target::Removed => error_page(router, &request, StatusCode::NOT_FOUND).await,
        },
        None => match directory_of(path).filter(|dir| router.table.get(dir).is_some()) {
            Some(dir) => redirect(&dir, uri.query()),
            None => error_page(router, &request, StatusCode::NOT_FOUND).await,
        },
    }
}

/// The directory a path not found may stand for: `/x` and `/x/index.html`
/// lead to `/x/` (redirected there when it exists, now or in a generation
/// asked for with `?v=`).
fn directory_of(path: &str) -> Option<String> {
    match path.strip_suffix("index.html") {
        Some(dir) if dir.ends_with('/') => Some(dir.to_string()),
        _ => (!path.ends_with('/')).then(|| format!("{path}/")),
    }
}

/// `PATH?v=GENERATION`: the page as that generation served it, unless a
/// document it was built from is taken down now (moderation is final until
/// an admin lifts it, also for history).
async fn from_history(
    router: &Router,
    request: &Request<'_>,
    path: &str,
    generation: u64,
    query: Option<&str>,
) -> Response {
    if router.table.get(path).is_some_and(|e| e.target == Target::Gone) {
        return error_page(router, request, StatusCode::GONE).await;
    }
    let pointer = match router.store.pointer_at(path, generation).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            // The same redirects as the current site, to the same query.
            let Some(dir) = directory_of(path) else { return error_page(router, request, StatusCode::NOT_FOUND).await };
            return match router.store.pointer_at(&dir, generation).await {
                Ok(Some(_)) => redirect(&dir, query),
                Ok(None) => error_page(router, request, StatusCode::NOT_FOUND).await,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read pointer history");
                    unavailable()
                }
            };
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read pointer history");
            return unavailable();
        }
    };
    match taken_down(router, pointer.deps.documents().collect()).await {
        Ok(false) => {}
        Ok(true) => return error_page(router, request, StatusCode::GONE).await,
        Err(response) => return response,
    }
    match &pointer.target {
        Target::Page { object, content_type } => {
            let meta = EntryHeaders::of(content_type, &pointer.deps, Some(pointer.modified));
            send(router, request, StatusCode::OK, &Source::Stored(object), &meta, IMMUTABLE).await
        }
        Target::Redirect(to) => redirect(to, query),
        Target::Gone => error_page(router, request, StatusCode::GONE).await,
        Target::Removed => error_page(router, request, StatusCode::NOT_FOUND).await,
    }
}

/// Whether one of these documents is taken down now.
async fn taken_down(router: &Router, docs: Vec<DocKey>) -> Result<bool, Response> {
    if docs.is_empty() {
        return Ok(false);
    }
    match router.store.taken_down(&docs).await {
        Ok(down) => Ok(!down.is_empty()),
        Err(e) => {
            tracing::error!(error = %e, "cannot read moderation state");
            Err(unavailable())
        }
    }
}

/// `/_v/<hash>`: an object a current page serves. A hash only history knows
/// is 410 when a page it served was built from a document taken down since,
/// and 404 otherwise.
async fn by_hash(router: &Router, request: &Request<'_>, hash: &str) -> Response {
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return error_page(router, request, StatusCode::NOT_FOUND).await;
    }
    if let Some((object, content_type)) = router.table.object(hash) {
        let meta = EntryHeaders::of(&content_type, &Deps::default(), None);
        return send(router, request, StatusCode::OK, &Source::Stored(&object), &meta, IMMUTABLE).await;
    }
    let history = match router.store.object_history(hash).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot read pointer history");
            return unavailable();
        }
    };
    match taken_down(router, history.iter().flat_map(Deps::documents).collect()).await {
        Ok(true) => error_page(router, request, StatusCode::GONE).await,
        Ok(false) => error_page(router, request, StatusCode::NOT_FOUND).await,
        Err(response) => response,
    }
}

/// `/media/HASH.EXT` and `/media/HASH-WIDTH.webp`: an uploaded image or one
/// of its resized variants, straight from storage, cached for good (the
/// name is the content). A variant not made yet redirects to the original
/// for the moment.
async fn media(router: &Router, request: &Request<'_>, path: &str) -> Response {
    let key = &path[1..];
    let Some((hash, variant)) = sesame_model::media::parse_key(key) else {
        return error_page(router, request, StatusCode::NOT_FOUND).await;
    };
    let name = &key["media/".len()..];
    let content_type = match variant {
        Some(_) => "image/webp",
        None => {
            name.rsplit_once('.').and_then(|(_, ext)| MediaFormat::from_ext(ext)).map_or("", MediaFormat::content_type)
        }
    };
    let mut h = HeaderMap::new();
    h.insert(CACHE_CONTROL, IMMUTABLE);
    h.insert(ETAG, header(&format!("\"{name}\"")));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if request.get(IF_NONE_MATCH).is_some_and(|v| rfc::weak_match(v, (name, ""))) {
        return bare(StatusCode::NOT_MODIFIED, h);
    }
    let (size, stream) = match router.objects.open(key).await {
        Ok(Some(found)) => found,
        Ok(None) if variant.is_some() => {
            // Made by the worker shortly after the upload: meanwhile, the original.
            return match router.store.media(&[hash.to_string()], None).await {
                Ok(rows) => match rows.first() {
                    Some((row, _)) => {
                        let mut r = plain(StatusCode::TEMPORARY_REDIRECT, "Temporary Redirect\n");
                        let to = format!("/{}", sesame_model::media::media_key(hash, row.format, None));
                        r.headers_mut().insert(LOCATION, header(&to));
                        r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                        r
                    }
                    None => error_page(router, request, StatusCode::NOT_FOUND).await,
                },
                Err(e) => {
                    tracing::error!(error = %e, "cannot read media");
                    unavailable()
                }
            };
        }
        Ok(None) => return error_page(router, request, StatusCode::NOT_FOUND).await,
        Err(e) => return failed(key, &e),
    };
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let range = match request.get(RANGE) {
        Some(value) if !request.head && if_range_holds(request, name, None) => rfc::range(value, size),
        _ => RangeAsk::Whole,
    };
    let mut body = Body::from_stream(stream);
    let mut status = StatusCode::OK;
    let mut length = size;
    match range {
        RangeAsk::Whole => {}
        RangeAsk::Unsatisfiable => {
            h.insert(CONTENT_RANGE, header(&format!("bytes */{size}")));
            return bare(StatusCode::RANGE_NOT_SATISFIABLE, h);
        }
        RangeAsk::One(start, end) => match router.objects.get_range(key, start..end + 1).await {
            Ok(Some(bytes)) => {
                h.insert(CONTENT_RANGE, header(&format!("bytes {start}-{end}/{size}")));
                length = bytes.len() as u64;
                body = Body::from(bytes);
                status = StatusCode::PARTIAL_CONTENT;
            }
            Ok(None) => return missing(key),
            Err(e) => return failed(key, &e),
        },
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(length));
    let mut r = Response::new(if request.head { Body::empty() } else { body });
    *r.status_mut() = status;
    *r.headers_mut() = h;
    r
}

/// The project's 404 (or 410) page with the given status, or plain text.
async fn error_page(router: &Router, request: &Request<'_>, status: StatusCode) -> Response {
    let paths = if status == StatusCode::GONE {
        vec![router.config.gone.as_str(), router.config.not_found.as_str()]
    } else {
        vec![router.config.not_found.as_str()]
    };
    for p in paths {
        if let Some(entry) = router.table.get(p)
            && let Target::Page { object, content_type } = &entry.target
        {
            let meta = EntryHeaders::of(content_type, &Deps::default(), None);
            let cc = router.fixed.pointer.clone();
            return send(router, request, status, &Source::Stored(object), &meta, cc).await;
        }
    }
    let text = if status == StatusCode::GONE { "Gone\n" } else { "Not Found\n" };
    plain(status, text)
}

/// The request fields `send` reads.
pub(crate) struct Request<'a> {
    headers: &'a HeaderMap,
    head: bool,
}

impl Request<'_> {
    fn get(&self, name: HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Where the bytes of a response come from.
enum Source<'a> {
    /// Object storage (through the cache of hot bodies).
    Stored(&'a ObjectRow),
    /// A page rendered on request, held in memory with its variants.
    Memory(Arc<OnDemandPage>),
}

impl Source<'_> {
    fn hash(&self) -> &str {
        match self {
            Source::Stored(o) => &o.hash,
            Source::Memory(p) => &p.hash,
        }
    }

    fn size(&self) -> u64 {
        match self {
            Source::Stored(o) => o.size,
            Source::Memory(p) => p.identity.len() as u64,
        }
    }
}

fn etag(hash: &str, encoding: Encoding) -> HeaderValue {
    header(&format!("\"{hash}{}\"", encoding.suffix()))
}

/// What the preconditions of RFC 9110 section 13.2.2 decide, in its order.
enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

/// Evaluates the preconditions against the selected representation, whose
/// entity tag is `etag` (the hash and the variant's suffix).
fn evaluate(request: &Request<'_>, etag: (&str, &str), modified: Option<i64>) -> Precondition {
    let date = |name: HeaderName| request.get(name).and_then(parse_http_date);
    if let Some(value) = request.get(IF_MATCH) {
        if !rfc::strong_match(value, etag) {
            return Precondition::Failed;
        }
    } else if let (Some(since), Some(modified)) = (date(IF_UNMODIFIED_SINCE), modified)
        && modified > since
    {
        return Precondition::Failed;
    }
    if let Some(value) = request.get(IF_NONE_MATCH) {
        if rfc::weak_match(value, etag) {
            return Precondition::NotModified;
        }
    } else if let (Some(since), Some(modified)) = (date(IF_MODIFIED_SINCE), modified)
        && modified <= since
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// Whether `If-Range` lets a range of the identity bytes be served: a strong
/// entity tag equal to theirs, or exactly their `Last-Modified` date.
fn if_range_holds(request: &Request<'_>, hash: &str, modified: Option<i64>) -> bool {
    match request.get(IF_RANGE).map(str::trim) {
        None => true,
        Some(v) if v.starts_with('"') || v.starts_with("W/") => rfc::strong_match(v, (hash, "")),
        Some(v) => parse_http_date(v).is_some_and(|d| Some(d) == modified),
    }
}

/// Serves a representation with validators, negotiation and ranges.
/// Preconditions and ranges apply to 200 responses only; ranges to GET only.
async fn send(
    router: &Router,
    request: &Request<'_>,
    status: StatusCode,
    source: &Source<'_>,
    meta: &EntryHeaders,
    cache_control: HeaderValue,
) -> Response {
    let ok = status == StatusCode::OK;
    let hash = source.hash();
    let size = source.size();
    let content_type = meta.content_type.to_str().unwrap_or_default();
    // What is held, or can be made on request, besides identity.
    let (available, on_request) = match source {
        Source::Stored(o) => {
            let on_request = o.encodings == 0
                && router.config.compress
                && compressible(content_type, o.size)
                && o.size <= ON_REQUEST_MAX;
            (if on_request { encodings::GZIP | encodings::BROTLI } else { o.encodings }, on_request)
        }
        Source::Memory(p) => {
            let mut bits = 0;
            if p.gzip.is_some() {
                bits |= encodings::GZIP;
            }
            if p.brotli.is_some() {
                bits |= encodings::BROTLI;
            }
            (bits, false)
        }
    };
    let selected = rfc::negotiate(request.get(ACCEPT_ENCODING), available);
    let modified = meta.last_modified.as_ref().map(|(_, m)| *m);

    let mut h = HeaderMap::new();
    h.insert(CACHE_CONTROL, cache_control);
    h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if let Some((value, _)) = &meta.last_modified {
        h.insert(LAST_MODIFIED, value.clone());
    }
    if let Some(tags) = &meta.cache_tag {
        h.insert(CACHE_TAG, tags.clone());
    }
    if ok {
        h.insert(ETAG, meta.etag(hash, selected));
        match evaluate(request, (hash, selected.suffix()), modified) {
            Precondition::Proceed => {}
            Precondition::NotModified => return bare(StatusCode::NOT_MODIFIED, h),
            Precondition::Failed => return bare(StatusCode::PRECONDITION_FAILED, h),
        }
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    h.insert(CONTENT_TYPE, meta.content_type.clone());
    // A range is cut from the identity bytes, for GET only (RFC 9110, 14.2).
    let range = match request.get(RANGE) {
        Some(value) if ok && !request.head && if_range_holds(request, hash, modified) => rfc::range(value, size),
        _ => RangeAsk::Whole,
    };
    let finish = |status: StatusCode, mut h: HeaderMap, body: Bytes| {
        h.insert(CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
        let mut r = Response::new(if request.head { Body::empty() } else { Body::from(body) });
        *r.status_mut() = status;
        *r.headers_mut() = h;
        r
    };
    match range {
        RangeAsk::Whole => {}
        RangeAsk::Unsatisfiable => {
            h.insert(ETAG, meta.etag(hash, Encoding::Identity));
            h.insert(CONTENT_RANGE, header(&format!("bytes */{size}")));
            return bare(StatusCode::RANGE_NOT_SATISFIABLE, h);
        }
        RangeAsk::One(start, end) => {
            let bytes = match source {
                Source::Memory(p) => p.identity.slice(start as usize..=end as usize),
                Source::Stored(_) => {
                    let key = object_key(hash, Encoding::Identity);
                    match router.objects.get_range(&key, start..end + 1).await {
                        Ok(Some(b)) => b,
                        Ok(None) => return missing(&key),
                        Err(e) => return failed(&key, &e),
                    }
                }
            };
            h.insert(ETAG, meta.etag(hash, Encoding::Identity));
            h.insert(CONTENT_RANGE, header(&format!("bytes {start}-{end}/{size}")));
            return finish(StatusCode::PARTIAL_CONTENT, h, bytes);
        }
    }
    if let Some(coding) = selected.header() {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
    }
    let key = object_key(hash, selected);
    match source {
        Source::Memory(page) => {
            let body = match selected {
                Encoding::Gzip => page.gzip.clone(),
                Encoding::Brotli => page.brotli.clone(),
                Encoding::Identity => None,
            };
            finish(status, h, body.unwrap_or_else(|| page.identity.clone()))
        }
        Source::Stored(_) if on_request && selected != Encoding::Identity => {
            match compressed_on_request(router, hash, selected).await {
                Ok(body) => finish(status, h, body),
                Err(response) => response,
            }
        }
        Source::Stored(object) => {
            if let Some(bodies) = &router.bodies {
                if let Some(bytes) = bodies.get(&key) {
                    return finish(status, h, bytes);
                }
                // `size` is the identity size; compressed variants are smaller.
                if bodies.admits(object.size) {
                    return match router.objects.get(&key).await {
                        Ok(Some(bytes)) => {
                            bodies.insert(&key, bytes.clone());
                            finish(status, h, bytes)
                        }
                        Ok(None) => missing(&key),
                        Err(e) => failed(&key, &e),
                    };
                }
            }
            match router.objects.open(&key).await {
                Ok(Some((length, stream))) => {
                    h.insert(CONTENT_LENGTH, HeaderValue::from(length));
                    let mut r = Response::new(if request.head { Body::empty() } else { Body::from_stream(stream) });
                    *r.status_mut() = status;
                    *r.headers_mut() = h;
                    r
                }
                Ok(None) => missing(&key),
                Err(e) => failed(&key, &e),
            }
        }
    }
}

/// A response without a body (304, 412, 416).
fn bare(status: StatusCode, mut h: HeaderMap) -> Response {
    if status == StatusCode::NOT_MODIFIED {
        // A 304 carries the validators and caching fields of the 200 it stands for.
        h.remove(CONTENT_TYPE);
    } else {
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    *r.headers_mut() = h;
    r
}

fn missing(key: &str) -> Response {
    tracing::error!(object = %key, "object missing from storage");
    unavailable()
}

fn failed(key: &str, e: &sesame_objects::ObjectError) -> Response {
    tracing::error!(object = %key, error = %e, "cannot read object");
    unavailable()
}

/// A variant of an object stored without variants (`[publish] compress =
/// false`), compressed once and kept with the hot bodies.
async fn compressed_on_request(router: &Router, hash: &str, encoding: Encoding) -> Result<Bytes, Response> {
    let key = object_key(hash, encoding);
    if let Some(bytes) = router.bodies.as_ref().and_then(|b| b.get(&key)) {
        return Ok(bytes);
    }
    let identity_key = object_key(hash, Encoding::Identity);
    let identity = match router.bodies.as_ref().and_then(|b| b.get(&identity_key)) {
        Some(bytes) => bytes,
        None => match router.objects.get(&identity_key).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Err(missing(&identity_key)),
            Err(e) => return Err(failed(&identity_key, &e)),
        },
    };
    let Ok(coded) = tokio::task::spawn_blocking(move || compress(&identity, encoding)).await else {
        return Err(unavailable());
    };
    let coded = Bytes::from(coded);
    if let Some(bodies) = &router.bodies {
        bodies.insert(&key, coded.clone());
    }
    Ok(coded)
}
