//! The examples built and served by the real binary, checked over real HTTP.

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    LAST_MODIFIED, LOCATION, RANGE,
};

use crate::support::{Server, built_example, built_example_with, client, eventually};

const HTML: &str = "text/html; charset=utf-8";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

#[tokio::test]
async fn gallery_pages_listings_and_protocol() {
    let dir = built_example("gallery");
    let server = Server::in_process(dir.path());
    let http = client();
    let get = |path: &str| http.get(server.url(path)).send();

    // Item page, listings (landing, first and a deep page), tag and owner pages,
    // sitemap and robots: 200 with the right type.
    for (path, ctype, needle) in [
        ("/", HTML, "Browse the gallery"),
        ("/sprites/132/", HTML, "A small example package"),
        ("/sprites/", HTML, "<h1>Gallery <small>Newest</small></h1>"),
        ("/sprites/page/1/", HTML, "Page 1"),
        ("/sprites/page/42/", HTML, "Page 42"),
        ("/tags/example/", HTML, "Tag <q>example</q>"),
        ("/owners/101hello/", HTML, "Sprites by 101hello"),
        ("/sitemap.xml", "application/xml", "<sitemapindex"),
        ("/sitemaps/1.xml", "application/xml", "<loc>http://127.0.0.1:8080/sprites/132/</loc>"),
        ("/robots.txt", "text/plain; charset=utf-8", "Sitemap: http://127.0.0.1:8080/sitemap.xml"),
        ("/static/style.css", "text/css; charset=utf-8", ".grid"),
    ] {
        let r = get(path).await.expect("request");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()[CONTENT_TYPE], ctype, "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
        let body = r.text().await.expect("body");
        assert!(body.contains(needle), "{path} lacks {needle:?}");
    }

    // Deep pages of the stable gallery link down and to the landing, never to
    // the current maximum.
    let deep = get("/sprites/page/42/").await.expect("request").text().await.expect("body");
    for link in [
        "href=\"/sprites/\"",
        "href=\"/sprites/page/43/\"",
        "href=\"/sprites/page/41/\"",
        "href=\"/sprites/page/32/\"",
        "href=\"/sprites/page/1/\"",
    ] {
        assert!(deep.contains(link), "page 42 lacks {link}");
    }
    assert!(!deep.contains("/sprites/page/84/"), "a frozen page must not name the top page");

    // Validators: ETag and Last-Modified, 304 on a match, cache headers.
    let r = get("/sprites/132/").await.expect("request");
    let etag = r.headers()[ETAG].clone();
    assert!(r.headers().contains_key(LAST_MODIFIED));
    assert_eq!(r.headers()[CACHE_CONTROL], "public, max-age=60, stale-while-revalidate=600");
    assert!(r.headers()["cache-tag"].to_str().expect("ascii").contains("doc:sprites/132"));
    let r = http.get(server.url("/sprites/132/")).header(IF_NONE_MATCH, etag.clone()).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert!(r.bytes().await.expect("body").is_empty());

    // HEAD: same headers, no body.
    let full_len = get("/sprites/").await.expect("request").bytes().await.expect("body").len();
    let r = http.head(server.url("/sprites/")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_LENGTH], full_len.to_string().as_str());
    assert!(r.bytes().await.expect("body").is_empty());

    // Ranges: 206 for a good one, 416 for one past the end.
    let r = http.get(server.url("/sprites/")).header(RANGE, "bytes=0-14").send().await.expect("request");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()[CONTENT_RANGE], format!("bytes 0-14/{full_len}").as_str());
    assert_eq!(r.text().await.expect("body"), "<!doctype html>");
    let r = http.get(server.url("/sprites/")).header(RANGE, "bytes=99999999-").send().await.expect("request");
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()[CONTENT_RANGE], format!("bytes */{full_len}").as_str());

    // Precompressed bodies picked by Accept-Encoding.
    let r = http.get(server.url("/sprites/")).header(ACCEPT_ENCODING, "gzip, br").send().await.expect("request");
    assert_eq!(r.headers()[CONTENT_ENCODING], "br");
    let r = http.get(server.url("/sprites/")).header(ACCEPT_ENCODING, "gzip").send().await.expect("request");
    assert_eq!(r.headers()[CONTENT_ENCODING], "gzip");

    // Immutable content-addressed URL.
    let hash = etag.to_str().expect("ascii").trim_matches('"').to_string();
    let r = get(&format!("/_v/{hash}")).await.expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CACHE_CONTROL], "public, max-age=31536000, immutable");

    // Trailing-slash redirect, and the project's own 404 page.
    let r = get("/sprites/132?x=1").await.expect("request");
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()[LOCATION], "/sprites/132/?x=1");
    let r = get("/no/such/page/").await.expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.expect("body").contains("<h1>Not found</h1>"));
    assert_eq!(get("/sprites/page/999/").await.expect("request").status(), StatusCode::NOT_FOUND);
    assert_eq!(
        http.post(server.url("/sprites/")).send().await.expect("request").status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn traversal_never_leaves_the_store() {
    let dir = built_example("microsites");
    std::fs::write(dir.path().join("secret.txt"), "TOP SECRET").expect("write");
    let server = Server::in_process(dir.path());
    for target in [
        "/../secret.txt",
        "/../../../../etc/passwd",
        "/%2e%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%2f..%2fsecret.txt",
        "/static/../secret.txt",
        "/static/%2e%2e/%2e%2e/secret.txt",
        "/.sesame/sesame.db",
        "/sesame.toml",
        "/templates/site.html",
        "/_v/../../secret.txt",
        "/_v/%2e%2e%2fsesame.toml",
        "//etc/passwd",
    ] {
        let (status, body) = server.raw_get(target).await;
        assert!(status == 404 || status == 400, "{target}: {status}");
        assert!(
            !body.contains("TOP SECRET") && !body.contains("root:") && !body.contains("base_url"),
            "{target} leaked"
        );
    }
}

#[tokio::test]
async fn microsites_render_sanitised_user_content() {
    let dir = built_example("microsites");
    let server = Server::in_process(dir.path());
    let http = client();
    let page = |path: &'static str| {
        let http = http.clone();
        let url = server.url(path);
        async move {
            let r = http.get(url).send().await.expect("request");
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            r.text().await.expect("body")
        }
    };
    let ada = page("/ada/").await;
    assert!(ada.contains("<h1>Ada Park</h1>"));
    assert!(ada.contains("<p>Maker of <strong>tiny robots</strong>"), "markdown bio rendered");
    assert!(
        ada.contains("<a href=\"mailto:ada@example.com\" rel=\"noopener noreferrer\">"),
        "markdown sections rendered"
    );
    assert!(ada.contains("<link rel=\"canonical\" href=\"http://127.0.0.1:8080/ada/\">"));
    let eli = page("/eli/").await;
    // The one script element is the page's own structured data.
    assert_eq!(eli.matches("<script").count(), 1, "script stripped");
    assert!(eli.contains("<script type=\"application/ld+json\">"));
    assert!(!eli.contains("onerror"), "event handler stripped");
    // A `javascript:` link cannot be stored (the schema takes http(s) only);
    // the `safe_url` filter would neutralise it anyway (render unit tests).
    let directory = page("/sites/").await;
    assert!(directory.find("Ada Park") < directory.find("Bo Lindqvist"), "directory ordered by name");
    assert!(page("/sitemaps/1.xml").await.contains("<loc>http://127.0.0.1:8080/fatima/</loc>"));
}

