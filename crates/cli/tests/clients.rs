//! What people point at a published site, from npm (pinned in
//! `e2e/package-lock.json`, on Node's built-in fetch, i.e. undici), against
//! real servers:
//!
//! - a site owner's link checker, `linkinator`, crawls the whole gallery
//!   example through a real `sesame serve` whose connection cap is 100, and
//!   every link gets an answer (`e2e/linkcheck.mjs` makes the call its
//!   command line makes, and reports why a link got none);
//! - a chat app's or social network's link previews, `open-graph-scraper`,
//!   read every kind of page of both examples and find a title, a
//!   description, an image with its size and the page's URL, also when the
//!   content is hostile.
//!
//! The test command installs the Node packages (`npm ci` in `e2e/`);
//! without them these tests fail, saying what is missing.

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).expect("workspace root")
}

/// Regression: at its connection cap the server closed the connection quiet
/// longest, which linkinator (undici) was often about to reuse or had not yet
/// written its request on; 10,858 of 17,018 links got no HTTP answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkinator_gets_an_answer_for_every_link_of_the_gallery_at_a_cap_of_100_connections() {
    let script = workspace().join("e2e/linkcheck.mjs");
    assert!(
        workspace().join("e2e/node_modules/linkinator").is_dir(),
        "linkinator is missing: run `npm ci --prefix e2e` (scripts/test does)"
    );
    let version =
        Command::new("node").arg("--version").output().expect("run node (install Node.js: scripts/test does)");
    let major: u32 = String::from_utf8_lossy(&version.stdout)
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "linkinator 7 needs Node.js 20 or later, found {:?}",
        String::from_utf8_lossy(&version.stdout)
    );
    // Measured 2026-12-04: linkinator's pool leaves some connections unused for
    // more than a minute (its event loop lagging behind thousands of
    // sockets), and the idle timeout's close of one it then writes on loses
    // that link: 31 and 88 of 30,5xx links at the default 60 s (75 and 175
    // idle closes), none at 300 s. The idle timeout is the one bound on a
    // silent connection (BENCHMARKS.md, "A site owner's link checker").
    let project =
        built_example_with("gallery", &|c| c + "\n[serve]\nmax_connections = 100\nidle_timeout_seconds = 300\n");
    let server = Server::start(project.path());
    // The example's pages name http://127.0.0.1:8080 as their canonical
    // base; the checker is pointed back at this server for those links.
    let mut linkinator = Command::new("node");
    linkinator.arg(&script).arg(format!("{}/", server.base)).args(["http://127.0.0.1:8080", &server.base]);
    let out = tokio::task::spawn_blocking(move || linkinator.output())
        .await
        .expect("task")
        .expect("run node (install Node.js: scripts/test does)");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("linkinator printed no report ({e}):\n{}", String::from_utf8_lossy(&out.stderr)));
    // Skipped (not fetched): what linkinator takes for a link of a scheme it
    // does not check, e.g. an image's alt text that begins with `word:`; its
    // command line does not report them.
    let (skipped, links): (Vec<&Value>, Vec<&Value>) =
        report["links"].as_array().expect("links").iter().partition(|l| l["state"] == "SKIPPED");
    let mut statuses: BTreeMap<i64, usize> = BTreeMap::new();
    let mut unanswered = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for &link in &links {
        let status = link["status"].as_i64().unwrap_or(0);
        *statuses.entry(status).or_default() += 1;
        for failure in link["failures"].as_array().into_iter().flatten() {
            *reasons.entry(failure.as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
        if status != 200 && unanswered.len() < 5 {
            unanswered.push(link.clone());
        }
    }
    let metrics = client().get(server.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let count = |name: &str| metric(&metrics, name);
    eprintln!(
        "linkinator: {} links ({} skipped) in {} s, by status {statuses:?}, failures {reasons:?}; server: {} \
         connections, {} refused, closed for a slow head {}, at the header timeout {}, idle {}",
        links.len(),
        skipped.len(),
        report["seconds"],
        count("sesame_http_connections_total"),
        count("sesame_http_connections_refused_total"),
        count("sesame_http_connections_closed_total{reason=\"evicted\"}"),
        count("sesame_http_connections_closed_total{reason=\"header_timeout\"}"),
        count("sesame_http_connections_closed_total{reason=\"idle\"}"),
    );
    assert!(links.len() > 15_000, "{} links checked", links.len());
    assert_eq!(statuses.get(&0), None, "links without an HTTP answer, e.g. {unanswered:?}");
    assert_eq!(statuses.keys().collect::<Vec<_>>(), vec![&200], "links not answered 200, e.g. {unanswered:?}");
    assert!(out.status.success(), "the link check failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// What `open-graph-scraper` makes of each page (`e2e/previews.mjs`),
/// fetched from `server` (the pages name the example's canonical base,
/// `http://127.0.0.1:8080`, in their URLs).
async fn previews(server: &Server, paths: &[&str]) -> Vec<Value> {
    let script = workspace().join("e2e/previews.mjs");
    assert!(
        workspace().join("e2e/node_modules/open-graph-scraper").is_dir(),
        "open-graph-scraper is missing: run `npm ci --prefix e2e` (scripts/test does)"
    );
    let urls: Vec<String> = paths.iter().map(|p| server.url(p)).collect();
    let mut node = Command::new("node");
    node.arg(script).args(&urls);
    let out = tokio::task::spawn_blocking(move || node.output())
        .await
        .expect("task")
        .expect("run node (install Node.js: scripts/test does)");
    let pages: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no previews ({e}):\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(pages.len(), paths.len());
    pages
}

/// A preview's fields, as a chat app would show them, each checked present.
struct Preview {
    title: String,
    description: String,
    url: String,
    image: String,
    width: u64,
    height: u64,
}

fn preview_of(page: &Value) -> Preview {
    assert_eq!(page["error"], false, "the scraper failed: {page}");
    let r = &page["result"];
    let text = |field: &str| r[field].as_str().unwrap_or_else(|| panic!("no {field} in {r}")).to_string();
    let image = &r["ogImage"][0];
    let number = |field: &str| -> u64 {
        let v = &image[field];
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("no image {field} in {r}"))
    };
    assert_eq!(text("twitterTitle"), text("ogTitle"), "{r}");
    assert_eq!(text("twitterDescription"), text("ogDescription"), "{r}");
    assert!(r["twitterCard"].as_str().is_some_and(|c| c.starts_with("summary")), "{r}");
    assert!(r["favicon"].as_str().is_some_and(|f| f.starts_with("/static/favicon.")), "{r}");
    Preview {
        title: text("ogTitle"),
        description: text("ogDescription"),
        url: text("ogUrl"),
        image: image["url"].as_str().unwrap_or_else(|| panic!("no image in {r}")).to_string(),
        width: number("width"),
        height: number("height"),
    }
}

/// The image a preview names, fetched from `server`: its real size.
async fn image_size(server: &Server, url: &str) -> (u32, u32) {
    let path = url.strip_prefix("http://127.0.0.1:8080").unwrap_or_else(|| panic!("{url} is not on the site"));
    let r = client().get(server.url(path)).send().await.expect("image");
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    let image = image::load_from_memory(&r.bytes().await.expect("bytes")).expect("an image");
    (image.width(), image.height())
}

#[tokio::test]
async fn link_previews_show_a_title_description_image_and_url_on_every_kind_of_page() {
    let gallery = built_example("gallery");
    // A sprite whose title and tags try to break out of a meta tag and of
    // the JSON-LD script.
    let title = "</script><script>alert(1)</script> \"Quoted\" 'single' & <b>bold</b>";
    let hostile = json!({"op": "upsert", "collection": "sprites", "id": "99001", "doc": {
        "title": title, "created": "2026-12-01", "owner": "mallory", "tags": ["</script>", "a\"b'c"]
    }});
    let events = write(gallery.path(), "hostile.ndjson", &format!("{hostile}\n"));
    ok(gallery.path(), &["apply", events.to_str().expect("utf-8")]);
    let server = Server::in_process(gallery.path());
    let pages = [
        ("/", "Sprite Gallery", "A living gallery of pixel sprites"),
        ("/sprites/", "Gallery", "Every sprite in Sprite Gallery, newest first"),
        ("/tags/example/", "#example", "Sprites tagged example in Sprite Gallery."),
        ("/sprites/132/", "", ""),
        ("/sprites/99001/", title, ""),
    ];
    let paths: Vec<&str> = pages.iter().map(|(p, ..)| *p).collect();
    for (page, (path, title, description)) in previews(&server, &paths).await.iter().zip(pages) {
        let p = preview_of(page);
        assert_eq!(p.url, format!("http://127.0.0.1:8080{path}"), "og:url is the canonical URL");
        if path.starts_with("/sprites/9") {
            // Hostile: the title whole, as text, as the page shows it.
            assert_eq!(p.title, title);
            let about = format!("{title}, by mallory. Tagged </script>, a\"b'c.");
            assert_eq!(p.description, about);
        } else if title.is_empty() {
            // An item: its title, and what it is in words.
            assert!(!p.title.is_empty() && p.description.starts_with(&p.title), "{path}: {page}");
            assert!(p.description.contains("Tagged"), "{path}: {}", p.description);
        } else {
            assert_eq!(p.title, title, "{path}");
            assert!(p.description.starts_with(description), "{path}: {}", p.description);
        }
        assert!(p.description.chars().count() <= 160, "{path}: {}", p.description);
        // No image of its own: the site's, at its real size.
        assert!(p.image.contains("/static/preview."), "{path}: {}", p.image);
        assert_eq!(image_size(&server, &p.image).await, (p.width as u32, p.height as u32), "{path}");
    }
    // Its structured data: one script element that parses whole.
    let html = client().get(server.url("/sprites/99001/")).send().await.expect("page").text().await.expect("body");
    assert_eq!(html.matches("<script").count(), 1, "no script element broke out: {html}");
    let start = html.find("<script type=\"application/ld+json\">").expect("JSON-LD") + 35;
    let end = start + html[start..].find("</script>").expect("its end");
    let work: Value = serde_json::from_str(&html[start..end]).expect("JSON-LD parses");
    assert_eq!((work["@type"].as_str(), work["name"].as_str()), (Some("CreativeWork"), Some(title)));
    assert_eq!(work["keywords"], json!(["</script>", "a\"b'c"]));

    // An item with an image of its own: its largest resized copy, at its size.
    let api = Api::new(&server);
    let owner = api.sign_up("painter").await;
    let r = api.upload(&owner, image_bytes(image::ImageFormat::Png, 800, 600), "image/png").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let reference = r.json::<Value>().await.expect("json")["ref"].as_str().expect("ref").to_string();
    let item = json!({"op": "upsert", "collection": "sprites", "id": "99003", "doc": {
        "title": "Framed", "created": "2026-12-01", "owner": "painter", "image": reference
    }});
    let events = write(gallery.path(), "framed.ndjson", &format!("{item}\n"));
    ok(gallery.path(), &["apply", events.to_str().expect("utf-8")]);
    let hash = reference.trim_end_matches(".png");
    eventually("the item and its resized image", || async {
        let page = client().get(server.url("/sprites/99003/")).send().await.expect("page").status();
        let copy = client().get(server.url(&format!("/media/{hash}-640.webp"))).send().await.expect("copy").status();
        if (page, copy) == (StatusCode::OK, StatusCode::OK) { Ok(()) } else { Err(format!("{page} {copy}")) }
    })
    .await;
    let framed = preview_of(&previews(&server, &["/sprites/99003/"]).await[0]);
    assert!(framed.image.ends_with(&format!("/media/{hash}-640.webp")), "{}", framed.image);
    assert_eq!((framed.width, framed.height), (640, 480));
    assert_eq!(image_size(&server, &framed.image).await, (640, 480));

    // The icons and the manifest the pages name are served.
    let manifest: Value =
        client().get(server.url("/manifest.webmanifest")).send().await.expect("manifest").json().await.expect("JSON");
    assert_eq!(manifest["name"], "Sprite Gallery");
    for icon in manifest["icons"].as_array().expect("icons") {
        let src = icon["src"].as_str().expect("src");
        let r = client().get(server.url(src)).send().await.expect("icon");
        assert_eq!(r.status(), StatusCode::OK, "{src}");
        assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable", "{src}");
    }
}

#[tokio::test]
async fn a_micro_sites_preview_is_its_owners_words_and_image_and_hostile_content_stays_text() {
    let dir = microsites_with(quick);
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let zoe = api.sign_up("zoe").await;
    let mallory = api.sign_up("mallory").await;
    let upload = api.upload(&zoe, image_bytes(image::ImageFormat::Png, 400, 300), "image/png").await;
    assert_eq!(upload.status(), StatusCode::CREATED);
    let avatar = upload.json::<Value>().await.expect("json")["ref"].as_str().expect("ref").to_string();
    // Every field that reaches a meta tag or JSON-LD, hostile.
    let name = "Zoë \"Z\" O'Neil </script><script>alert(1)</script> & <b>co</b>";
    let bio = "I make **[links](javascript:alert(1))** and <img src=x onerror=alert(1)> \"quotes\"\t'too'.\n\n\
               </script><!-- --> Second paragraph with a </title> and a \u{2028}line separator.";
    // Control characters never get in (tab and line breaks aside).
    for field in ["name", "bio"] {
        let r = api.send(Method::PUT, "/api/sites/zoe", &zoe, Some(json!({ field: "bell\u{7}nul\u{0}" }))).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        let body: Value = r.json().await.expect("a JSON error");
        assert_eq!(body["field"], format!("/{field}"), "{body}");
    }
    let r =
        api.send(Method::PUT, "/api/sites/zoe", &zoe, Some(json!({"name": name, "bio": bio, "avatar": avatar}))).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{}", r.text().await.unwrap_or_default());
    api.published(&zoe, change_id(&r.json().await.expect("json"))).await;
    // Another account's image cannot become mallory's preview.
    let r = api.send(Method::PUT, "/api/sites/mallory", &mallory, Some(json!({"name": "M", "avatar": avatar}))).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "someone else's image");
    let r = api.send(Method::PUT, "/api/sites/mallory", &mallory, Some(json!({"name": "M"}))).await;
    api.published(&mallory, change_id(&r.json().await.expect("json"))).await;

    let pages = previews(&server, &["/zoe/", "/mallory/", "/sites/", "/"]).await;
    let zoe_page = preview_of(&pages[0]);
    assert_eq!(zoe_page.title, name, "the name, whole, as text");
    assert_eq!(zoe_page.url, "http://127.0.0.1:8080/zoe/");
    assert!(
        zoe_page.description.starts_with("I make links and \"quotes\" 'too'. Second paragraph"),
        "{}",
        zoe_page.description
    );
    for bad in ["<", ">", "javascript", "\t", "\u{2028}"] {
        assert!(!zoe_page.description.contains(bad), "{bad:?} in {}", zoe_page.description);
    }
    // The avatar, by its largest resized copy (made just after the upload).
    let hash = avatar.trim_end_matches(".png");
    assert!(zoe_page.image.ends_with(&format!("/media/{hash}-320.webp")), "{}", zoe_page.image);
    assert_eq!((zoe_page.width, zoe_page.height), (320, 240));
    eventually("the resized avatar", || async {
        let r = client().get(server.url(&format!("/media/{hash}-320.webp"))).send().await.expect("variant");
        if r.status() == StatusCode::OK { Ok(()) } else { Err(r.status().to_string()) }
    })
    .await;
    assert_eq!(image_size(&server, &zoe_page.image).await, (320, 240));
    let mallory_page = preview_of(&pages[1]);
    assert!(mallory_page.image.contains("/static/preview."), "{}", mallory_page.image);
    assert_eq!(mallory_page.description, "@mallory on Sesame Sites.");
    for page in &pages[2..] {
        let p = preview_of(page);
        assert!(p.image.contains("/static/preview.") && !p.description.is_empty(), "{page}");
    }

    // The structured data: one script element that parses whole.
    let html = api.get("/zoe/").await.text().await.expect("body");
    assert_eq!(html.matches("<script").count(), 1, "no script element broke out: {html}");
    let start = html.find("<script type=\"application/ld+json\">").expect("JSON-LD") + 35;
    let end = start + html[start..].find("</script>").expect("its end");
    let person: Value = serde_json::from_str(&html[start..end]).expect("JSON-LD parses");
    assert_eq!((person["@type"].as_str(), person["name"].as_str()), (Some("Person"), Some(name)));
    assert_eq!(person["url"], "http://127.0.0.1:8080/zoe/");
    assert!(person["image"].as_str().is_some_and(|i| i.ends_with(&avatar)), "{person}");
}

/// What Python's `feedparser` (pinned in `scripts/fuzz/requirements.txt`)
/// makes of the feed at `url`, fetched by itself: whether it flagged the
/// feed as malformed (`bozo`), its version, title and entries.
async fn feedparser(url: String) -> Value {
    let python = std::env::var("SESAME_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target/schemathesis/bin/python"));
    assert!(
        python.exists(),
        "no Python with feedparser at {}: run scripts/test (it installs scripts/fuzz/requirements.txt), or set \
         SESAME_TEST_PYTHON",
        python.display()
    );
    let script = "import feedparser, json, sys\n\
                  d = feedparser.parse(sys.argv[1])\n\
                  print(json.dumps({'bozo': d.bozo, 'error': str(d.get('bozo_exception', '')), 'status': d.get('status'),\n\
                  'version': d.version, 'title': d.feed.get('title'), 'entries': [{'title': e.get('title'),\n\
                  'link': e.get('link'), 'id': e.get('id'), 'tags': [t.term for t in e.get('tags', [])]} for e in d.entries]}))";
    let mut command = Command::new(python);
    command.args(["-c", script, &url]);
    let out = tokio::task::spawn_blocking(move || command.output()).await.expect("task").expect("run python");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("feedparser printed nothing ({e}):\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// The titles of a feed's entries, once it parsed cleanly.
fn titles(feed: &Value) -> Vec<String> {
    assert_eq!((feed["bozo"].as_bool(), feed["status"].as_i64()), (Some(false), Some(200)), "{feed}");
    feed["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["title"].as_str().expect("title").to_string())
        .collect()
}

#[tokio::test]
async fn feed_readers_parse_the_feeds_and_follow_an_add_an_edit_and_a_takedown() {
    let dir = built_example_with("gallery", &|c| {
        c.replace(
            "template = \"tag.html\"\n",
            "template = \"tag.html\"\nfeeds = [\"atom\", \"json\"]\nfeed_size = 10\n",
        )
    });
    let d = dir.path();
    let server = Server::in_process(d);
    let latest = server.url("/latest/index.xml");
    let feed = feedparser(latest.clone()).await;
    assert_eq!(feed["version"], "atom10", "{feed}");
    assert_eq!(feed["title"], "Sprite Gallery: latest");
    assert_eq!(titles(&feed).len(), 20, "the 20 newest");
    let tag = feedparser(server.url("/tags/example/index.xml")).await;
    assert!((1..=10).contains(&titles(&tag).len()), "{tag}");
    for entry in tag["entries"].as_array().expect("entries") {
        assert!(entry["tags"].as_array().expect("tags").iter().any(|t| t == "example"), "{entry}");
        assert!(entry["link"].as_str().is_some_and(|l| l.starts_with("http://127.0.0.1:8080/sprites/")), "{entry}");
    }
    // The JSON Feed beside it: the same entries, in JSON Feed 1.1.
    let r = client().get(server.url("/latest/index.json")).send().await.expect("JSON feed");
    assert_eq!(r.headers()["content-type"], "application/feed+json");
    let json: Value = r.json().await.expect("JSON");
    assert_eq!(json["version"], "https://jsonfeed.org/version/1.1");
    assert_eq!(json["feed_url"], "http://127.0.0.1:8080/latest/index.json");
    let items = json["items"].as_array().expect("items");
    let json_titles: Vec<&str> = items.iter().map(|i| i["title"].as_str().expect("title")).collect();
    assert_eq!(json_titles, titles(&feed), "the JSON Feed lists what the Atom feed lists");
    let ids: std::collections::BTreeSet<&str> = items.iter().map(|i| i["id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), items.len(), "ids are unique");
    assert!(items.iter().all(|i| i["content_text"].is_string() && i["url"].is_string()), "{json}");
    let page = client().get(server.url("/latest/")).send().await.expect("page").text().await.expect("body");
    assert!(
        page.contains("<link rel=\"alternate\" type=\"application/atom+xml\" href=\"/latest/index.xml\""),
        "{page}"
    );

    // An add, an edit, a takedown: each is in the feeds with the publish
    // that makes it (a generation is served whole, so once the page shows
    // the change, the feed must too).
    let apply = |line: Value| {
        let events = write(d, "change.ndjson", &format!("{line}\n"));
        ok(d, &["apply", events.to_str().expect("utf-8")]);
    };
    let sprite = |title: &str| {
        json!({"op": "upsert", "collection": "sprites", "id": "99002", "doc": {
            "title": title, "created": "2026-12-04", "owner": "fresh", "tags": ["example"]
        }})
    };
    for (change, title) in [(sprite("Fresh <sprite> & co"), "Fresh <sprite> & co"), (sprite("Edited"), "Edited")] {
        apply(change);
        eventually(&format!("/sprites/99002/ showing {title}"), || async {
            let body =
                client().get(server.url("/sprites/99002/")).send().await.expect("page").text().await.expect("body");
            if body.contains(&title.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")) {
                Ok(())
            } else {
                Err(body)
            }
        })
        .await;
        assert_eq!(titles(&feedparser(latest.clone()).await)[0], title, "newest first");
        assert_eq!(titles(&feedparser(server.url("/tags/example/index.xml")).await)[0], title);
    }
    apply(json!({"op": "takedown", "collection": "sprites", "id": "99002"}));
    eventually("/sprites/99002/ taken down", || async {
        match client().get(server.url("/sprites/99002/")).send().await.expect("page").status() {
            StatusCode::GONE => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
    assert!(!titles(&feedparser(latest).await).contains(&"Edited".to_string()), "the taken-down sprite left the feed");
    let json: Value =
        client().get(server.url("/latest/index.json")).send().await.expect("feed").json().await.expect("JSON");
    assert!(!json.to_string().contains("99002"), "and the JSON Feed");
}

#[tokio::test]
async fn a_micro_sites_sections_are_a_feed_that_follows_its_edits_and_its_takedown() {
    let dir = microsites_with(quick);
    let d = dir.path();
    let server = Server::in_process(d);
    let api = Api::new(&server);
    let zoe = api.sign_up("zoe").await;
    let mut sections = vec![
        json!({"heading": "First <post> & \"more\"", "body": "*Hello* <script>alert(1)</script> world"}),
        json!({"heading": "Second", "body": "Short."}),
    ];
    let feed = server.url("/zoe/index.xml");
    for round in 0..2 {
        let body = json!({"name": "Zoë", "bio": "Writes.", "sections": sections});
        let r = api.send(Method::PUT, "/api/sites/zoe", &zoe, Some(body)).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        api.published(&zoe, change_id(&r.json().await.expect("json"))).await;
        let parsed = feedparser(feed.clone()).await;
        assert_eq!(parsed["title"], "Zoë");
        let headings: Vec<String> =
            sections.iter().map(|s| s["heading"].as_str().expect("heading").to_string()).collect();
        assert_eq!(titles(&parsed), headings, "round {round}");
        sections.push(json!({"heading": "Third", "body": "Added later."}));
    }
    let json: Value =
        client().get(server.url("/zoe/index.json")).send().await.expect("feed").json().await.expect("JSON");
    assert_eq!(json["items"][0]["content_text"], "Hello world", "the words of the markdown, no markup");
    let page = api.get("/zoe/").await.text().await.expect("body");
    assert!(page.contains("<link rel=\"alternate\" type=\"application/atom+xml\" href=\"/zoe/index.xml\""), "{page}");
    // Taken down: the feed goes with the page, in the same publish.
    let events = write(d, "td.ndjson", "{\"op\":\"takedown\",\"collection\":\"sites\",\"id\":\"zoe\"}\n");
    ok(d, &["apply", events.to_str().expect("utf-8")]);
    eventually("/zoe/ taken down", || async {
        match api.get("/zoe/").await.status() {
            StatusCode::GONE => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
    assert_eq!(api.get("/zoe/index.xml").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(api.get("/zoe/index.json").await.status(), StatusCode::NOT_FOUND);
}

/// The shell blocks of the README marked `<!-- tested -->`, in order, as one
/// script (so that one block's variables reach the next).
fn readme_examples() -> String {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let mut script = String::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "<!-- tested -->" {
            continue;
        }
        assert_eq!(lines.next().map(str::trim), Some("```sh"), "a tested block is a ```sh block");
        for line in lines.by_ref().take_while(|l| l.trim() != "```") {
            script.push_str(line);
            script.push('\n');
        }
    }
    script
}

/// The README's curl examples of drafts, schedules, preview links and the
/// archive, run as written by bash with curl and jq against two real
/// servers (`localhost:8080` and, for "another sesame", `localhost:8081`).
#[tokio::test]
async fn the_readmes_curl_examples_work_as_written() {
    let script = readme_examples();
    for wanted in ["/draft/links", "/schedule", "/draft/publish", "/export", "/import"] {
        assert!(script.contains(wanted), "the README's tested examples use {wanted}:\n{script}");
    }
    for tool in ["curl", "jq", "bash"] {
        let found = Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
        assert!(found, "{tool} is missing (scripts/test installs it)");
    }
    let here = microsites_with(quick);
    let there = microsites_with(quick);
    let (first, second) = (Server::in_process(here.path()), Server::in_process(there.path()));
    let script = script.replace("localhost:8080", &first.addr).replace("localhost:8081", &second.addr);
    let work = tempfile::tempdir().expect("temp dir");
    // Every request must succeed: an HTTP error fails the run, with its body.
    let prelude = "set -euo pipefail\ncurl() { command curl --fail-with-body -sS \"$@\"; echo; }\nset -x\n";
    // The servers run on runtimes of their own: waiting here blocks neither.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .current_dir(work.path())
        .output()
        .expect("run bash");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the README's examples failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("/api/previews/ssm_"), "a preview link was made:\n{stdout}");
    assert!(stdout.contains("\"documents\":1"), "the archive was restored:\n{stdout}");
    // Published now, here and there.
    for (server, name) in [(&first, "here"), (&second, "there")] {
        let api = Api::new(server);
        let published = async {
            loop {
                let r = api.get("/ann/").await;
                if r.status() == StatusCode::OK && r.text().await.expect("body").contains("Ann, soon") {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), published)
            .await
            .unwrap_or_else(|_| panic!("/ann/ is published {name}"));
    }
}
