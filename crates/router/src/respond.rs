//! Turning a request into a response: the lookups and reads. What each
//! response is (status, validators, coding, range) is decided by the pure
//! functions of [`crate::plan`], which the edge Worker shares; the header
//! rules themselves are in [`crate::rfc`].

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{
    ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HOST,
    IF_NONE_MATCH, LAST_MODIFIED, LOCATION, RANGE, RETRY_AFTER, STRICT_TRANSPORT_SECURITY, VARY,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use quick_cache::sync::Cache;
use sesame_model::time::http_date;
use sesame_model::{Deps, DocKey, MediaFormat, OnDemandPage, OnDemandReply};
use sesame_objects::{BodyStream, Encoding, compress, compressible, object_key};
use sesame_store::encodings;

use crate::plan::{self, Part, Plan, Representation, Request};
use crate::rfc::{self, RangeAsk};
use crate::{Entry, Hex, Object, Router, RouterConfig, Served};

/// Cloudflare's cache tag header.
const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Header values fixed by the configuration, built once.
#[derive(Debug)]
pub(crate) struct FixedHeaders {
    /// `Cache-Control` of pages at their plain path.
    pointer: HeaderValue,
    /// `Cache-Control` of content-addressed URLs.
    immutable: HeaderValue,
    /// `Content-Security-Policy` of HTML pages.
    csp: Option<HeaderValue>,
    /// Host mode's suffix, lowercase, without a trailing dot.
    host_suffix: Option<String>,
}

impl FixedHeaders {
    pub(crate) fn new(config: &RouterConfig) -> FixedHeaders {
        FixedHeaders {
            pointer: header(&config.rules.cache_control),
            immutable: header(&config.rules.immutable),
            csp: config.rules.csp.as_deref().map(header),
            host_suffix: config.rules.host_suffix.as_deref().map(|s| s.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
}

/// Header values of one answer: built per request, or kept for a table
/// entry in the [`HeaderCache`].
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
    fn of(router: &Router, content_type: HeaderValue, deps: &Deps, modified: Option<i64>) -> EntryHeaders {
        EntryHeaders {
            content_type,
            last_modified: modified.map(|m| (header(&http_date(m)), m)),
            cache_tag: plan::cache_tag(deps.tags(), router.config.rules.max_cache_tag).map(|t| header(&t)),
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

/// Header values of recently served table entries, bounded in number: a hot
/// page's are built once, while the table itself holds none (at half a
/// million paths they would outweigh it).
pub(crate) struct HeaderCache(Cache<Box<str>, (Arc<Entry>, Arc<EntryHeaders>)>);

/// Entries whose headers are kept (about 600 bytes each).
const KEPT_HEADERS: usize = 16 * 1024;

impl HeaderCache {
    pub(crate) fn new() -> HeaderCache {
        HeaderCache(Cache::new(KEPT_HEADERS))
    }

    /// The headers of the entry at `path`, kept while it is the path's entry
    /// (the kept entry is compared by identity, so a changed path never gets
    /// its former headers).
    fn of(&self, router: &Router, path: &str, entry: &Arc<Entry>) -> Arc<EntryHeaders> {
        if let Some((kept, headers)) = self.0.get(path)
            && Arc::ptr_eq(&kept, entry)
        {
            return headers;
        }
        let headers = Arc::new(match &entry.served {
            Served::Page { content_type, object } => {
                let mut h =
                    EntryHeaders::of(router, HeaderValue::clone(content_type), &entry.deps, Some(entry.modified));
                let hash = object.hash();
                h.etags = Some([Encoding::Identity, Encoding::Gzip, Encoding::Brotli].map(|e| etag(&hash, e)));
                h
            }
            _ => EntryHeaders::of(router, HeaderValue::from_static(""), &entry.deps, Some(entry.modified)),
        });
        self.0.insert(path.into(), (entry.clone(), headers.clone()));
        headers
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

pub(crate) async fn respond(
    router: &Router,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    secure: bool,
) -> Response {
    let host = headers.get(HOST).and_then(|v| v.to_str().ok());
    // ACME's HTTP-01 challenges for an order in progress (over plain HTTP).
    if let (Some(token), Some(host), false) =
        (uri.path().strip_prefix("/.well-known/acme-challenge/"), host.map(plan::host_name), secure)
        && (*method == Method::GET || *method == Method::HEAD)
        && let Some(answer) = router.challenge_answer(&host, token).await
    {
        let mut r = Response::new(Body::from(answer));
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    let custom = host.map(plan::host_name).and_then(|h| router.custom_host(&h).map(|c| (h, c)));
    let challenge = uri.path().starts_with("/.well-known/acme-challenge/");
    if let Some((name, c)) = &custom
        && !challenge
    {
        // The twin of an apex/www pair goes to the one served; a custom
        // domain with a certificate is answered over HTTPS only (but for
        // ACME's HTTP-01 challenges, which come over plain HTTP).
        let to = c.redirect.as_deref().unwrap_or(name);
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        let https = https_port(router, to);
        if c.redirect.is_some() || (https.is_some() && !secure) {
            return redirect(&format!("{}{path_and_query}", origin(to, https, host, secure)), None);
        }
    }
    let site =
        plan::host_site(router.fixed.host_suffix.as_deref(), host).or(custom.as_ref().map(|(_, c)| c.site.clone()));
    // A site's path form at the platform's host goes to its custom domain once live.
    if site.is_none()
        && let Some((handle, rest)) = uri.path().strip_prefix('/').and_then(|p| p.split_once('/'))
        && let Some(domain) = router.site_domain(handle)
    {
        let query = uri.query().map_or(String::new(), |q| format!("?{q}"));
        let to = origin(&domain, https_port(router, &domain), host, secure);
        return redirect(&format!("{to}/{rest}{query}"), None);
    }
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
    if secure
        && let Some((name, _)) = &custom
        && router.certificates.strict(name)
    {
        response.headers_mut().insert(STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    response
}

/// The port this router answers HTTPS for custom domain `to` on, when it
/// has a certificate for it.
fn https_port(router: &Router, to: &str) -> Option<u16> {
    router.config.https_port.filter(|_| router.has_certificate(to))
}

/// Where a redirect to custom domain `to` goes: HTTPS on `https` (see
/// [`https_port`]), else plain HTTP on the port the request came to (the
/// default one when it came over HTTPS).
fn origin(to: &str, https: Option<u16>, host: Option<&str>, secure: bool) -> String {
    match https {
        Some(443) => format!("https://{to}"),
        Some(port) => format!("https://{to}:{port}"),
        None => {
            let port = host.and_then(|h| h.rsplit_once(':')).filter(|_| !secure);
            format!("http://{to}{}", port.map_or(String::new(), |(_, p)| format!(":{p}")))
        }
    }
}

async fn route(router: &Router, method: &Method, uri: &Uri, headers: &HeaderMap, site: Option<&str>) -> Response {
    let head = *method == Method::HEAD;
    if !head && *method != Method::GET {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let request = Request { headers, head };
    let normalized = plan::normalize(uri.path());
    let sent = normalized.as_deref().unwrap_or(uri.path());
    let hosted;
    let path = match site {
        Some(handle) if !router.config.rules.shared_prefixes.iter().any(|p| sent.starts_with(p.as_str())) => {
            hosted = format!("/{handle}{sent}");
            hosted.as_str()
        }
        _ => sent,
    };
    if router.config.rules.versioned_urls
        && let Some(generation) = plan::version(uri.query())
    {
        return from_history(router, &request, path, generation, uri.query()).await;
    }
    if let Some(hash) = path.strip_prefix("/_v/") {
        return by_hash(router, &request, hash).await;
    }
    if path.starts_with("/media/") {
        return media(router, &request, path).await;
    }
    let on_request = sesame_model::on_demand::after_cursor(uri.query()).is_some() || path.ends_with("/feed.json");
    if on_request
        && let Some(dynamic) = &router.dynamic
        && let Some(reply) = dynamic.page(path, uri.query()).await
    {
        return match reply {
            OnDemandReply::Page(page) => {
                let meta = EntryHeaders::of(router, header(&page.content_type), &page.deps, Some(page.modified));
                let cc = router.fixed.pointer.clone();
                send(router, &request, StatusCode::OK, &Source::Memory(page), &meta, cc).await
            }
            OnDemandReply::Redirect(to) => redirect(&to, None),
        };
    }
    match router.table.get(path) {
        Some(entry) => match &entry.served {
            Served::Page { .. }
                if plan::on_request(uri.query(), entry.deps.as_str(), &router.config.rules.head_routes) =>
            {
                error_page(router, &request, StatusCode::NOT_FOUND).await
            }
            Served::Page { object, .. } => {
                let source = Source::stored(*object);
                let fixed = &router.fixed;
                let cc = if plan::fingerprinted(path, source.hash()) { &fixed.immutable } else { &fixed.pointer };
                let cc = cc.clone();
                let meta = router.headers.of(router, path, &entry);
                send(router, &request, StatusCode::OK, &source, &meta, cc).await
            }
            Served::Redirect(to) => redirect(to, uri.query()),
            Served::Gone => error_page(router, &request, StatusCode::GONE).await,
        },
        None => match plan::directory_of(path).filter(|dir| router.table.get(dir).is_some()) {
            Some(dir) => redirect(&dir, uri.query()),
            None => error_page(router, &request, StatusCode::NOT_FOUND).await,
        },
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
    if router.table.get(path).is_some_and(|e| e.served == Served::Gone) {
        return error_page(router, request, StatusCode::GONE).await;
    }
    let entry = match router.entry_at(path, generation).await {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            // The same redirects as the current site, to the same query.
            let Some(dir) = plan::directory_of(path) else {
                return error_page(router, request, StatusCode::NOT_FOUND).await;
            };
            return match router.entry_at(&dir, generation).await {
                Ok(Some(_)) => redirect(&dir, query),
                Ok(None) => error_page(router, request, StatusCode::NOT_FOUND).await,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read a retained generation");
                    unavailable()
                }
            };
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a retained generation");
            return unavailable();
        }
    };
    match taken_down(router, entry.deps.documents().collect()).await {
        Ok(false) => {}
        Ok(true) => return error_page(router, request, StatusCode::GONE).await,
        Err(response) => return response,
    }
    match &entry.served {
        Served::Page { object, content_type } => {
            let meta = EntryHeaders::of(router, HeaderValue::clone(content_type), &entry.deps, Some(entry.modified));
            let cc = router.fixed.immutable.clone();
            send(router, request, StatusCode::OK, &Source::stored(*object), &meta, cc).await
        }
        Served::Redirect(to) => redirect(to, query),
        Served::Gone => error_page(router, request, StatusCode::GONE).await,
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

/// `/_v/<hash>`: an object a current page serves. Any other hash is 410
/// when the served generation's moderation list names it (a page built from
/// a document taken down since served it), and 404 otherwise, as the
/// Worker answers.
async fn by_hash(router: &Router, request: &Request<'_>, hash: &str) -> Response {
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return error_page(router, request, StatusCode::NOT_FOUND).await;
    }
    if let Some((object, content_type)) = router.table.object(hash) {
        let meta = EntryHeaders::of(router, HeaderValue::clone(&content_type), &Deps::default(), None);
        let cc = router.fixed.immutable.clone();
        return send(router, request, StatusCode::OK, &Source::stored(object), &meta, cc).await;
    }
    let moderation = match router.moderation().await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the moderation list");
            return unavailable();
        }
    };
    let gone =
        moderation.is_some_and(|m| m.objects.get(hash).is_some_and(|docs| docs.iter().any(|d| m.docs.contains(d))));
    let status = if gone { StatusCode::GONE } else { StatusCode::NOT_FOUND };
    error_page(router, request, status).await
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
    h.insert(CACHE_CONTROL, router.fixed.immutable.clone());
    h.insert(ETAG, header(&format!("\"{name}\"")));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if request.get(IF_NONE_MATCH).is_some_and(|v| rfc::weak_match(v, (name, ""))) {
        return bare(StatusCode::NOT_MODIFIED, h);
    }
    let (size, stream) = match router.objects.open(key).await {
        Ok(Some(found)) => found,
        Ok(None) if variant.is_some() => {
            // Made by the publisher shortly after the upload: meanwhile, the original.
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
        Some(value) if !request.head && plan::if_range_holds(request, name, None) => rfc::range(value, size),
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
    with_body(status, h, request.head, length, || body)
}

/// The project's 404 (or 410) page with the given status, or plain text.
async fn error_page(router: &Router, request: &Request<'_>, status: StatusCode) -> Response {
    let paths = if status == StatusCode::GONE {
        vec![router.config.rules.gone.as_str(), router.config.rules.not_found.as_str()]
    } else {
        vec![router.config.rules.not_found.as_str()]
    };
    for p in paths {
        if let Some(entry) = router.table.get(p)
            && let Served::Page { object, content_type } = &entry.served
        {
            let meta = EntryHeaders::of(router, HeaderValue::clone(content_type), &Deps::default(), None);
            let cc = router.fixed.pointer.clone();
            return send(router, request, status, &Source::stored(*object), &meta, cc).await;
        }
    }
    let text = if status == StatusCode::GONE { "Gone\n" } else { "Not Found\n" };
    plain(status, text)
}

/// Where the bytes of a response come from.
enum Source {
    /// Object storage (through the cache of hot bodies), with the hash's hex.
    Stored(Object, Hex),
    /// A page rendered on request, held in memory with its variants.
    Memory(Arc<OnDemandPage>),
}

impl Source {
    fn stored(object: Object) -> Source {
        Source::Stored(object, object.hash())
    }

    fn hash(&self) -> &str {
        match self {
            Source::Stored(_, hex) => hex,
            Source::Memory(p) => &p.hash,
        }
    }

    fn size(&self) -> u64 {
        match self {
            Source::Stored(o, _) => o.size,
            Source::Memory(p) => p.identity.len() as u64,
        }
    }
}

fn etag(hash: &str, encoding: Encoding) -> HeaderValue {
    header(&format!("\"{hash}{}\"", encoding.suffix()))
}

/// Serves a representation as [`plan`] decides. A text object published a
/// moment ago may be stored without its variants yet: they are looked for in
/// storage (they follow a publish), and one not there yet is not offered,
/// as the edge Worker does. Only where no variants are ever stored
/// (`[publish] compress = false`) does the router compress on request.
async fn send(
    router: &Router,
    request: &Request<'_>,
    status: StatusCode,
    source: &Source,
    meta: &EntryHeaders,
    cache_control: HeaderValue,
) -> Response {
    let hash = source.hash();
    let size = source.size();
    let content_type = meta.content_type.to_str().unwrap_or_default();
    // What may be sent besides identity, and whether it must be looked for
    // (`probing`) or made (`on_request`).
    let (mut available, probing, on_request) = match source {
        Source::Stored(o, _) => {
            let pending =
                o.encodings == 0 && compressible(content_type, o.size) && o.size <= router.config.rules.variants_up_to;
            let on_request = pending && router.config.compress_on_request;
            let both = encodings::GZIP | encodings::BROTLI;
            (if pending { both } else { o.encodings }, pending && !on_request, on_request)
        }
        Source::Memory(p) => {
            let mut bits = 0;
            if p.gzip.is_some() {
                bits |= encodings::GZIP;
            }
            if p.brotli.is_some() {
                bits |= encodings::BROTLI;
            }
            (bits, false, false)
        }
    };
    let modified = meta.last_modified.as_ref().map(|(_, m)| *m);
    loop {
        let rep = Representation { hash, size, modified, available };
        let plan = plan::plan(request, &rep, status);
        let h = head(&plan, meta, hash, size, cache_control.clone());
        let finish =
            |h: HeaderMap, body: Bytes| with_body(plan.status, h, request.head, body.len() as u64, || Body::from(body));
        let (start, end) = match plan.part {
            Part::Nothing => return bare(plan.status, h),
            Part::Range(start, end) => (start, end),
            Part::Whole => {
                let key = object_key(hash, plan.encoding);
                let body = match source {
                    Source::Memory(page) => {
                        let body = match plan.encoding {
                            Encoding::Gzip => page.gzip.clone(),
                            Encoding::Brotli => page.brotli.clone(),
                            Encoding::Identity => None,
                        };
                        return finish(h, body.unwrap_or_else(|| page.identity.clone()));
                    }
                    Source::Stored(..) if on_request && plan.encoding != Encoding::Identity => {
                        return match compressed_on_request(router, hash, plan.encoding).await {
                            Ok(body) => finish(h, body),
                            Err(response) => response,
                        };
                    }
                    Source::Stored(object, _) => read(router, &key, object.size).await,
                };
                return match body {
                    Ok(Some(Fetched::Bytes(bytes))) => finish(h, bytes),
                    Ok(Some(Fetched::Stream(length, stream))) => {
                        with_body(plan.status, h, request.head, length, || Body::from_stream(stream))
                    }
                    Ok(None) if probing && plan.encoding != Encoding::Identity => {
                        // Not made yet: the same answer without that variant.
                        available &= !bit(plan.encoding);
                        continue;
                    }
                    Ok(None) => missing(&key),
                    Err(e) => failed(&key, &e),
                };
            }
        };
        let bytes = match source {
            Source::Memory(p) => p.identity.slice(start as usize..=end as usize),
            Source::Stored(..) => {
                let key = object_key(hash, Encoding::Identity);
                match router.objects.get_range(&key, start..end + 1).await {
                    Ok(Some(b)) => b,
                    Ok(None) => return missing(&key),
                    Err(e) => return failed(&key, &e),
                }
            }
        };
        return finish(h, bytes);
    }
}

/// A response of `length` bytes: `body`, or none for `HEAD`.
fn with_body(status: StatusCode, mut h: HeaderMap, head: bool, length: u64, body: impl FnOnce() -> Body) -> Response {
    h.insert(CONTENT_LENGTH, HeaderValue::from(length));
    let mut r = Response::new(if head { Body::empty() } else { body() });
    *r.status_mut() = status;
    *r.headers_mut() = h;
    r
}

/// The `encodings` bit of a coding.
fn bit(encoding: Encoding) -> u8 {
    match encoding {
        Encoding::Identity => 0,
        Encoding::Gzip => encodings::GZIP,
        Encoding::Brotli => encodings::BROTLI,
    }
}

/// The header fields of a planned response (its length aside).
fn head(plan: &Plan, meta: &EntryHeaders, hash: &str, size: u64, cache_control: HeaderValue) -> HeaderMap {
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
    if let Some(tagged) = plan.etag {
        h.insert(ETAG, meta.etag(hash, tagged));
    }
    if plan.accept_ranges {
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    if plan.content_type {
        h.insert(CONTENT_TYPE, meta.content_type.clone());
    }
    match plan.part {
        Part::Range(start, end) => {
            h.insert(CONTENT_RANGE, header(&format!("bytes {start}-{end}/{size}")));
        }
        Part::Nothing if plan.status == StatusCode::RANGE_NOT_SATISFIABLE => {
            h.insert(CONTENT_RANGE, header(&format!("bytes */{size}")));
        }
        Part::Whole if plan.encoding != Encoding::Identity => {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static(plan.encoding.header().unwrap_or_default()));
        }
        _ => {}
    }
    h
}

/// A stored body, read whole or opened as a stream.
enum Fetched {
    Bytes(Bytes),
    Stream(u64, BodyStream),
}

/// A stored body: whole when small enough for the hot-body cache (and kept
/// there), else streamed. `size` is the identity size; variants are smaller.
async fn read(router: &Router, key: &str, size: u64) -> Result<Option<Fetched>, sesame_objects::ObjectError> {
    if let Some(bodies) = &router.bodies {
        if let Some(bytes) = bodies.get(key) {
            return Ok(Some(Fetched::Bytes(bytes)));
        }
        if bodies.admits(size) {
            let found = router.objects.get(key).await?;
            if let Some(bytes) = &found {
                bodies.insert(key, bytes.clone());
            }
            return Ok(found.map(Fetched::Bytes));
        }
    }
    Ok(router.objects.open(key).await?.map(|(length, stream)| Fetched::Stream(length, stream)))
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