#[tokio::test]
async fn bodies_stored_without_variants_are_compressed_on_request() {
    let dir = built_example_with("gallery", &|c| c.replace("compress = true", "compress = false"));
    let server = Server::in_process(dir.path());
    let http = client();
    let get = |encoding: &'static str| http.get(server.url("/sprites/")).header(ACCEPT_ENCODING, encoding).send();

    let r = get("identity").await.expect("request");
    assert!(r.headers().get(CONTENT_ENCODING).is_none());
    let etag = r.headers()[ETAG].to_str().expect("ascii").trim_matches('"').to_string();
    let identity = r.bytes().await.expect("body");
    for _ in 0..2 {
        // Compressed once, then served from memory: the same bytes.
        let r = get("gzip").await.expect("request");
        assert_eq!(r.headers()[CONTENT_ENCODING], "gzip");
        assert_eq!(r.headers()[ETAG], format!("\"{etag}.gz\"").as_str());
        assert_eq!(r.headers()["vary"], "Accept-Encoding");
        let gz = r.bytes().await.expect("body");
        assert!(gz.len() * 3 < identity.len(), "{} of {} bytes", gz.len(), identity.len());
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).expect("gzip");
        assert_eq!(plain, identity);
    }
    let r = get("gzip, br").await.expect("request");
    assert_eq!(r.headers()[CONTENT_ENCODING], "br");
    assert_eq!(r.headers()[ETAG], format!("\"{etag}.br\"").as_str());
    assert!(r.bytes().await.expect("body").len() * 3 < identity.len());
}

