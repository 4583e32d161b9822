//! HTTP done exactly: one test per RFC clause the router (and the server
//! beneath the API) once got wrong, over real connections.

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE, VARY,
};
use serde_json::json;

use crate::support::{Api, Server, built_example, client, microsites_with};

/// A page that has gzip and brotli variants.
const PAGE: &str = "/ada/";

/// GETs `PAGE` with these header fields.
async fn get(server: &Server, fields: &[(reqwest::header::HeaderName, &str)]) -> reqwest::Response {
    let mut r = client().get(server.url(PAGE));
    for (name, value) in fields {
        r = r.header(name.clone(), *value);
    }
    r.send().await.expect("request")
}

fn etag(r: &reqwest::Response) -> String {
    r.headers()[ETAG].to_str().expect("ascii").to_string()
}

#[tokio::test]
async fn rfc9110_12_5_3_accept_encoding_weights_wildcards_and_case() {
    let dir = built_example("microsites");
    let server = Server::in_process(dir.path());
    for (accept, expected) in [
        ("br;q=0, *", Some("gzip")),
        ("GZIP", Some("gzip")),
        ("gzip;q=0.5, br;q=0.9", Some("br")),
        ("gzip;q=0.9, br;q=0.5", Some("gzip")),
        ("br;q=0, gzip;q=0", None),
        ("identity", None),
        ("identity;q=1, br;q=0.5", None),
        ("*", Some("br")),
    ] {
        let r = get(&server, &[(ACCEPT_ENCODING, accept)]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let coding = r.headers().get(CONTENT_ENCODING).map(|v| v.to_str().expect("ascii").to_string());
        assert_eq!(coding.as_deref(), expected, "Accept-Encoding: {accept}");
    }
}

#[tokio::test]
async fn rfc9110_13_1_5_if_range_compares_strongly() {
    let dir = built_example("microsites");
    let server = Server::in_process(dir.path());
    let identity = get(&server, &[]).await;
    let (identity_tag, modified) =
        (etag(&identity), identity.headers()[LAST_MODIFIED].to_str().expect("a").to_string());
    let size = identity.bytes().await.expect("body").len();
    let brotli = etag(&get(&server, &[(ACCEPT_ENCODING, "br")]).await);
    assert_eq!(brotli, format!("{}.br\"", identity_tag.trim_end_matches('"')));
    // A resumed brotli download must not get a piece of the identity bytes.
    let r = get(&server, &[(ACCEPT_ENCODING, "br"), (RANGE, "bytes=10-"), (IF_RANGE, &brotli)]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_ENCODING], "br");
    for (if_range, status) in [
        (identity_tag.as_str(), StatusCode::PARTIAL_CONTENT),
        (&format!("W/{identity_tag}"), StatusCode::OK),
        (modified.as_str(), StatusCode::PARTIAL_CONTENT),
        ("Sun, 06 Nov 1994 08:49:37 GMT", StatusCode::OK),
    ] {
        let r = get(&server, &[(RANGE, "bytes=0-9"), (IF_RANGE, if_range)]).await;
        assert_eq!(r.status(), status, "If-Range: {if_range}");
        let expected = if status == StatusCode::OK { size } else { 10 };
        assert_eq!(r.bytes().await.expect("body").len(), expected, "If-Range: {if_range}");
    }
}

#[tokio::test]
async fn rfc9110_14_ranges_unknown_units_head_and_clamping() {
    let dir = built_example("microsites");
    let server = Server::in_process(dir.path());
    let size = get(&server, &[]).await.bytes().await.expect("body").len();
    // HEAD: range handling is defined for GET only.
    let r = client().head(server.url(PAGE)).header(RANGE, "bytes=0-9").send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_LENGTH], size.to_string().as_str());
    for (range, status, content_range) in [
        ("items=0-5", StatusCode::OK, None),
        ("bytes=5-1", StatusCode::OK, None),
        ("BYTES=0-4", StatusCode::PARTIAL_CONTENT, Some("bytes 0-4/".to_string())),
        ("bytes=0-99999999999999999999", StatusCode::PARTIAL_CONTENT, Some(format!("bytes 0-{}/", size - 1))),
        ("bytes=-5", StatusCode::PARTIAL_CONTENT, Some(format!("bytes {}-{}/", size - 5, size - 1))),
        ("bytes=999999-", StatusCode::RANGE_NOT_SATISFIABLE, Some("bytes */".to_string())),
    ] {
        let r = get(&server, &[(RANGE, range)]).await;
        assert_eq!(r.status(), status, "Range: {range}");
        let got = r.headers().get(CONTENT_RANGE).map(|v| v.to_str().expect("ascii").to_string());
        match content_range {
            Some(prefix) => assert_eq!(got, Some(format!("{prefix}{size}")), "Range: {range}"),
            None => assert_eq!(got, None, "Range: {range}"),
        }
    }
}

