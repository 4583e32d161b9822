//! The rulebook: what a request gets, decided without storage or a socket.
//! `respond.rs` does the lookups and the reads; everything it answers with
//! is decided here, by pure functions of the request's fields, the entry
//! and the [`ServeRules`](sesame_model::ServeRules). The edge Worker
//! (`edge/cloudflare/src/worker.js`) has the same functions under the same
//! names, and both test suites run the one file of vectors,
//! `crates/router/tests/vectors.json`.

use axum::http::header::{
    ACCEPT_ENCODING, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use sesame_model::time::parse_http_date;
use sesame_objects::Encoding;

use crate::rfc::{self, RangeAsk};

/// The request fields a response depends on.
pub(crate) struct Request<'a> {
    pub headers: &'a HeaderMap,
    pub head: bool,
}

impl Request<'_> {
    pub fn get(&self, name: HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What is served: a stored object or a page held in memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Representation<'a> {
    /// Content hash of the identity bytes.
    pub hash: &'a str,
    /// Size of the identity bytes.
    pub size: u64,
    /// `Last-Modified` (Unix seconds), when known.
    pub modified: Option<i64>,
    /// The compressed variants that may be sent (`encodings` bits).
    pub available: u8,
}

/// The part of the representation sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// No body (304, 412, 416).
    Nothing,
    /// All of it, in [`Plan::encoding`].
    Whole,
    /// Identity bytes `start..=end` (206).
    Range(u64, u64),
}

/// The head of a response and which bytes follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub status: StatusCode,
    /// The coding of the body (identity for ranges).
    pub encoding: Encoding,
    /// The representation whose entity tag is sent (none for error pages).
    pub etag: Option<Encoding>,
    /// Whether `Accept-Ranges: bytes` is sent.
    pub accept_ranges: bool,
    /// Whether `Content-Type` is sent (not with 304 or 412).
    pub content_type: bool,
    pub part: Part,
}

/// What the preconditions of RFC 9110 section 13.2.2 decide, in its order.
#[derive(Debug, PartialEq, Eq)]
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
/// entity tag equal to theirs (`tag`), or exactly their `Last-Modified` date.
pub(crate) fn if_range_holds(request: &Request<'_>, tag: &str, modified: Option<i64>) -> bool {
    match request.get(IF_RANGE).map(str::trim) {
        None => true,
        Some(v) if v.starts_with('"') || v.starts_with("W/") => rfc::strong_match(v, (tag, "")),
        Some(v) => parse_http_date(v).is_some_and(|d| Some(d) == modified),
    }
}

/// Validators, negotiation and ranges: what a request gets of a
/// representation served with `status` (200, or an error page's 404/410).
/// Preconditions and ranges apply to 200 only; ranges to GET only, and are
/// cut from the identity bytes (RFC 9110, 14.2).
pub(crate) fn plan(request: &Request<'_>, rep: &Representation<'_>, status: StatusCode) -> Plan {
    let ok = status == StatusCode::OK;
    let selected = rfc::negotiate(request.get(ACCEPT_ENCODING), rep.available);
    let bare = |status, etag| Plan {
        status,
        encoding: selected,
        etag: Some(etag),
        accept_ranges: false,
        content_type: false,
        part: Part::Nothing,
    };
    if ok {
        match evaluate(request, (rep.hash, selected.suffix()), rep.modified) {
            Precondition::Proceed => {}
            Precondition::NotModified => return bare(StatusCode::NOT_MODIFIED, selected),
            Precondition::Failed => return bare(StatusCode::PRECONDITION_FAILED, selected),
        }
    }
    let range = match request.get(RANGE) {
        Some(value) if ok && !request.head && if_range_holds(request, rep.hash, rep.modified) => {
            rfc::range(value, rep.size)
        }
        _ => RangeAsk::Whole,
    };
    let identity = |status, part| Plan {
        status,
        encoding: Encoding::Identity,
        etag: Some(Encoding::Identity),
        accept_ranges: true,
        content_type: true,
        part,
    };
    match range {
        RangeAsk::Unsatisfiable => identity(StatusCode::RANGE_NOT_SATISFIABLE, Part::Nothing),
        RangeAsk::One(start, end) => identity(StatusCode::PARTIAL_CONTENT, Part::Range(start, end)),
        RangeAsk::Whole => Plan {
            status,
            encoding: selected,
            etag: ok.then_some(selected),
            accept_ranges: ok,
            content_type: true,
            part: Part::Whole,
        },
    }
}