/// A publish makes the page live without compressing it: until its variants
/// are stored the router sends it uncompressed (as the edge Worker does; both
/// look in storage), then the stored gzip variant, which a router started
/// afterwards serves too: the same bytes under the same entity tag.
#[tokio::test]
async fn compressed_variants_follow_a_publish() {
    use crate::support::{Api, change_id, metric, microsites_with, quick};
    let dir = microsites_with(quick);
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let alice = api.sign_up("alice").await;
    let long_bio = "A garden of *many* words. ".repeat(40);
    let r = api
        .send(
            reqwest::Method::PUT,
            "/api/sites/alice",
            &alice,
            Some(serde_json::json!({ "name": "Alice", "bio": long_bio })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    api.published(&alice, change_id(&r.json().await.expect("json"))).await;
    let gzip = || async {
        let r = api.http.get(server.url("/alice/")).header(ACCEPT_ENCODING, "gzip").send().await.expect("request");
        assert_eq!(r.status(), StatusCode::OK);
        let coding = r.headers().get(CONTENT_ENCODING).map(|v| v.to_str().expect("ascii").to_string());
        (coding, r.headers()[ETAG].to_str().expect("ascii").to_string(), r.bytes().await.expect("body"))
    };
    // Live at once: uncompressed under identity's tag, or already the variant.
    let (coding, etag, _) = gzip().await;
    assert_eq!(coding.is_some(), etag.ends_with(".gz\""), "{coding:?} under {etag}");
    eventually("both variants are stored", || async {
        let metrics = api.get("/metrics").await.text().await.expect("metrics");
        let written = metric(&metrics, "sesame_variant_files_written_total");
        if written >= 2.0 { Ok(()) } else { Err(format!("{written} written")) }
    })
    .await;
    let (coding, etag, body) = gzip().await;
    assert_eq!(coding.as_deref(), Some("gzip"), "the stored variant, once there");
    let first = (etag, body);
    drop(server);
    let hash = first.0.trim_matches('"').trim_end_matches(".gz").to_string();
    let stored = crate::support::stored_objects(dir.path()).await;
    assert!(stored.contains(&format!("{}/{hash}.gz", &hash[..2])), "the gzip variant is stored: {stored:?}");
    let again = Server::in_process(dir.path());
    let r = client().get(again.url("/alice/")).header(ACCEPT_ENCODING, "gzip").send().await.expect("request");
    assert_eq!(r.headers()[ETAG].to_str().expect("ascii"), first.0);
    assert_eq!(r.bytes().await.expect("body"), first.1, "the stored variant is the one made on request");
}

/// The stylesheet a page links.
fn stylesheet(html: &str) -> String {
    let at = html.find("rel=\"stylesheet\" href=\"").expect("a stylesheet link") + "rel=\"stylesheet\" href=\"".len();
    html[at..].split('"').next().expect("href").to_string()
}

#[tokio::test]
async fn pages_link_static_files_by_fingerprint_cached_for_good_and_the_previous_version_stays_one_build() {
    let dir = built_example("microsites");
    let d = dir.path();
    let server = Server::in_process(d);
    let http = client();
    let get = |path: String| {
        let request = http.get(server.url(&path));
        async move { request.send().await.expect("request") }
    };
    let first = stylesheet(&get("/".into()).await.text().await.expect("body"));
    assert!(first.starts_with("/static/style.") && first.ends_with(".css") && first.len() == 34, "{first}");
    let r = get(first.clone()).await;
    assert_eq!((r.status(), r.headers()[CACHE_CONTROL].to_str().ok()), (StatusCode::OK, Some(IMMUTABLE)));
    assert_eq!(r.headers()[CONTENT_TYPE], "text/css; charset=utf-8");
    let plain = get("/static/style.css".into()).await;
    assert_eq!(
        plain.headers()[CACHE_CONTROL],
        "public, max-age=60, stale-while-revalidate=600",
        "old links keep working"
    );
    assert_eq!(r.bytes().await.expect("css"), plain.bytes().await.expect("css"));

    // A changed stylesheet: pages link the new version at once; the one
    // they linked before stays for one build (pages cached anywhere still
    // find it), then goes.
    let css = d.join("static/style.css");
    let text = std::fs::read_to_string(&css).expect("css") + "\n.changed { color: red }\n";
    std::fs::write(&css, text).expect("write css");
    crate::support::ok(d, &["build"]);
    let second = eventually("pages linking the new stylesheet", || async {
        let now = stylesheet(&get("/ada/".into()).await.text().await.expect("body"));
        if now != first { Ok(now) } else { Err(now) }
    })
    .await;
    let r = get(second.clone()).await;
    assert_eq!((r.status(), r.headers()[CACHE_CONTROL].to_str().ok()), (StatusCode::OK, Some(IMMUTABLE)));
    assert!(r.text().await.expect("css").contains(".changed"));
    assert_eq!(get(first.clone()).await.status(), StatusCode::OK, "the previous version, for one build");
    assert!(crate::support::ok(d, &["verify"]).contains("verified generation"));
    crate::support::ok(d, &["build"]);
    eventually("the version before gone", || async {
        match get(first.clone()).await.status() {
            StatusCode::NOT_FOUND => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
    assert_eq!(get(second).await.status(), StatusCode::OK);
    assert!(crate::support::ok(d, &["verify"]).contains("verified generation"));
}

/// Regression: a `serve` kept rendering with the templates it started with
/// after a `sesame build` beside it published new ones, so each later edit
/// put a page of the old look back on the site (and pages rendered on
/// request stayed old).
#[tokio::test]
async fn after_a_template_change_built_beside_it_a_running_serve_renders_with_the_new_templates() {
    const MARKER: &str = "<!-- the new look -->";
    let dir = crate::support::microsites_with(|c| {
        crate::support::quick(c)
            + "\n[[routes]]\nkind = \"listing\"\nname = \"newest\"\ncollection = \"sites\"\npath = \"/newest/\"\n\
               page_size = 2\nscheme = \"head\"\ntemplate = \"directory.html\"\n"
    });
    let d = dir.path();
    let server = Server::in_process(d);
    let api = crate::support::Api::new(&server);
    let token = api.sign_up("cora").await;
    let saved = |name: &'static str| {
        let (api, token) = (&api, &token);
        async move {
            let change =
                crate::support::change_id(&api.put_site(token, "cora", name).await.json().await.expect("json"));
            api.published(token, change).await;
        }
    };
    saved("Cora v1").await;
    let page = |path: String| {
        let api = &api;
        async move { api.get(&path).await.text().await.expect("body") }
    };
    assert!(!page("/cora/".into()).await.contains(MARKER));

    // The base template changes, and a build beside the server publishes it.
    let base = d.join("templates/_base.html");
    let text = std::fs::read_to_string(&base).expect("template").replacen("<head>", &format!("<head>{MARKER}"), 1);
    std::fs::write(&base, text).expect("write template");
    crate::support::ok(d, &["build"]);
    eventually("the built pages served", || async {
        if page("/cora/".into()).await.contains(MARKER) { Ok(()) } else { Err("old".to_string()) }
    })
    .await;

    // The server's own publisher renders the next edit with them too ...
    saved("Cora v2").await;
    let edited = page("/cora/".into()).await;
    assert!(edited.contains("Cora v2") && edited.contains(MARKER), "{edited}");
    // ... and so do the pages it renders on request.
    let newest = page("/newest/".into()).await;
    let older = newest.split("rel=\"next\" href=\"").nth(1).and_then(|r| r.split('"').next()).expect("an older page");
    let deep = page(older.replace("&amp;", "&")).await;
    assert!(deep.contains("<ul class=\"directory\">") && deep.contains(MARKER), "{deep}");
}

/// Pages published without their compressed variants (a publisher stopped
/// before compressing, or `[publish] compress` turned on later) get them
/// when a publisher starts: before, they were served uncompressed for good.
#[tokio::test]
async fn pages_left_without_variants_get_them_when_a_publisher_starts() {
    let dir = built_example_with("microsites", &|c| c + "\n[publish]\ncompress = false\n");
    let d = dir.path();
    let config = d.join("sesame.toml");
    let text = std::fs::read_to_string(&config).expect("config").replace("compress = false", "compress = true");
    std::fs::write(&config, text).expect("write config");
    // Routers compress on request only where no variants are ever stored:
    // a gzip answer now is a stored variant.
    let server = Server::in_process(d);
    let http = client();
    eventually("/ada/ served from its stored gzip variant", || async {
        let r = http.get(server.url("/ada/")).header(ACCEPT_ENCODING, "gzip").send().await.expect("request");
        match r.headers().get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
            Some("gzip") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}
