//! Serving from the edge: the Cloudflare Worker (`edge/cloudflare`) in
//! workerd, reading an R2 bucket filled from the project's objects, against
//! the Rust router on the same published site. One HTTP conformance suite
//! runs against both after a full build and again after incremental
//! publishes (a takedown, a moved page, a rollback); a consistency test
//! reads through the Worker while generations are published.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    ADMIN, Api, Server, TestProject, built_example_with_local_objects, change_id, client, eventually, ok, quick, write,
};

/// The Worker's package: `npm ci` there installs Miniflare and workerd.
fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../edge/cloudflare")
}

/// The Worker in workerd with an R2 bucket mirrored from a `file://` object
/// storage (`edge/cloudflare/test/harness.mjs`); stopped on drop.
struct Edge {
    child: Child,
    worker: String,
    control: String,
}

impl Edge {
    /// The root is read again after `ttl_ms`; keys found absent are
    /// remembered for `miss_ttl_ms`.
    fn start(objects: &Path, ttl_ms: u64, miss_ttl_ms: u64) -> Edge {
        let dir = package();
        assert!(
            dir.join("node_modules/miniflare").is_dir(),
            "Miniflare is not installed: run `npm ci` in {} (scripts/test does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("test/harness.mjs"))
            .arg("--storage")
            .arg(objects)
            .args(["--ttl", &ttl_ms.to_string(), "--miss-ttl", &miss_ttl_ms.to_string()])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run node (install Node.js 18 or later)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("the harness announced its addresses");
        let urls: Value = serde_json::from_str(&line).expect("JSON addresses");
        let url = |k: &str| urls[k].as_str().expect("url").to_string();
        Edge { worker: url("worker"), control: url("control"), child }
    }

    /// Copies what sesame wrote since the last sync into the bucket.
    async fn sync(&self) {
        self.control("sync").await;
    }

    /// Puts bytes that are no root at `manifest/current` (until the next sync).
    async fn break_root(&self) {
        self.control("break-root").await;
    }

    async fn control(&self, action: &str) {
        let r = client().post(format!("{}/{action}", self.control)).send().await.expect(action);
        assert_eq!(r.status(), StatusCode::OK, "{action}: {}", r.text().await.unwrap_or_default());
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        // Closing stdin stops Miniflare and its workerd; kill if it lingers.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_workers_rules_pass_the_vectors_the_router_is_held_to() {
    // Cloudflare's edge re-encodes some answers for the client, so the
    // rules are also tested on their own, on crates/router/tests/vectors.json.
    let out = Command::new("node")
        .args(["--test", "test/rules.test.mjs"])
        .current_dir(package())
        .output()
        .expect("run node (install Node.js 18 or later)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("# pass 9") && report.contains("# fail 0"), "{report}");
}

/// A `head` listing of the sites, two to a page: its deep pages are
/// rendered on request by a router, and answered 404 at the edge.
const NEWEST: &str = "
[[routes]]
kind = \"listing\"
name = \"newest\"
collection = \"sites\"
path = \"/newest/\"
page_size = 2
scheme = \"head\"
template = \"directory.html\"
";

/// The microsites example with the manifest on, host mode, a `head`
/// listing, and objects in a local directory (what the harness mirrors into
/// its bucket).
fn edge_project() -> TestProject {
    built_example_with_local_objects("microsites", &|c| {
        // Small levels: over the publishes below, entries go through all three.
        let c = quick(c) + NEWEST + "\n[edge]\nmanifest = true\nrecent_entries = 20\ndelta_entries = 60\n";
        let c = c.replace("[dashboard]", "[serve]\nhost_suffix = \"users.test\"\n\n[dashboard]");
        match sesame_testkit::backend() {
            sesame_testkit::Backend::Embedded => c.replacen('\n', "\nstorage_url = \"file://.sesame/objects\"\n", 1),
            sesame_testkit::Backend::Scale => c,
        }
    })
}

/// The response fields the suite compares (dates and connection management
/// aside, every field either server sends).
const COMPARED: [&str; 15] = [
    "content-type",
    "content-encoding",
    "content-length",
    "etag",
    "last-modified",
    "cache-control",
    "cache-tag",
    "vary",
    "x-content-type-options",
    "content-security-policy",
    "location",
    "content-range",
    "accept-ranges",
    "allow",
    "retry-after",
];

/// What only the Worker sends: the reads a request cost (the harness turns
/// that on) and whether its root is stale.
const WORKER_ONLY: [&str; 2] = ["x-sesame-reads", "x-sesame-stale-root"];

/// One server's answer.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    /// The [`COMPARED`] fields.
    headers: BTreeMap<&'static str, String>,
    /// The [`WORKER_ONLY`] fields.
    worker_only: BTreeMap<&'static str, String>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).or_else(|| self.worker_only.get(name)).map(String::as_str)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn ask(base: &str, method: &Method, target: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = client().request(method.clone(), format!("{base}{target}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = request.send().await.unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    let status = r.status().as_u16();
    let fields = |names: &[&'static str]| {
        names
            .iter()
            .filter_map(|name| r.headers().get(*name).map(|v| (*name, v.to_str().unwrap_or("<binary>").to_string())))
            .collect()
    };
    let (headers, worker_only) = (fields(&COMPARED), fields(&WORKER_ONLY));
    let body = r.bytes().await.expect("body").to_vec();
    Answer { status, headers, worker_only, body }
}

/// The router and the Worker, asked the same requests.
struct Both<'a> {
    router: &'a Server,
    edge: &'a Edge,
    /// Requests asked, for the report.
    asked: usize,
}

impl Both<'_> {
    /// Asks both; they must answer alike (status, every compared field,
    /// body). Returns the answer.
    async fn ask(&mut self, method: Method, target: &str, headers: &[(&str, &str)]) -> Answer {
        let router = ask(&self.router.base, &method, target, headers).await;
        let worker = ask(&self.edge.worker, &method, target, headers).await;
        self.asked += 1;
        assert_eq!(
            (router.status, &router.headers),
            (worker.status, &worker.headers),
            "{method} {target} {headers:?}: the router (left) and the Worker (right) differ"
        );
        assert!(router.body == worker.body, "{method} {target} {headers:?}: bodies differ");
        router
    }

    async fn get(&mut self, target: &str, headers: &[(&str, &str)]) -> Answer {
        self.ask(Method::GET, target, headers).await
    }
}