/// In host mode (`suffix`: lowercase, without a trailing dot), the site a
/// request's `Host` names: `HANDLE.SUFFIX` (any case, any port, with or
/// without the trailing dot of a fully qualified name) → `handle`.
pub(crate) fn host_site(suffix: Option<&str>, host: Option<&str>) -> Option<String> {
    let (suffix, host) = (suffix?, host_name(host?));
    let handle = host.strip_suffix(suffix)?.strip_suffix('.')?;
    let valid = !handle.is_empty() && handle.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then(|| handle.to_string())
}

/// A `Host` field's name as DNS has it: without its port and the trailing
/// dot of a fully qualified name, lowercase.
pub(crate) fn host_name(host: &str) -> String {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if (!h.ends_with(']') || h.starts_with('[')) && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The generation asked for with `?v=N`, if any.
pub(crate) fn version(query: Option<&str>) -> Option<u64> {
    query?.split('&').find_map(|kv| kv.strip_prefix("v=")).and_then(|v| v.parse().ok())
}

/// The path a request names, as a browser, an edge Worker's runtime and
/// Cloudflare read it (the WHATWG URL standard): dot segments resolved,
/// also percent-encoded ones (`%2e%2e`), and backslashes taken for
/// slashes. `None` when the path is already so (the common case, found
/// without parsing).
pub(crate) fn normalize(path: &str) -> Option<String> {
    let suspect = path.contains("/.") || path.contains('\\') || path.contains("%2e") || path.contains("%2E");
    if !suspect {
        return None;
    }
    let url = url::Url::parse(&format!("http://sesame.invalid{path}")).ok()?;
    (url.path() != path).then(|| url.path().to_string())
}

/// Whether a path names the content it serves (a static file's
/// fingerprinted URL): then it is answered as immutable.
pub(crate) fn fingerprinted(path: &str, hash: &str) -> bool {
    sesame_model::serve::unfingerprinted(path, hash).is_some()
}

/// Whether a request for a stored page (its dependency keys `deps`) asks
/// for a page rendered on request instead: a `head` listing's first page
/// (its own key names one of `head_routes`) with an `after` cursor. A server
/// that does not render it answers 404, never the first page.
pub(crate) fn on_request(query: Option<&str>, deps: &str, head_routes: &[String]) -> bool {
    let listing = deps.split(' ').next().and_then(|own| own.strip_prefix("list:"));
    let route = listing.and_then(|l| l.split_once(':')).map(|(route, _)| route);
    sesame_model::on_demand::after_cursor(query).is_some() && route.is_some_and(|r| head_routes.iter().any(|h| h == r))
}

/// The directory a path not found may stand for: `/x` and `/x/index.html`
/// lead to `/x/` (redirected there when it exists, now or in a generation
/// asked for with `?v=`).
pub(crate) fn directory_of(path: &str) -> Option<String> {
    match path.strip_suffix("index.html") {
        Some(dir) if dir.ends_with('/') => Some(dir.to_string()),
        _ => (!path.ends_with('/')).then(|| format!("{path}/")),
    }
}

/// `Cache-Tag` from dependency keys (space-separated), cut to whole keys
/// within `max` bytes.
pub(crate) fn cache_tag<'d>(deps: impl IntoIterator<Item = &'d str>, max: usize) -> Option<String> {
    let mut tags = String::new();
    for dep in deps {
        if tags.len() + dep.len() + 1 > max {
            break;
        }
        if !tags.is_empty() {
            tags.push(',');
        }
        tags.push_str(dep);
    }
    (!tags.is_empty()).then_some(tags)
}

/// The vectors both the router and the Worker are held to.
#[cfg(test)]
mod vectors {
    use axum::http::{HeaderName, HeaderValue};
    use serde_json::{Value, json};
    use sesame_store::encodings;