#[tokio::test]
async fn rfc9110_15_4_5_a_304_carries_the_etag_of_the_200_it_stands_for() {
    let dir = built_example("microsites");
    let server = Server::in_process(dir.path());
    let ok = get(&server, &[(ACCEPT_ENCODING, "br")]).await;
    let tag = etag(&ok);
    let r = get(&server, &[(ACCEPT_ENCODING, "br"), (IF_NONE_MATCH, &tag)]).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag(&r), tag);
    assert_eq!(r.headers()[VARY], "Accept-Encoding");
    assert_eq!(r.headers()[CACHE_CONTROL], ok.headers()[CACHE_CONTROL]);
    assert!(r.headers().get(CONTENT_TYPE).is_none());
    let r = get(&server, &[(ACCEPT_ENCODING, "br"), (IF_NONE_MATCH, &format!("W/{tag}"))]).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "If-None-Match compares weakly");
    // The identity tag names another representation than the brotli one selected.
    let identity = tag.replace(".br", "");
    let r = get(&server, &[(ACCEPT_ENCODING, "br"), (IF_NONE_MATCH, &identity)]).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Preconditions for the other direction (13.1.1, 13.1.4).
    assert_eq!(get(&server, &[(IF_MATCH, "\"nope\"")]).await.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(get(&server, &[(IF_MATCH, "*")]).await.status(), StatusCode::OK);
    let old = "Sun, 06 Nov 1994 08:49:37 GMT";
    assert_eq!(get(&server, &[(IF_UNMODIFIED_SINCE, old)]).await.status(), StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn rfc9110_5_6_7_if_modified_since_in_all_three_date_formats() {
    let dir = built_example("microsites");
    let server = Server::in_process(dir.path());
    for (since, status) in [
        ("Thu, 01 Jan 2037 00:00:00 GMT", StatusCode::NOT_MODIFIED),
        ("Thursday, 01-Jan-37 00:00:00 GMT", StatusCode::NOT_MODIFIED),
        ("Thu Jan  1 00:00:00 2037", StatusCode::NOT_MODIFIED),
        ("Sunday, 06-Nov-94 08:49:37 GMT", StatusCode::OK),
        ("Sun Nov  6 08:49:37 1994", StatusCode::OK),
        ("not a date", StatusCode::OK),
    ] {
        assert_eq!(get(&server, &[(IF_MODIFIED_SINCE, since)]).await.status(), status, "If-Modified-Since: {since}");
    }
}

#[tokio::test]
async fn rfc9112_3_2_a_request_needs_exactly_one_host() {
    let dir = built_example("microsites");
    let server = Server::in_process(dir.path());
    let no_host = server.raw("GET /ada/ HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(no_host.status, 400);
    let two = server.raw("GET /ada/ HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n").await;
    assert_eq!(two.status, 400);
    let api = server.raw("PUT /api/sites/ada HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(api.status, 400, "the API sits behind the same check");
    let old = server.raw("GET /ada/ HTTP/1.0\r\n\r\n").await;
    assert_eq!(old.status, 200, "HTTP/1.0 has no Host requirement");
}

#[tokio::test]
async fn rfc9112_3_2_2_absolute_form_and_host_mode_names() {
    let dir = microsites_with(|c| c + "\n[serve]\nhost_suffix = \"Users.Example.NET.\"\n");
    let server = Server::in_process(dir.path());
    let absolute =
        server.raw("GET http://ada.users.example.net/ HTTP/1.1\r\nHost: www.example.org\r\nConnection: close\r\n\r\n");
    let absolute = absolute.await;
    assert_eq!(absolute.status, 200);
    assert!(absolute.body.contains("<h1>Ada Park</h1>"), "the target's authority names the host");
    for host in ["ADA.Users.Example.NET", "ada.users.example.net.", "ada.users.example.net:8080"] {
        let (status, body) = server.raw_get_host("/", host).await;
        assert_eq!(status, 200, "{host}");
        assert!(body.contains("<h1>Ada Park</h1>"), "{host}");
    }
    let css = server.raw("GET /static/style.css HTTP/1.1\r\nHost: ada.users.example.net\r\nConnection: close\r\n\r\n");
    let css = css.await;
    assert_eq!(css.status, 200, "user hosts serve the shared static files");
    assert!(css.header("content-type").is_some_and(|t| t.starts_with("text/css")));
}

#[tokio::test]
async fn rfc9110_11_1_the_auth_scheme_is_case_insensitive() {
    let dir = microsites_with(crate::support::quick);
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let token = api.sign_up("casey").await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = api
            .http
            .put(server.url("/api/sites/casey"))
            .header("authorization", format!("{scheme} {token}"))
            .json(&json!({"name": scheme}))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{scheme}");
    }
}