/// The suite: requests with the status and fields each must get, asked of
/// both servers. `site` is a site page (`/ada/`), `generation` one the site
/// was published in.
async fn conformance(both: &mut Both<'_>, site: &str, generation: u64) {
    // A page at its plain path, and how it is cached.
    let page = both.get(site, &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("cache-control"), Some("public, max-age=60, stale-while-revalidate=600"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("vary"), Some("Accept-Encoding"));
    assert!(page.header("content-security-policy").is_some_and(|c| c.contains("default-src 'self'")));
    assert!(page.header("cache-tag").is_some_and(|t| t.starts_with("doc:sites/")), "{:?}", page.headers);
    assert!(page.header("last-modified").is_some_and(|d| d.ends_with(" GMT")));
    let etag = page.header("etag").expect("etag").to_string();
    let hash = etag.trim_matches('"').to_string();
    assert_eq!(hash.len(), 64);
    let size = page.body.len();

    // HEAD: the fields of GET, no body.
    let head = both.ask(Method::HEAD, site, &[]).await;
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(head.header("content-length"), Some(size.to_string().as_str()));

    // Content negotiation by Accept-Encoding, with q-values. (Where a client
    // weighs br and gzip alike, or names them only by `*`, Cloudflare's edge
    // picks for it and re-encodes what the Worker sends: not compared.)
    for (accept, coding) in [
        ("br", Some("br")),
        ("gzip", Some("gzip")),
        ("br, gzip", Some("br")),
        ("gzip;q=1, br;q=0.5", Some("gzip")),
        ("Br;Q=0.5, GZIP;q=0.9", Some("gzip")),
        ("br;q=0, gzip;q=0", None),
        ("identity;q=1, gzip;q=0.5", None),
    ] {
        let a = both.get(site, &[("accept-encoding", accept)]).await;
        assert_eq!(a.status, 200, "{accept}");
        assert_eq!(a.header("content-encoding"), coding, "{accept}");
        let suffix = match coding {
            Some("br") => ".br",
            Some("gzip") => ".gz",
            _ => "",
        };
        assert_eq!(a.header("etag"), Some(format!("\"{hash}{suffix}\"").as_str()), "{accept}");
        let headed = both.ask(Method::HEAD, site, &[("accept-encoding", accept)]).await;
        assert_eq!(headed.header("content-length"), Some(a.body.len().to_string().as_str()), "HEAD {accept}");
    }

    // Conditional requests (RFC 9110, 13.2.2).
    let modified = page.header("last-modified").expect("date").to_string();
    let weak = format!("W/{etag}");
    for (name, value, status) in [
        ("if-none-match", etag.as_str(), 304),
        ("if-none-match", weak.as_str(), 304),
        ("if-none-match", "*", 304),
        ("if-none-match", "\"other\", *", 200),
        ("if-none-match", "\"other\"", 200),
        ("if-match", "\"other\"", 412),
        ("if-match", etag.as_str(), 200),
        ("if-modified-since", modified.as_str(), 304),
        ("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT", 200),
        ("if-unmodified-since", "Thu, 01 Jan 1970 00:00:00 GMT", 412),
        ("if-unmodified-since", "Sunday, 06-Nov-94 08:49:37 GMT", 412),
    ] {
        let a = both.get(site, &[(name, value)]).await;
        assert_eq!(a.status, status, "{name}: {value}");
        if status != 200 {
            assert!(a.body.is_empty(), "{name}: {value}");
        }
    }
    let encoded = both.get(site, &[("accept-encoding", "gzip"), ("if-none-match", &etag)]).await;
    assert_eq!(encoded.status, 200, "the gzip variant is another representation");

    // Byte ranges (RFC 9110, 14): one range of the identity bytes.
    let cases = [
        ("bytes=0-9", 206, Some("bytes 0-9/")),
        ("bytes=-5", 206, Some("bytes ")),
        ("bytes=5-", 206, Some("bytes 5-")),
        ("bytes=99999999-", 416, Some("bytes */")),
        ("bytes=0-1, 5-6", 200, None),
        ("items=0-5", 200, None),
        ("bytes=9-2", 200, None),
    ];
    for (value, status, content_range) in cases {
        let a = both.get(site, &[("range", value)]).await;
        assert_eq!(a.status, status, "{value}");
        match content_range {
            Some(prefix) => assert!(a.header("content-range").is_some_and(|r| r.starts_with(prefix)), "{value}"),
            None => assert_eq!(a.header("content-range"), None, "{value}"),
        }
        if status == 206 {
            assert_eq!(a.header("content-encoding"), None, "a range is of the identity bytes");
        }
    }
    let a = both.get(site, &[("range", "bytes=0-9")]).await;
    assert_eq!(&a.body[..], &page.body[..10]);
    let a = both.get(site, &[("range", "bytes=0-9"), ("if-range", "\"stale\"")]).await;
    assert_eq!(a.status, 200, "If-Range with another tag: the whole page");
    let a = both.get(site, &[("range", "bytes=0-9"), ("if-range", &etag)]).await;
    assert_eq!(a.status, 206);
    let a = both.get(site, &[("range", "bytes=0-9"), ("if-range", &modified)]).await;
    assert_eq!(a.status, 206, "If-Range with the exact date");
    let a = both.ask(Method::HEAD, site, &[("range", "bytes=0-9")]).await;
    assert_eq!(a.status, 200, "no ranges for HEAD");

    // Trailing slashes and index.html redirect, keeping the query.
    let bare_path = site.trim_end_matches('/');
    let a = both.get(bare_path, &[]).await;
    assert_eq!((a.status, a.header("location")), (301, Some(site)));
    let a = both.get(&format!("{bare_path}?x=1"), &[]).await;
    assert_eq!(a.header("location"), Some(format!("{site}?x=1").as_str()));
    let a = both.get(&format!("{site}index.html"), &[]).await;
    assert_eq!((a.status, a.header("location")), (301, Some(site)));
    let a = both.ask(Method::HEAD, bare_path, &[]).await;
    assert_eq!((a.status, a.body.len()), (301, 0));
    assert_eq!(a.header("content-length"), Some("18"), "the length GET's body has");

    // A `head` listing's deep pages are rendered on request: a cursor the
    // router cannot render is a 404 on both, never the first page again.
    assert_eq!(both.get("/newest/", &[]).await.status, 200);
    for target in ["/newest/?after=not-a-cursor", "/newest/?x=1&after="] {
        assert_eq!(both.get(target, &[]).await.status, 404, "{target}");
    }
    assert_eq!(both.get("/sites/?after=x", &[]).await.status, 200, "not a head listing: the page");

    // The project's 404 page; methods other than GET and HEAD.
    let a = both.get("/no-such-site/", &[]).await;
    assert_eq!((a.status, a.header("content-type")), (404, Some("text/html; charset=utf-8")));
    assert!(a.header("etag").is_none() && a.header("last-modified").is_none());
    // Storage is reached only through the manifest: its keys are no paths.
    for target in ["/manifest/current", "/manifest/roots/1", "/media/manifest/current", "/_v/../manifest/current"] {
        assert_eq!(both.get(target, &[]).await.status, 404, "{target}");
    }
    let a = both.ask(Method::POST, site, &[]).await;
    assert_eq!((a.status, a.header("allow")), (405, Some("GET, HEAD")));
    let a = both.ask(Method::DELETE, "/", &[]).await;
    assert_eq!(a.status, 405);

    // Content-addressed URLs: for good, and only what a current page serves.
    let a = both.get(&format!("/_v/{hash}"), &[("accept-encoding", "gzip")]).await;
    assert_eq!((a.status, a.header("cache-control")), (200, Some("public, max-age=31536000, immutable")));
    assert_eq!(a.header("content-encoding"), Some("gzip"));
    for target in [format!("/_v/{}", "0".repeat(64)), "/_v/xyz".into(), format!("/_v/{}", hash.to_uppercase())] {
        assert_eq!(both.get(&target, &[]).await.status, 404, "{target}");
    }

    // A generation's version of the page, cached for good.
    let a = both.get(&format!("{site}?v={generation}"), &[]).await;
    assert_eq!((a.status, a.header("cache-control")), (200, Some("public, max-age=31536000, immutable")));
    let a = both.get(&format!("{site}?v=99999999"), &[]).await;
    assert_eq!(a.status, 200, "a later generation: what the path serves now");
    assert_eq!(both.get(&format!("{site}?v=abc"), &[]).await.status, 200, "not a generation: the page");
    // Regression: `/mallory?v=2` was 404 where `/mallory` is 301.
    let versioned = format!("{site}?v={generation}");
    for target in [format!("{}?v={generation}", site.trim_end_matches('/')), format!("{site}index.html?v={generation}")]
    {
        let a = both.get(&target, &[]).await;
        assert_eq!((a.status, a.header("location")), (301, Some(versioned.as_str())), "{target}");
    }

    // The site's other files.
    for (target, kind) in [
        ("/", "text/html"),
        ("/sites/", "text/html"),
        ("/static/style.css", "text/css"),
        ("/sitemap.xml", "xml"),
        ("/robots.txt", "text/plain"),
        ("/404.html", "text/html"),
    ] {
        let a = both.get(target, &[]).await;
        assert_eq!(a.status, 200, "{target}");
        assert!(a.header("content-type").is_some_and(|t| t.contains(kind)), "{target}: {:?}", a.headers);
    }

    // The stylesheet a page links by its fingerprint: cached for good.
    let html = page.text();
    let css = html.split("rel=\"stylesheet\" href=\"").nth(1).and_then(|r| r.split('"').next()).expect("a stylesheet");
    assert_ne!(css, "/static/style.css");
    let a = both.get(css, &[("accept-encoding", "gzip")]).await;
    assert_eq!((a.status, a.header("cache-control")), (200, Some("public, max-age=31536000, immutable")), "{css}");

    // Host mode: HANDLE.users.test serves /HANDLE/…, redirects stay on the host.
    let host = format!("{}.users.test", site.trim_matches('/'));
    let a = both.get("/", &[("host", &host)]).await;
    assert_eq!((a.status, a.body.len()), (200, size), "{host} serves {site}");
    let a = both.get("/index.html", &[("host", &format!("{host}:8080"))]).await;
    assert_eq!((a.status, a.header("location")), (301, Some("/")));
    let a = both.get("/nothing-here", &[("host", &host)]).await;
    assert_eq!(a.status, 404);
    let a = both.get("/static/style.css", &[("host", &host)]).await;
    assert_eq!(a.status, 200, "shared files on every host");
    let a = both.get("/", &[("host", "Bad_Handle.users.test")]).await;
    assert_eq!(a.status, 200, "not a handle: the main site");
}

/// Polls `base` until `path` answers `status` with a body containing `text`.
async fn wait_for(base: &str, path: &str, status: u16, text: &str) {
    eventually(&format!("{path} answering {status} with {text:?}"), || async {
        let a = ask(base, &Method::GET, path, &[]).await;
        if a.status == status && a.text().contains(text) { Ok(()) } else { Err(format!("{}", a.status)) }
    })
    .await
}

/// Waits until the manifest in `objects` reflects `generation` (a change is
/// reported published at its commit; the manifest follows right after).
async fn manifest_at(objects: &Path, generation: u64) {
    eventually(&format!("the manifest at generation {generation}"), || async {
        let root: Option<Value> =
            std::fs::read(objects.join("manifest/current")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        match root.and_then(|r| r["generation"].as_u64()) {
            Some(g) if g >= generation => Ok(()),
            other => Err(format!("at {other:?}")),
        }
    })
    .await
}

/// Waits until `server` has stored the compressed variants of every page
/// through `generation` (its `sesame_variants_generation` gauge).
async fn variants_stored(server: &Server, generation: u64) {
    eventually("the variants of the last publish", || async {
        let through = server.metric("sesame_variants_generation").await;
        if through >= generation as f64 { Ok(()) } else { Err(format!("stored through generation {through}")) }
    })
    .await;
}

fn latest_generation(dir: &Path) -> u64 {
    let out = ok(dir, &["verify"]);
    let rest = out.split("verified generation ").nth(1).expect("verified generation");
    rest.split(':').next().expect("number").parse().expect("generation")
}

#[tokio::test]
async fn the_worker_answers_as_the_router_after_a_build_and_after_incremental_publishes() {
    let dir = edge_project();
    let d = dir.path();
    let objects = d.join(".sesame/objects");
    assert!(objects.join("manifest/current").is_file(), "the build wrote the manifest");
    let first = latest_generation(d);
    let server = Server::start_with(d, &[("SESAME_ADMIN_TOKEN", ADMIN)], "127.0.0.1:0");
    // The root is read on every request: each sync is served at once.
    let edge = Edge::start(&objects, 0, 0);
    // An empty bucket: come back later, as the router says when storage fails.
    let empty = ask(&edge.worker, &Method::GET, "/", &[]).await;
    assert_eq!((empty.status, empty.header("retry-after")), (503, Some("1")));
    edge.sync().await;
    let mut both = Both { router: &server, edge: &edge, asked: 0 };
    conformance(&mut both, "/ada/", first).await;

    // Incremental publishes: an edit, a takedown, a moved page, a rollback.
    let events = write(
        d,
        "changes.ndjson",
        concat!(
            "{\"op\":\"upsert\",\"collection\":\"sites\",\"id\":\"ada\",\"doc\":{\"owner\":\"ada\",\"name\":\"Ada Park-Lee\",",
            "\"bio\":\"Ada paints *lighthouses* and the boats that pass them, in oil on small boards, one a week since 2019. ",
            "She writes about colour, weather and the harbour she grew up by, and answers every letter in the order it came. ",
            "Her studio is open on Saturdays; the kettle is always on, and the cat decides who stays.\"}}\n",
            "{\"op\":\"takedown\",\"collection\":\"sites\",\"id\":\"eli\"}\n",
            "{\"op\":\"upsert\",\"collection\":\"sites\",\"id\":\"bo\",\"doc\":{\"owner\":\"bob\",\"name\":\"Bo Lindqvist\"}}\n",
        ),
    );
    let before_takedown = ask(&server.base, &Method::GET, "/eli/", &[]).await;
    let eli_hash = before_takedown.header("etag").expect("etag").trim_matches('"').to_string();
    let out = ok(d, &["apply", events.to_str().expect("utf-8"), "--batch", "1"]);
    assert!(out.contains("manifest at generation"), "{out}");
    let api = Api::new(&server);
    let token = api.sign_up("erin").await;
    let v1 = change_id(&api.put_site(&token, "erin", "Erin v1").await.json().await.expect("json"));
    let g1 = api.published(&token, v1).await["generation"].as_u64().expect("generation");
    let v2 = change_id(&api.put_site(&token, "erin", "Erin v2").await.json().await.expect("json"));
    api.published(&token, v2).await;
    let back = api.send(Method::POST, "/api/sites/erin/rollback", &token, Some(json!({ "generation": g1 }))).await;
    assert_eq!(back.status(), StatusCode::ACCEPTED);
    let last = api.published(&token, change_id(&back.json().await.expect("json"))).await["generation"]
        .as_u64()
        .expect("generation");
    // An uploaded image (narrower than its smallest resized copy: none is made).
    let upload = api.upload(&token, crate::support::image_bytes(image::ImageFormat::Png, 40, 30), "image/png").await;
    assert_eq!(upload.status(), StatusCode::CREATED);
    let image = upload.json::<Value>().await.expect("json")["url"].as_str().expect("url").to_string();
    assert!(last > first);
    wait_for(&server.base, "/eli/", 410, "taken down").await;
    wait_for(&server.base, "/erin/", 200, "Erin v1").await;
    manifest_at(&objects, last).await;
    // The root's levels as the publishes left them: the Worker looks paths up in all three.
    let levels = root(&objects);
    let delta = &base(&objects, &levels)["delta"];
    assert!(levels["recent"]["paths"].is_object() && delta["paths"].is_object(), "{levels} {delta}");
    // Variants follow a publish in the background. Both servers look for
    // them in storage, but the Worker's bucket is a copy made at each sync:
    // copy it once they are all stored.
    variants_stored(&server, last).await;
    edge.sync().await;

    conformance(&mut both, "/ada/", last).await;
    let rolled = both.get("/erin/", &[]).await;
    assert!(rolled.text().contains("Erin v1"), "the rollback is served");
    let old = both.get(&format!("/erin/?v={}", g1 + 1), &[]).await;
    assert!(old.text().contains("Erin v2"), "history keeps the version rolled back");
    let gone = both.get("/eli/", &[]).await;
    assert_eq!(gone.status, 410);
    assert!(gone.text().contains("This site has been taken down."));
    let gone = both.get(&format!("/eli/?v={first}"), &[]).await;
    assert_eq!(gone.status, 410, "history of a taken-down page is gone too");
    assert_eq!(both.get(&format!("/_v/{eli_hash}"), &[]).await.status, 410, "and so is its object");
    let moved = both.get("/bo/", &[]).await;
    assert_eq!((moved.status, moved.header("location")), (301, Some("/bob/")));
    let moved = both.get("/bo/?utm=x", &[]).await;
    assert_eq!(moved.header("location"), Some("/bob/?utm=x"));
    let moved = both.get("/", &[("host", "bo.users.test")]).await;
    assert_eq!((moved.status, moved.header("location")), (301, Some("/bob/")), "to another site: absolute path");
    assert_eq!(both.get("/bob/", &[]).await.status, 200);
    let directory = both.get("/sites/", &[]).await;
    assert!(directory.text().contains("Erin v1") && !directory.text().contains("@eli"));
    // Uploaded images, straight from storage, cached for good.
    let png = both.get(&image, &[]).await;
    assert_eq!((png.status, png.header("content-type")), (200, Some("image/png")));
    assert_eq!(png.header("cache-control"), Some("public, max-age=31536000, immutable"));
    let name = image.trim_start_matches("/media/");
    assert_eq!(both.get(&image, &[("if-none-match", &format!("\"{name}\""))]).await.status, 304);
    let part = both.get(&image, &[("range", "bytes=0-7")]).await;
    assert_eq!((part.status, &part.body[..]), (206, &png.body[..8]));
    assert_eq!(both.get(&image, &[("range", "bytes=100000-")]).await.status, 416);
    assert_eq!(
        both.ask(Method::HEAD, &image, &[]).await.header("content-length"),
        Some(png.body.len().to_string().as_str())
    );
    let hash = name.trim_end_matches(".png");
    let copy = both.get(&format!("/media/{hash}-320.webp"), &[]).await;
    assert_eq!((copy.status, copy.header("location")), (307, Some(image.as_str())), "no copy: the original");
    assert_eq!(both.get(&format!("/media/{hash}-333.webp"), &[]).await.status, 404);
    for ext in ["constructor", "__proto__", "toString", "svg"] {
        assert_eq!(both.get(&format!("/media/{hash}.{ext}"), &[]).await.status, 404, "no media type {ext}");
    }
    assert_eq!(both.get(&format!("/media/{}.png", "0".repeat(64)), &[]).await.status, 404);
    assert!(both.asked > 120, "{} requests asked", both.asked);

    // Restored: the page and its history are served again.
    let restore = write(d, "restore.ndjson", "{\"op\":\"restore\",\"collection\":\"sites\",\"id\":\"eli\"}\n");
    ok(d, &["apply", restore.to_str().expect("utf-8")]);
    wait_for(&server.base, "/eli/", 200, "").await;
    edge.sync().await;
    assert_eq!(both.get("/eli/", &[]).await.status, 200);
    assert_eq!(both.get(&format!("/eli/?v={first}"), &[]).await.status, 200);
    assert_eq!(both.get(&format!("/_v/{eli_hash}"), &[]).await.status, 200, "the same bytes as before");

    drop(edge);
    drop(server);
    let verified = ok(d, &["verify"]);
    assert!(verified.contains("the manifest root the Worker reads is the one the generation recorded"), "{verified}");
}

/// The bucket reads a Worker answer cost (the harness has it report them).
fn reads(a: &Answer) -> u32 {
    a.header("x-sesame-reads").expect("x-sesame-reads").parse().expect("a count")
}

/// The status `curl --path-as-is` gets for `target`, sent as it is (an HTTP
/// library would resolve `..` first).
fn status_as_sent(base: &str, target: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--path-as-is", &format!("{base}{target}")])
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or_else(|_| panic!("curl {target}: {out:?}"))
}

#[tokio::test]
async fn at_the_edge_a_miss_asked_again_reads_nothing_a_broken_root_serves_the_last_and_paths_read_as_urls_are() {
    let dir = edge_project();
    let d = dir.path();
    let objects = d.join(".sesame/objects");
    let built = latest_generation(d);
    let server = Server::start(d);
    let api = Api::new(&server);
    let token = api.sign_up("cora").await;
    let change = change_id(&api.put_site(&token, "cora", "Cora v1").await.json().await.expect("json"));
    let generation = api.published(&token, change).await["generation"].as_u64().expect("generation");
    manifest_at(&objects, generation).await;
    // The root is read on every request (so a broken one is seen at once);
    // keys found absent are remembered for a minute.
    let edge = Edge::start(&objects, 0, 60_000);
    edge.sync().await;
    let worker = |target: String| {
        let base = edge.worker.clone();
        async move { ask(&base, &Method::GET, &target, &[]).await }
    };

    // A handful of reads the first time, none when asked again.
    assert_eq!(worker("/404.html".into()).await.status, 200, "the 404 page is read once");
    for (target, status) in [
        (format!("/media/{}-640.webp", "a".repeat(64)), 404),
        (format!("/media/{}-320.webp", "b".repeat(64)), 404),
        (format!("/media/{}.png", "c".repeat(64)), 404),
        (format!("/_v/{}", "d".repeat(64)), 404),
        ("/no/such/page".to_string(), 404),
        ("/ada/?v=0".to_string(), 404),
        (format!("/ada/?v={built}"), 200),
        (format!("/ada/?v={}", generation + 1_000), 200),
    ] {
        let first = worker(target.clone()).await;
        assert_eq!(first.status, status, "{target}");
        eprintln!("{target}: {status} after {} reads", reads(&first));
        assert!(reads(&first) <= 6, "{target}: {} reads the first time", reads(&first));
        let again = worker(target.clone()).await;
        assert_eq!((again.status, reads(&again)), (status, 0), "{target} asked again");
    }
    // Past roots are kept apart from absent ones: asking for a hundred
    // generations that never were does not push a real one out.
    for v in 0..100 {
        worker(format!("/ada/?v={}", generation + 10 + v)).await;
        worker(format!("/cora/?v={v}")).await;
    }
    assert_eq!(reads(&worker(format!("/ada/?v={built}")).await), 0, "the root of generation {built} is kept");

    // A root that cannot be read: the last good one serves on, and says so.
    edge.break_root().await;
    let stale = worker("/cora/".into()).await;
    assert_eq!(stale.status, 200, "stale if error: {}", stale.text());
    assert_eq!(stale.header("x-sesame-stale-root"), Some(generation.to_string().as_str()));
    edge.sync().await;
    let fresh = worker("/cora/".into()).await;
    assert_eq!((fresh.status, fresh.header("x-sesame-stale-root")), (200, None), "the root is read again");

    // Paths are read as the URL standard reads them, on both servers (the
    // Worker's runtime and Cloudflare do so before the Worker sees them):
    // dot segments, their encoded forms and backslashes resolved.
    for (target, status) in [
        ("/ada/", 200),
        ("/ada/../ada/", 200),
        ("/x/../ada/", 200),
        ("/./ada/", 200),
        ("/%2e%2e/ada/", 200),
        ("/x/%2E%2E/ada/", 200),
        ("/x\\..\\ada/", 200),
        ("/ada/%2e%2e/manifest/current", 404),
        ("/a%2eda/", 404),
    ] {
        let (router, worker) = (status_as_sent(&server.base, target), status_as_sent(&edge.worker, target));
        assert_eq!(router, worker, "{target}: the router (left) and the Worker (right) differ");
        assert_eq!(router, status, "{target}");
    }
}

/// When a file was last written (to the nanosecond the file system keeps).
fn written(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn root(objects: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(objects.join("manifest/current")).expect("read the root")).expect("JSON root")
}

/// A root's base: the names of its shards and the delta over them.
fn base(objects: &Path, root: &Value) -> Value {
    let name = root["base"].as_str().expect("base");
    let blob = std::fs::read(objects.join("manifest/shards").join(name)).expect("read the base");
    serde_json::from_reader(flate2::read::GzDecoder::new(&blob[..])).expect("JSON base")
}

/// The blob names a root refers to (its base, the shards it names, the moderation list).
fn named(objects: &Path, root: &Value) -> std::collections::BTreeSet<String> {
    let shards = base(objects, root)["shards"].as_array().expect("shards").clone();
    let mut names: std::collections::BTreeSet<String> =
        shards.iter().map(|n| n.as_str().expect("name").to_string()).collect();
    names.insert(root["moderation"].as_str().expect("moderation").to_string());
    names.insert(root["base"].as_str().expect("base").to_string());
    names
}

/// Every blob a root names is stored, and was written before the root.
fn whole_before_root(objects: &Path) {
    let current = written(&objects.join("manifest/current"));
    for name in named(objects, &root(objects)) {
        let blob = objects.join("manifest/shards").join(&name);
        assert!(written(&blob) <= current, "{name} was written after the root naming it");
    }
}

/// The blobs a manifest update wrote, from `sesame apply`'s report.
fn blobs_written(out: &str) -> (usize, String) {
    let line = out.lines().find(|l| l.starts_with("manifest at generation")).expect("manifest line");
    let n = line.split(": ").nth(1).and_then(|r| r.split(' ').next()).expect("count").parse().expect("n");
    (n, line.to_string())
}

/// Objects as files in `.sesame/objects`, where a test can read the manifest
/// (the scale-out backend keeps them there already).
fn objects_as_files(config: String) -> String {
    match sesame_testkit::backend() {
        sesame_testkit::Backend::Embedded => config.replacen('\n', "\nstorage_url = \"file://.sesame/objects\"\n", 1),
        sesame_testkit::Backend::Scale => config,
    }
}

#[tokio::test]
async fn one_add_writes_at_most_four_manifest_objects_the_root_last_and_gc_keeps_what_retained_generations_name() {
    // Small levels, so that a few adds move entries to the delta and then fold it into the shards.
    let dir = built_example_with_local_objects("gallery", &|c| {
        objects_as_files(
            c + "\n[edge]\nrecent_entries = 60\ndelta_entries = 80\n\n[retention]\ngenerations = 2\ndays = 0\ngrace_seconds = 0\n",
        )
    });
    let d = dir.path();
    let objects = d.join(".sesame/objects");
    let built = root(&objects);
    let shards = base(&objects, &built)["shards"].as_array().expect("shards").len();
    assert!(shards >= 64, "5,000 sprites make {shards} shards of ~256 entries");
    assert!(built["paths"].as_u64().expect("paths") > 5000);
    let built_base = base(&objects, &built);
    assert!(built.get("recent").is_none() && built_base.get("delta").is_none(), "a build writes the shards whole");
    whole_before_root(&objects);

    let add = "{\"op\":\"upsert\",\"collection\":\"sprites\",\"id\":\"90001\",\"doc\":{\"title\":\"Edge case\",\"created\":\"2026-12-01\",\"owner\":\"newcomer\",\"tags\":[\"fresh\"]}}\n";
    let out = ok(d, &["apply", write(d, "add.ndjson", add).to_str().expect("utf-8")]);
    let (blobs, line) = blobs_written(&out);
    // With the root written three times (its blob, which the commit names,
    // then the generation's copy and `current` for the Worker), at most four objects.
    assert!(blobs + 3 <= 4, "one add wrote {blobs} blobs besides its root: {line}");
    let after = root(&objects);
    assert!(named(&objects, &after).difference(&named(&objects, &built)).count() <= blobs, "{line}");
    assert!(!after["recent"]["paths"].as_object().expect("recent paths").is_empty(), "the root carries the changes");
    assert_eq!(after["generation"].as_u64(), built["generation"].as_u64().map(|g| g + 1));
    whole_before_root(&objects);
    assert!(ok(d, &["verify"]).contains("the manifest root the Worker reads is the one the generation recorded"));

    // More adds: the recent entries move to the delta, then the delta is
    // folded into the shards; every step serves the same table.
    let (mut moved, mut folded, mut before) = (false, false, base(&objects, &after));
    for i in 0..12 {
        let add = add.replace("90001", &format!("9100{i}"));
        let out = ok(d, &["apply", write(d, "add.ndjson", &add).to_str().expect("utf-8")]);
        let (blobs, line) = blobs_written(&out);
        let now = base(&objects, &root(&objects));
        // `verify` renders the whole site: run where the levels changed shape.
        let reshaped = now.get("delta").is_some() != before.get("delta").is_some();
        moved |= now.get("delta").is_some();
        if now["shards"] == before["shards"] {
            assert!(blobs + 3 <= 4, "add {i} wrote {blobs} blobs besides its root: {line}");
        } else {
            assert!(
                before.get("delta").is_some() && now.get("delta").is_none(),
                "a checkpoint folds the delta: {line}"
            );
            folded = true;
        }
        before = now;
        whole_before_root(&objects);
        if reshaped {
            assert!(
                ok(d, &["verify"]).contains("the manifest root the Worker reads is the one the generation recorded"),
                "{line}"
            );
        }
    }
    assert!(moved && folded, "the entries went down both levels");

    // Two more generations; with two retained, gc drops the first two roots
    // and the blobs only they named.
    for i in 2..4 {
        let add = add.replace("90001", &format!("9000{i}"));
        ok(d, &["apply", write(d, "add.ndjson", &add).to_str().expect("utf-8")]);
    }
    let roots = |objects: &Path| -> Vec<u64> {
        let mut r: Vec<u64> = std::fs::read_dir(objects.join("manifest/roots"))
            .expect("roots")
            .map(|e| e.expect("entry").file_name().to_string_lossy().parse().expect("generation"))
            .collect();
        r.sort();
        r
    };
    let (g, last) = (built["generation"].as_u64().expect("generation"), latest_generation(d));
    assert_eq!(roots(&objects), (g..=last).collect::<Vec<_>>());
    let gc = ok(d, &["gc"]);
    assert_eq!(roots(&objects), vec![last - 1, last], "{gc}");
    let kept: std::collections::BTreeSet<String> = std::fs::read_dir(objects.join("manifest/shards"))
        .expect("shards")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let mut wanted = named(&objects, &root(&objects));
    let previous: Value = serde_json::from_slice(
        &std::fs::read(objects.join(format!("manifest/roots/{}", last - 1))).expect("read the retained root"),
    )
    .expect("JSON");
    wanted.extend(named(&objects, &previous));
    // Besides, the roots themselves as their generations recorded them.
    let recorded: Vec<Value> = kept
        .difference(&wanted)
        .map(|name| {
            let blob = std::fs::read(objects.join("manifest/shards").join(name)).expect("read a blob");
            serde_json::from_reader(flate2::read::GzDecoder::new(&blob[..])).expect("JSON blob")
        })
        .collect();
    let generations: Vec<u64> = recorded.iter().filter_map(|r| r["generation"].as_u64()).collect();
    assert_eq!(generations.len(), 2, "exactly the blobs the retained roots name, and those roots: {recorded:?}");
    assert_eq!(generations.iter().min(), Some(&(last - 1)), "{generations:?}");
    assert_eq!(generations.iter().max(), Some(&last), "{generations:?}");
    assert!(wanted.is_subset(&kept), "every blob a retained root names is kept");
    assert!(ok(d, &["verify"]).contains("the manifest root the Worker reads is the one the generation recorded"));

    // Rewritten whole, the table is the same.
    let mended = ok(d, &["edge", "sync", "--whole"]);
    assert!(mended.contains(", whole"), "{mended}");
    assert!(ok(d, &["verify"]).contains("identical to a full build"));

    // A lost shard is found by verify and mended by a full build, which
    // renders every page and writes the table whole.
    let victim = base(&objects, &root(&objects))["shards"][0].as_str().expect("name").to_string();
    std::fs::remove_file(objects.join("manifest/shards").join(&victim)).expect("remove a shard");
    let out = crate::support::sesame(d, &["verify"]);
    assert!(!out.status.success(), "verify fails on a damaged manifest");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is missing"), "{}", String::from_utf8_lossy(&out.stderr));
    ok(d, &["build"]);
    assert!(ok(d, &["verify"]).contains("identical to a full build"));
    assert!(ok(d, &["verify"]).contains("the manifest root the Worker reads is the one the generation recorded"));
}

/// `kill -9` at each step of a publish: after its pages are rendered, after
/// its objects, manifest blobs and root are written, and after its commit. Before the
/// commit, the previous generation stays served whole (by the router, and
/// by `manifest/current` for the Worker) and the next publish lands the
/// change; after it, the router serves the new generation while the Worker
/// keeps the previous root, whole, until `sesame edge sync` or the next
/// publish. Whatever the killed publishes left, `gc` sweeps.
#[tokio::test]
async fn a_kill_9_at_every_step_of_a_publish_leaves_a_whole_generation_served() {
    // A short lease: each kill leaves it held until it expires.
    let dir = built_example_with_local_objects("microsites", &|c| {
        objects_as_files(
            c + "\n[publish]\nlease_seconds = 3\n\n[retention]\ngenerations = 1\ndays = 0\ngrace_seconds = 0\n",
        )
    });
    let d = dir.path();
    let objects = d.join(".sesame/objects");
    let add = |id: u32| {
        let line = format!(
            "{{\"op\":\"upsert\",\"collection\":\"sites\",\"id\":\"crash{id}\",\"doc\":{{\"owner\":\"crash{id}\",\"name\":\"Crash {id}\",\"bio\":\"Killed mid-publish.\"}}}}\n"
        );
        write(d, &format!("add-{id}.ndjson"), &line).to_str().expect("utf-8").to_string()
    };
    let mut before = root(&objects)["generation"].as_u64().expect("the build's generation");
    for (n, point) in ["pages rendered", "manifest written", "generation committed"].into_iter().enumerate() {
        let id = 95_000 + n as u32;
        let mut apply = Command::new(crate::support::bin())
            .args(["--project", d.to_str().expect("utf-8"), "apply", &add(id)])
            .env("SESAME_TEST_PAUSE_AT", point)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sesame apply");
        let stderr = BufReader::new(apply.stderr.take().expect("stderr"));
        let paused = stderr.lines().map_while(Result::ok).any(|l| l.contains(&format!("paused at {point}")));
        assert!(paused, "sesame apply never reached {point}");
        apply.kill().expect("kill -9");
        apply.wait().expect("reap");

        let committed = point == "generation committed";
        let served = if committed { before + 1 } else { before };
        // The router follows the database: the previous generation, or the new one, whole.
        let router = Server::role(d, "router", &[], "127.0.0.1:0");
        let http = client();
        let health: Value = http.get(router.url("/healthz")).send().await.expect("health").json().await.expect("json");
        assert_eq!(health["generation"].as_u64(), Some(served), "{point}");
        let page = http.get(router.url(&format!("/crash{id}/"))).send().await.expect("request");
        assert_eq!(page.status().is_success(), committed, "{point}: the new page");
        let listing = http.get(router.url("/sites/")).send().await.expect("request").text().await.expect("body");
        assert_eq!(listing.contains(&format!("Crash {id}")), committed, "{point}: the listing");
        router.kill();
        // The Worker's root stays on the previous generation, whole.
        let current = root(&objects);
        assert_eq!(current["generation"].as_u64(), Some(before), "{point}: manifest/current");
        whole_before_root(&objects);
        let verified = crate::support::sesame(d, &["verify"]);
        let said = String::from_utf8_lossy(&verified.stdout).into_owned();
        if committed {
            assert!(!verified.status.success(), "{point}: verify finds `current` behind: {said}");
            assert!(said.contains("manifest/current"), "{said}");
            let synced = ok(d, &["edge", "sync"]);
            assert!(synced.contains(&format!("manifest at generation {served}")), "{synced}");
            assert_eq!(root(&objects)["generation"].as_u64(), Some(served));
        }
        assert!(
            ok(d, &["verify"]).contains("the manifest root the Worker reads is the one the generation recorded"),
            "{point}"
        );
        before = served;
    }
    // The changes the kills interrupted before their commits land with the next publish.
    ok(d, &["apply", &add(95_100)]);
    let router = Server::role(d, "router", &[], "127.0.0.1:0");
    for id in [95_000, 95_001, 95_002, 95_100] {
        let r = client().get(router.url(&format!("/crash{id}/"))).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::OK, "/crash{id}/");
    }
    router.kill();
    let gc = ok(d, &["gc"]);
    assert!(!gc.contains("; 0 files no record refers to"), "the killed publishes left files behind: {gc}");
    assert!(ok(d, &["gc"]).contains("; 0 files no record refers to"), "nothing left to sweep");
    let verified = ok(d, &["verify"]);
    assert!(
        verified.contains("identical") && verified.contains("the Worker reads is the one the generation recorded"),
        "{verified}"
    );
}

/// Reads the version number a page shows (`Cora vN`).
fn version_shown(body: &str) -> Option<u32> {
    let rest = body.split("Cora v").nth(1)?;
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

#[tokio::test]
async fn readers_through_the_worker_see_whole_generations_in_order_within_the_root_ttl() {
    const TTL_MS: u64 = 1000;
    let dir = edge_project();
    let d = dir.path();
    let server = Server::start(d);
    let objects = d.join(".sesame/objects");
    let edge = Edge::start(&objects, TTL_MS, 0);
    let api = Api::new(&server);
    let token = api.sign_up("cora").await;
    let first = change_id(&api.put_site(&token, "cora", "Cora v0").await.json().await.expect("json"));
    let g = api.published(&token, first).await["generation"].as_u64().expect("generation");
    manifest_at(&objects, g).await;
    edge.sync().await;
    wait_for(&edge.worker, "/cora/", 200, "Cora v0").await;

    // A reader asks for the site and the directory without pause.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (base, stop) = (edge.worker.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = [0u32; 2];
            let mut seen = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, path) in ["/cora/", "/sites/"].iter().enumerate() {
                    let a = ask(&base, &Method::GET, path, &[]).await;
                    assert_eq!(a.status, 200, "{path} while publishing: {}", a.text());
                    // The entry and the bytes are of one generation: the
                    // entity tag is the hash of exactly these bytes.
                    let etag = a.header("etag").expect("etag").trim_matches('"').to_string();
                    assert_eq!(etag, blake3::hash(&a.body).to_hex().as_str(), "{path}: entry and object disagree");
                    let v = version_shown(&a.text()).unwrap_or_else(|| panic!("{path} shows no version"));
                    assert!(v >= last[i], "{path} went back from v{} to v{v}", last[i]);
                    last[i] = v;
                    seen += 1;
                }
            }
            seen
        })
    };

    let mut delays = Vec::new();
    for v in 1..=6u32 {
        let change = change_id(&api.put_site(&token, "cora", &format!("Cora v{v}")).await.json().await.expect("json"));
        let g = api.published(&token, change).await["generation"].as_u64().expect("generation");
        manifest_at(&objects, g).await;
        edge.sync().await;
        let synced = Instant::now();
        // Visible through the Worker within the root's cache time: a request
        // that starts once that time is over sees the change. (How long the
        // answer takes is Miniflare's, and slow on a loaded machine.)
        for path in ["/cora/", "/sites/"] {
            loop {
                let asked = synced.elapsed();
                let a = ask(&edge.worker, &Method::GET, path, &[]).await;
                if version_shown(&a.text()) == Some(v) {
                    break;
                }
                assert!(
                    asked < Duration::from_millis(TTL_MS + 100),
                    "{path} still showed v{:?} to a request made {} ms after v{v} reached the bucket",
                    version_shown(&a.text()),
                    asked.as_millis()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        delays.push(synced.elapsed().as_millis());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.await.expect("the reader saw only whole generations, in order");
    assert!(seen > 50, "the reader made {seen} requests");
    eprintln!("visible through the Worker after {delays:?} ms (root cache time {TTL_MS} ms); {seen} reads");
}

#[test]
fn edge_init_writes_the_worker_and_a_wrangler_toml_for_the_projects_bucket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    ok(d, &["init", "--example", "microsites"]);
    let config = d.join("sesame.toml");
    let text = std::fs::read_to_string(&config).expect("config").replacen(
        '\n',
        "\nstorage_url = \"s3://site-bucket/www?endpoint=https://acct.r2.cloudflarestorage.com&region=auto\"\n",
        1,
    );
    std::fs::write(&config, text).expect("write config");
    let target = d.join("cloudflare");
    let target = target.to_str().expect("utf-8");
    ok(d, &["edge", "init", target]);
    let worker = std::fs::read_to_string(d.join("cloudflare/worker.js")).expect("worker.js");
    let tested = std::fs::read_to_string(package().join("src/worker.js")).expect("the tested Worker");
    assert_eq!(worker, tested, "the Worker written is the one tested");
    let toml = std::fs::read_to_string(d.join("cloudflare/wrangler.toml")).expect("wrangler.toml");
    for line in [
        "main = \"worker.js\"",
        "workers_dev = false",
        "binding = \"BUCKET\"",
        "bucket_name = \"site-bucket\"",
        "preview_bucket_name = \"site-bucket-preview\"",
        "PREFIX = \"www/\"",
        "MISS_TTL_MS = \"10000\"",
        "[observability]\nenabled = true",
    ] {
        assert!(toml.contains(line), "{line} in:\n{toml}");
    }
    let again = crate::support::fails(d, &["edge", "init", target]);
    assert!(again.contains("exists; pass --force"), "{again}");
    ok(d, &["edge", "init", target, "--force"]);
    let early = crate::support::fails(d, &["edge", "sync"]);
    assert!(early.contains("nothing is published yet"), "{early}");
}

/// A stand-in for Cloudflare's custom hostnames API (there is no other to
/// test against offline): the zone's hostnames, listed in pages of
/// `per_page`, added and removed; every request is logged with its token.
struct FakeCloudflare {
    api: String,
    hostnames: Arc<Mutex<Vec<(String, String)>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl FakeCloudflare {
    async fn start(existing: &[&str]) -> FakeCloudflare {
        use axum::extract::{Path, Query};
        use axum::http::HeaderMap;
        let hostnames: Arc<Mutex<Vec<(String, String)>>> =
            Arc::new(Mutex::new(existing.iter().enumerate().map(|(i, h)| (format!("cf{i}"), h.to_string())).collect()));
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let refused =
            || axum::Json(json!({"success": false, "errors": [{"code": 10000, "message": "Authentication error"}]}));
        let authorized = |headers: &HeaderMap| headers.get("authorization").is_some_and(|v| v == "Bearer cf-token");
        const BASE: &str = "/client/v4/zones/zone1/custom_hostnames";
        let (h, l) = (hostnames.clone(), log.clone());
        let list = move |headers: HeaderMap, Query(q): Query<std::collections::HashMap<String, u32>>| {
            let (h, l) = (h.clone(), l.clone());
            async move {
                l.lock().expect("lock").push(format!("GET page {}", q["page"]));
                if !authorized(&headers) {
                    return (StatusCode::FORBIDDEN, refused());
                }
                let all = h.lock().expect("lock").clone();
                let (page, per_page) = (q["page"] as usize, q["per_page"] as usize);
                let shown: Vec<Value> = all
                    .iter()
                    .skip((page - 1) * per_page)
                    .take(per_page)
                    .map(|(id, host)| json!({"id": id, "hostname": host}))
                    .collect();
                let total_pages = all.len().div_ceil(per_page).max(1);
                let info =
                    json!({"page": page, "per_page": per_page, "count": shown.len(), "total_pages": total_pages});
                (
                    StatusCode::OK,
                    axum::Json(json!({"success": true, "errors": [], "result": shown, "result_info": info})),
                )
            }
        };
        let (h, l) = (hostnames.clone(), log.clone());
        let add = move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
            let (h, l) = (h.clone(), l.clone());
            async move {
                l.lock().expect("lock").push(format!("POST {body}"));
                if !authorized(&headers) {
                    return (StatusCode::FORBIDDEN, refused());
                }
                let host = body["hostname"].as_str().expect("a hostname").to_string();
                let mut all = h.lock().expect("lock");
                let id = format!("cf{}", all.len() + 100);
                all.push((id.clone(), host.clone()));
                (
                    StatusCode::CREATED,
                    axum::Json(json!({"success": true, "errors": [], "result": {"id": id, "hostname": host}})),
                )
            }
        };
        let (h, l) = (hostnames.clone(), log.clone());
        let remove = move |headers: HeaderMap, Path(id): Path<String>| {
            let (h, l) = (h.clone(), l.clone());
            async move {
                l.lock().expect("lock").push(format!("DELETE {id}"));
                if !authorized(&headers) {
                    return (StatusCode::FORBIDDEN, refused());
                }
                h.lock().expect("lock").retain(|(i, _)| *i != id);
                (StatusCode::OK, axum::Json(json!({"success": true, "errors": [], "result": {"id": id}})))
            }
        };
        let app = axum::Router::new()
            .route(BASE, axum::routing::get(list).post(add))
            .route(&format!("{BASE}/{{id}}"), axum::routing::delete(remove));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let api = format!("http://{}/client/v4", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeCloudflare { api, hostnames, log }
    }

    fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.hostnames.lock().expect("lock").iter().map(|(_, h)| h.clone()).collect();
        hosts.sort();
        hosts
    }

    fn log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().expect("lock"))
    }
}