    use super::*;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../tests/vectors.json")).expect("vectors.json is JSON")
    }

    fn cases(name: &str) -> Vec<Value> {
        let cases = vectors()[name].as_array().unwrap_or_else(|| panic!("no {name} vectors")).clone();
        assert!(!cases.is_empty(), "{name}: no cases");
        cases
    }

    fn s(v: &Value) -> Option<&str> {
        v.as_str()
    }

    fn bits(names: &Value) -> u8 {
        names.as_array().expect("available").iter().fold(0, |b, n| match n.as_str() {
            Some("gzip") => b | encodings::GZIP,
            Some("br") => b | encodings::BROTLI,
            other => panic!("unknown coding {other:?}"),
        })
    }

    fn coding(e: Encoding) -> &'static str {
        e.header().unwrap_or("identity")
    }

    fn headers(fields: &Value) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in fields.as_object().into_iter().flatten() {
            let value = value.as_str().expect("header values are strings");
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        h
    }

    #[test]
    fn entity_tags() {
        for c in cases("tags") {
            let (value, tag) = (s(&c["value"]).expect("value"), s(&c["tag"]).expect("tag"));
            assert_eq!(rfc::strong_match(value, (tag, "")), c["strong"], "strong {c}");
            assert_eq!(rfc::weak_match(value, (tag, "")), c["weak"], "weak {c}");
        }
    }

    #[test]
    fn accept_encoding() {
        for c in cases("negotiate") {
            let got = rfc::negotiate(s(&c["accept"]), bits(&c["available"]));
            assert_eq!(coding(got), c["expect"], "{c}");
        }
    }

    #[test]
    fn byte_ranges() {
        for c in cases("range") {
            let got = match rfc::range(s(&c["value"]).expect("value"), c["size"].as_u64().expect("size")) {
                RangeAsk::Whole => json!("whole"),
                RangeAsk::Unsatisfiable => json!("unsatisfiable"),
                RangeAsk::One(a, b) => json!([a, b]),
            };
            assert_eq!(got, c["expect"], "{c}");
        }
    }

    #[test]
    fn what_is_worth_compressing() {
        for c in cases("compressible") {
            let got = sesame_objects::compressible(s(&c["type"]).expect("type"), c["size"].as_u64().expect("size"));
            assert_eq!(json!(got), c["expect"], "{c}");
        }
    }

    #[test]
    fn http_dates() {
        for c in cases("dates") {
            assert_eq!(json!(parse_http_date(s(&c["text"]).expect("text"))), c["expect"], "{c}");
        }
    }

    #[test]
    fn hosts_paths_and_versions() {
        for c in cases("host_site") {
            assert_eq!(json!(host_site(s(&c["suffix"]), s(&c["host"]))), c["expect"], "{c}");
        }
        for c in cases("directory_of") {
            assert_eq!(json!(directory_of(s(&c["path"]).expect("path"))), c["expect"], "{c}");
        }
        for c in cases("version") {
            assert_eq!(json!(version(s(&c["query"])).map(|v| v.to_string())), c["expect"], "{c}");
        }
        for c in cases("normalize") {
            let path = s(&c["path"]).expect("path");
            let got = normalize(path).unwrap_or_else(|| path.to_string());
            assert_eq!(json!(got), c["expect"], "{c}");
        }
        for c in cases("fingerprinted") {
            let got = fingerprinted(s(&c["path"]).expect("path"), s(&c["hash"]).expect("hash"));
            assert_eq!(json!(got), c["expect"], "{c}");
        }
        for c in cases("on_request") {
            let routes: Vec<String> = serde_json::from_value(c["head_routes"].clone()).expect("head_routes");
            let got = on_request(s(&c["query"]), s(&c["deps"]).expect("deps"), &routes);
            assert_eq!(json!(got), c["expect"], "{c}");
        }
        for c in cases("cache_tag") {
            let deps = s(&c["deps"]).expect("deps").split(' ').filter(|d| !d.is_empty());
            assert_eq!(json!(cache_tag(deps, c["max"].as_u64().expect("max") as usize)), c["expect"], "{c}");
        }
    }

    #[test]
    fn plans() {
        for c in cases("plan") {
            let fields = headers(&c["headers"]);
            let request = Request { headers: &fields, head: c["method"] == "HEAD" };
            let o = &c["object"];
            let rep = Representation {
                hash: s(&o["hash"]).expect("hash"),
                size: o["size"].as_u64().expect("size"),
                modified: o["modified"].as_i64(),
                available: bits(&o["available"]),
            };
            let status = StatusCode::from_u16(c["status"].as_u64().expect("status") as u16).expect("status");
            let p = plan(&request, &rep, status);
            let got = json!({
                "status": p.status.as_u16(),
                "encoding": coding(p.encoding),
                "etag": p.etag.map(|e| format!("{}{}", rep.hash, e.suffix())),
                "accept_ranges": p.accept_ranges,
                "content_type": p.content_type,
                "part": match p.part {
                    Part::Nothing => json!("nothing"),
                    Part::Whole => json!("whole"),
                    Part::Range(a, b) => json!([a, b]),
                },
            });
            assert_eq!(got, c["expect"], "{}", c["why"]);
        }
    }
}