// Multi-threaded: the fake API answers while the test waits for the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_hostnames_makes_the_zones_custom_hostnames_the_verified_domains() {
    // 60 hostnames there already: more than one page of Cloudflare's list.
    let mut existing: Vec<String> = (0..59).map(|i| format!("other{i}.test")).collect();
    existing.push("ann.test".into());
    let cloudflare = FakeCloudflare::start(&existing.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let dir = built_example_with_local_objects("microsites", &quick);
    {
        // Verified claims, as the DNS checks record them.
        let project = sesame_engine::Project::open(dir.path()).await.expect("open");
        let proven = sesame_store::DomainCheck { proven: true, points_here: true, problem: None };
        for (host, site) in [("ann.test", "ann"), ("bob.test", "bob"), ("pending.test", "cy")] {
            let row = sesame_store::DomainRow {
                host: host.into(),
                site: site.into(),
                account: None,
                token: format!("token-{host}"),
                created: 1,
                checked: None,
                problem: None,
                verified: None,
                live: None,
            };
            assert!(project.store.attach_domain(&row).await.expect("attach"));
            if host != "pending.test" {
                project.store.record_domain_check(host, site, &proven, 2).await.expect("check");
            }
        }
        project.store.close().await.expect("close");
    }
    let run = |args: &[&str], token: &str| {
        let mut all = vec!["edge", "hostnames", "--zone", "zone1", "--api", &cloudflare.api];
        all.extend(args);
        Command::new(env!("CARGO_BIN_EXE_sesame"))
            .args(&all)
            .current_dir(dir.path())
            .env("CLOUDFLARE_API_TOKEN", token)
            .output()
            .expect("sesame edge hostnames")
    };

    // A verified host missing there is added, validated over HTTP; a host
    // not verified is not; others are named, and left.
    let out = run(&[], "cf-token");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let log = cloudflare.log();
    assert_eq!(log.iter().filter(|l| l.starts_with("GET")).count(), 2, "both pages listed: {log:?}");
    let added: Vec<&String> = log.iter().filter(|l| l.starts_with("POST")).collect();
    assert_eq!(added.len(), 1, "{log:?}");
    let body: Value = serde_json::from_str(&added[0]["POST ".len()..]).expect("json");
    assert_eq!(body, json!({"hostname": "bob.test", "ssl": {"method": "http", "type": "dv"}}));
    assert!(stdout.contains("added bob.test") && stdout.contains("59 custom hostnames"), "{stdout}");
    // Run again: nothing to add.
    assert!(run(&[], "cf-token").status.success());
    assert!(cloudflare.log().iter().all(|l| l.starts_with("GET")));
    // --prune: the zone holds only the verified hosts.
    assert!(run(&["--prune"], "cf-token").status.success());
    assert_eq!(cloudflare.hosts(), ["ann.test", "bob.test"]);
    // Cloudflare's refusal is said in its words, and fails the command.
    let out = run(&[], "wrong-token");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Authentication error"), "{out:?}");
}
