//! Content a UI can trust: collection schemas refuse bad input at the door,
//! previews render a draft without writing anything, and images are
//! uploaded, stripped, resized and collected.

use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    ADMIN, Api, Peak, Server, built_example, change_id, eventually, fails, image_bytes, imported_example, metric,
    microsites_with, ok, quick, rss, write,
};

fn serve(dir: &std::path::Path) -> Server {
    Server::in_process_with_admin(dir)
}

async fn error_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().await.expect("a JSON error body"))
}

#[tokio::test]
async fn a_write_that_does_not_fit_the_schema_is_refused_at_the_door() {
    let dir = microsites_with(quick);
    let server = serve(dir.path());
    let api = Api::new(&server);
    let alice = api.sign_up("alice").await;
    for (body, field) in [
        (json!({"links": 5}), "/links"),
        (json!({"links": [{"label": "x", "url": "javascript:alert(1)"}]}), "/links/0/url"),
        (json!({"name": "x".repeat(101)}), "/name"),
        (json!({"sections": [{"body": 3}]}), "/sections/0/body"),
        (json!({"colour": "red"}), ""),
        // Control characters, in any field (regression: a NUL in a link's
        // URL was written raw into an `href`; PostgreSQL may refuse it).
        (json!({"name": "A", "links": [{"label": "x", "url": "https://a.example/\u{0}"}]}), "/links/0/url"),
        (json!({"name": "A\u{1b}[31m"}), "/name"),
        (json!({"name": "A", "sections": [{"heading": "h", "body": "a\u{7}b"}]}), "/sections/0/body"),
    ] {
        let r = api.send(Method::PUT, "/api/sites/alice", &alice, Some(body.clone())).await;
        let (status, error) = error_of(r).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(error["field"], field, "{body}: {error}");
        assert!(error["errors"].as_array().is_some_and(|e| !e.is_empty()), "every failure is listed: {error}");
    }
    // A patch is checked after merging; nothing refused was queued.
    let metrics = api.get("/metrics").await.text().await.expect("metrics");
    assert_eq!(metric(&metrics, "sesame_events_accepted_total"), 0.0);
    let good = json!({
        "name": "Alice",
        "bio": "Tabs\tand\r\nline breaks are writing.",
        "links": [{"label": "Blog", "url": "https://alice.example"}]
    });
    let r = api.send(Method::PUT, "/api/sites/alice", &alice, Some(good)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = api.send(Method::PATCH, "/api/sites/alice", &alice, Some(json!({"links": [{"url": "ftp://x"}]}))).await;
    assert_eq!(error_of(r).await.1["field"], "/links/0/url");
    // A patch may remove a field, but not name one the schema does not know
    // (a typo would otherwise be a silent no-op).
    let r = api.send(Method::PATCH, "/api/sites/alice", &alice, Some(json!({"links": null}))).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = api.send(Method::PATCH, "/api/sites/alice", &alice, Some(json!({"nmae": null}))).await;
    let (status, error) = error_of(r).await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("")), "{error}");
    // The document routes of the OpenAPI document carry the schema.
    let doc: Value = api.get("/api/openapi.json").await.json().await.expect("json");
    let fields = &doc["components"]["schemas"]["Fields_sites"];
    assert_eq!(fields["properties"]["links"]["items"]["properties"]["url"]["pattern"], "^https?://[^\\s]+$");
    assert_eq!(
        doc["paths"]["/api/sites/{handle}"]["put"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Fields_sites"
    );
    let patch = &doc["paths"]["/api/sites/{handle}"]["patch"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(patch["$ref"], "#/components/schemas/Patch_sites");
    assert_eq!(doc["components"]["schemas"]["Patch_sites"]["additionalProperties"], false);
}

#[tokio::test]
async fn every_example_document_fits_and_a_stranding_schema_change_is_reported() {
    // `check` reads the stored documents: no pages are needed.
    for example in ["microsites", "gallery"] {
        let dir = imported_example(example);
        assert!(ok(dir.path(), &["check"]).starts_with("all "), "{example}");
    }
    // Real catalogues have items without a date (7 of the 250,000-item
    // gallery dataset, these three among them); the gallery's schema takes them.
    let dir = imported_example("gallery");
    let undated = dir.path().join("undated.ndjson");
    std::fs::write(
        &undated,
        r#"{"id":219895,"slug":"dydx-v4-client","title":"","created":null,"owner":"dydx","tags":[],"popularity":null}
{"id":399807,"slug":"lightning","title":"The Deep Learning framework to train, deploy, and ship AI products Lightning fast.","created":null,"owner":"lightning","tags":["deep","learning","framework","train"],"popularity":1891}
{"id":449130,"slug":"mistralai","title":"Python Client SDK for the Mistral AI API.","created":null,"owner":"mistralai","tags":["client","mistral"],"popularity":633}
"#,
    )
    .expect("write items");
    ok(dir.path(), &["import", undated.to_str().expect("utf-8"), "--collection", "sprites"]);
    assert!(ok(dir.path(), &["check"]).starts_with("all "));
    let dir = imported_example("microsites");
    let schema = dir.path().join("schemas/sites.json");
    let text = std::fs::read_to_string(&schema).expect("schema");
    std::fs::write(
        &schema,
        text.replace("\"maxLength\": 100, \"description\": \"Shown", "\"maxLength\": 4, \"description\": \"Shown"),
    )
    .expect("edit schema");
    let out = crate::support::sesame(dir.path(), &["check"]);
    assert!(!out.status.success(), "a stranded document fails the check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("sites/ada: /name:"), "{stdout}");
    assert!(!stdout.contains("sites/eli:"), "Eli's name still fits: {stdout}");
}

#[tokio::test]
async fn import_and_apply_refuse_a_line_that_does_not_fit() {
    let dir = built_example("microsites");
    let d = dir.path();
    let events = write(
        d,
        "bad.ndjson",
        "{\"op\":\"upsert\",\"collection\":\"sites\",\"id\":\"zoe\",\"doc\":{\"owner\":\"zoe\",\"name\":\"Zoe\"}}\n\
         {\"op\":\"upsert\",\"collection\":\"sites\",\"id\":\"yan\",\"doc\":{\"owner\":\"yan\",\"links\":[{\"url\":\"data:x\"}]}}\n",
    );
    let err = fails(d, &["apply", events.to_str().expect("utf-8")]);
    assert!(err.contains("bad.ndjson: line 2: /links/0/url"), "{err}");
    let import = write(
        d,
        "bad-import.ndjson",
        "{\"id\":\"zoe\",\"owner\":\"zoe\",\"name\":\"Zoe\"}\n{\"id\":\"x\",\"bio\":7}\n",
    );
    let err = fails(d, &["import", import.to_str().expect("utf-8"), "--collection", "sites"]);
    assert!(err.contains("bad-import.ndjson: line 2: /bio"), "{err}");
    let server = Server::in_process(d);
    assert_eq!(
        crate::support::client().get(server.url("/zoe/")).send().await.expect("get").status(),
        StatusCode::NOT_FOUND,
        "nothing of either batch was applied"
    );
}

#[tokio::test]
async fn a_preview_renders_the_draft_and_writes_nothing() {
    let dir = microsites_with(quick);
    let server = serve(dir.path());
    let api = Api::new(&server);
    let alice = api.sign_up("alice").await;
    let objects = || crate::support::stored_objects(dir.path());
    let before = (api.get("/healthz").await.json::<Value>().await.expect("json"), objects().await);
    let draft = json!({"name": "Alice <b>Draft</b>", "bio": "Hello *there*", "links": [{"label": "Me", "url": "https://a.example"}]});
    let r = api.send(Method::POST, "/api/preview/sites/alice", &alice, Some(draft.clone())).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(r.headers()["x-robots-tag"], "noindex");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let csp = r.headers()["content-security-policy"].to_str().expect("ascii").to_string();
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "{csp}");
    let page = r.text().await.expect("body");
    assert!(page.contains("<h1>Alice &lt;b&gt;Draft&lt;/b&gt;</h1>"), "rendered and escaped as published: {page}");
    assert!(page.contains("Hello <em>there</em>"));
    // Nothing was written: no event, no generation, no object.
    let after = (api.get("/healthz").await.json::<Value>().await.expect("json"), objects().await);
    assert_eq!(before, after);
    let metrics = api.get("/metrics").await.text().await.expect("metrics");
    assert_eq!(metric(&metrics, "sesame_events_accepted_total"), 0.0);
    assert_eq!(metric(&metrics, "sesame_previews_total"), 1.0);
    assert_eq!(api.get("/alice/").await.status(), StatusCode::NOT_FOUND, "not published");
    // The same checks as a write: another account's site, bad fields.
    let bob = api.sign_up("bob").await;
    let r = api.send(Method::POST, "/api/preview/sites/alice", &bob, Some(draft)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = api.send(Method::POST, "/api/preview/collections/sites/docs/alice", &alice, Some(json!({"links": 5})));
    assert_eq!(error_of(r.await).await.1["field"], "/links");
}

/// A JPEG with an EXIF segment that records a GPS position (as phones write).
fn jpeg_with_gps() -> Vec<u8> {
    let jpeg = image_bytes(image::ImageFormat::Jpeg, 64, 48);
    // TIFF header (little endian), IFD0 with one entry: GPSInfo -> IFD at 26;
    // the GPS IFD has GPSLatitudeRef = "N" and GPSLatitude = 3 rationals.
    let mut tiff: Vec<u8> = b"II*\0\x08\0\0\0".to_vec();
    tiff.extend([1, 0]); // one entry
    tiff.extend([0x25, 0x88, 4, 0, 1, 0, 0, 0, 26, 0, 0, 0]); // GPSInfo, LONG, 1, offset 26
    tiff.extend([0, 0, 0, 0]); // no next IFD
    tiff.extend([2, 0]); // GPS IFD: two entries
    tiff.extend([1, 0, 2, 0, 2, 0, 0, 0, b'N', 0, 0, 0]); // GPSLatitudeRef "N"
    tiff.extend([2, 0, 5, 0, 3, 0, 0, 0, 56, 0, 0, 0]); // GPSLatitude, 3 RATIONAL at 56
    tiff.extend([0, 0, 0, 0]);
    for (n, d) in [(52u32, 1u32), (31, 1), (1234, 100)] {
        tiff.extend(n.to_le_bytes());
        tiff.extend(d.to_le_bytes());
    }
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]); // after the original SOI
    out
}

/// Regressions: HTML appended to a JPEG was stored and served back, a
/// truncated JPEG was accepted (only headers were read), and each upload of
/// a 105 KB PNG of 6000×6000 raised the server's memory by 283 MB, however
/// many came at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_images_are_cut_or_refused_and_decoding_memory_is_bounded() {
    let dir = microsites_with(|c| quick(c) + "\n[media]\nmax_bytes = 20000000\n");
    let server = Server::start_with(dir.path(), &[("SESAME_ADMIN_TOKEN", ADMIN)], "127.0.0.1:0");
    let api = Api::new(&server);
    let alice = api.sign_up("alice").await;
    let script = b"<html><script>alert(document.cookie)</script></html>";
    let jpeg = image_bytes(image::ImageFormat::Jpeg, 64, 48);
    let r = api.upload(&alice, [jpeg.clone(), script.to_vec()].concat(), "image/jpeg").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.expect("json");
    let served = api.get(body["url"].as_str().expect("url")).await.bytes().await.expect("body");
    assert!(!served.windows(7).any(|w| w == b"<script"), "the appended page was cut");
    assert!(served.ends_with(&[0xFF, 0xD9]));
    let cut = jpeg[..jpeg.len() / 2].to_vec();
    let (status, body) = error_of(api.upload(&alice, cut, "image/jpeg").await).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("file")), "{body}");

    // Three 6000×6000 images at once decode one after another.
    use image::ImageEncoder as _;
    let mut big = Vec::new();
    let pixels = image::RgbImage::from_pixel(6000, 6000, image::Rgb([200, 30, 90]));
    image::codecs::png::PngEncoder::new_with_quality(
        &mut big,
        image::codecs::png::CompressionType::Default,
        image::codecs::png::FilterType::Sub,
    )
    .write_image(pixels.as_raw(), 6000, 6000, image::ExtendedColorType::Rgb8)
    .expect("encode");
    drop(pixels);
    let pid = server.pid();
    let before = rss(pid);
    let peak = Peak::watch(move || rss(pid));
    let uploads: Vec<_> = (0..3)
        .map(|_| {
            // The same image each time: each upload decodes it all the same.
            let (api, alice, bytes) = (Api::new(&server), alice.clone(), big.clone());
            tokio::spawn(async move { api.upload(&alice, bytes, "image/png").await.status() })
        })
        .collect();
    for u in uploads {
        assert_eq!(u.await.expect("upload"), StatusCode::CREATED);
    }
    let grew = peak.stop().saturating_sub(before) >> 20;
    eprintln!("three {} KB PNGs of 6000×6000 at once: the server grew by {grew} MiB at most", big.len() >> 10);
    // One decode at a time is ~220 MiB alone here; on a loaded machine the
    // allocator may still hold a finished decode's pixels (108 MiB) on
    // another thread when the next one starts (303 MiB seen). All three at
    // once was 850 MiB.
    assert!(grew < 400, "decoding three at once took {grew} MiB");
}

#[tokio::test]
async fn uploads_are_images_by_their_bytes_stripped_of_metadata_and_bounded() {
    let dir = microsites_with(|c| quick(c) + "\n[media]\nmax_bytes = 300000\nquota_mb = 1\n");
    let server = serve(dir.path());
    let api = Api::new(&server);
    let alice = api.sign_up("alice").await;
    for (format, content_type) in [
        (image::ImageFormat::Png, "image/png"),
        (image::ImageFormat::Jpeg, "image/jpeg"),
        (image::ImageFormat::Gif, "image/gif"),
        (image::ImageFormat::WebP, "image/webp"),
    ] {
        // Whatever the client says the type is, the bytes decide.
        let r = api.upload(&alice, image_bytes(format, 40, 30), "application/octet-stream").await;
        assert_eq!(r.status(), StatusCode::CREATED, "{content_type}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(
            (body["type"].as_str(), body["width"].as_u64(), body["height"].as_u64()),
            (Some(content_type), Some(40), Some(30))
        );
        let served = api.get(body["url"].as_str().expect("url")).await;
        assert_eq!(served.status(), StatusCode::OK);
        assert_eq!(served.headers()[CONTENT_TYPE], content_type);
        assert_eq!(served.headers()["cache-control"], "public, max-age=31536000, immutable");
    }
    // A page or a drawing named like an image is not one.
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>".to_vec();
    for (bytes, claimed) in
        [(b"<!doctype html><script>alert(1)</script>".to_vec(), "image/png"), (svg, "image/svg+xml")]
    {
        let (status, body) = error_of(api.upload(&alice, bytes, claimed).await).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{claimed}: {body}");
    }
    // A phone photo loses its GPS position; its pixels stay.
    let photo = jpeg_with_gps();
    assert!(photo.windows(4).any(|w| w == b"Exif"));
    let r = api.upload(&alice, photo, "image/jpeg").await;
    let body: Value = r.json().await.expect("json");
    let stored = api.get(body["url"].as_str().expect("url")).await.bytes().await.expect("body");
    assert!(!stored.windows(4).any(|w| w == b"Exif"), "EXIF removed");
    assert!(!stored.windows(2).any(|w| w == [0xFF, 0xE1]), "no APP1 segment left");
    let decoded = image::load_from_memory(&stored).expect("still a JPEG");
    assert_eq!((decoded.width(), decoded.height()), (64, 48));
    // A multipart form works the same.
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(image_bytes(image::ImageFormat::Png, 8, 8)).file_name("a.png"));
    let r = api.http.post(format!("{}/api/media", api.base)).bearer_auth(&alice).multipart(form).send().await;
    assert_eq!(r.expect("request").status(), StatusCode::CREATED);
    // Limits: a file over max_bytes is 413, the account's quota a 422. The
    // server reads on past the limit (within bounds), so a client still
    // sending megabytes gets the answer rather than a broken pipe.
    let mut big = image_bytes(image::ImageFormat::Png, 8, 8);
    big.resize(4 << 20, 0);
    let (status, body) = error_of(api.upload(&alice, big, "image/png").await).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("file")), "{body}");
    let mut last = StatusCode::CREATED;
    for i in 0..12 {
        let r = api.upload(&alice, image_bytes(image::ImageFormat::Png, 200 + i, 200), "image/png").await;
        last = r.status();
        if last != StatusCode::CREATED {
            let body: Value = r.json().await.expect("json");
            assert_eq!(body["field"], "quota", "{body}");
            break;
        }
    }
    assert_eq!(last, StatusCode::UNPROCESSABLE_ENTITY, "1 MiB of quota runs out");
    let r = api.upload("ssm_nope", image_bytes(image::ImageFormat::Png, 8, 8), "image/png").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let metrics = api.get("/metrics").await.text().await.expect("metrics");
    assert!(metric(&metrics, "sesame_media_uploads_total") >= 6.0, "{metrics}");
    assert!(metric(&metrics, "sesame_media_bytes_total") > 0.0);
}

/// Polls until `path` answers `status`.
async fn until(api: &Api, path: &str, status: StatusCode) -> reqwest::Response {
    eventually(&format!("{path} answers {status}"), || async {
        let r = api.get(path).await;
        if r.status() == status { Ok(r) } else { Err(r.status().to_string()) }
    })
    .await
}

#[tokio::test]
async fn documents_show_their_own_images_and_gc_collects_the_unused() {
    let dir = microsites_with(|c| quick(c) + "\n[retention]\ngenerations = 2\ndays = 0\ngrace_seconds = 0\n");
    let server = serve(dir.path());
    let api = Api::new(&server);
    let alice = api.sign_up("alice").await;
    let bob = api.sign_up("bob").await;
    let uploaded: Value = api
        .upload(&alice, image_bytes(image::ImageFormat::Jpeg, 700, 400), "image/jpeg")
        .await
        .json()
        .await
        .expect("json");
    let (reference, url) = (uploaded["ref"].as_str().expect("ref"), uploaded["url"].as_str().expect("url"));
    let variants: Vec<&str> =
        uploaded["variants"].as_array().expect("variants").iter().filter_map(Value::as_str).collect();
    assert_eq!(variants.len(), 2, "320 and 640 px: {uploaded}");
    // Made by the worker: until then a variant redirects to the original.
    let first = api.get(variants[0]).await;
    if first.status() == StatusCode::TEMPORARY_REDIRECT {
        assert_eq!(first.headers()[LOCATION], url);
    }
    let small = until(&api, variants[0], StatusCode::OK).await;
    assert_eq!(small.headers()[CONTENT_TYPE], "image/webp");
    let small = image::load_from_memory(&small.bytes().await.expect("body")).expect("a WebP");
    assert_eq!((small.width(), small.height()), (320, 183));
    // Only the uploader may use it; a made-up reference is refused.
    for (token, avatar, field_status) in [
        (&bob, reference.to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        (&alice, format!("{}.png", "ab".repeat(32)), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let handle = if token == &bob { "bob" } else { "alice" };
        let r = api
            .send(Method::PUT, &format!("/api/sites/{handle}"), token, Some(json!({"name": "X", "avatar": avatar})))
            .await;
        let (status, body) = error_of(r).await;
        assert_eq!((status, body["field"].as_str()), (field_status, Some("/avatar")), "{body}");
    }
    let r =
        api.send(Method::PUT, "/api/sites/alice", &alice, Some(json!({"name": "Alice", "avatar": reference}))).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    api.published(&alice, change_id(&r.json().await.expect("json"))).await;
    let page = api.get("/alice/").await.text().await.expect("body");
    let img = format!(
        "<img src=\"{url}\" srcset=\"{} 320w, {} 640w, {url} 700w\" sizes=\"8rem\" width=\"700\" height=\"400\" class=\"avatar\" alt=\"\" loading=\"lazy\"",
        variants[0], variants[1]
    );
    assert!(page.contains(&img), "{page}");
    // Unused by the newest two generations, it is collected with its variants.
    for name in ["Alice 2", "Alice 3"] {
        let r = api.send(Method::PUT, "/api/sites/alice", &alice, Some(json!({ "name": name }))).await;
        api.published(&alice, change_id(&r.json().await.expect("json"))).await;
        let out = ok(dir.path(), &["gc"]);
        let kept = api.get(url).await.status();
        if name == "Alice 2" {
            assert_eq!(kept, StatusCode::OK, "the previous version still shows it: {out}");
        } else {
            assert_eq!(kept, StatusCode::NOT_FOUND, "collected: {out}");
        }
    }
    for v in variants {
        assert_eq!(api.get(v).await.status(), StatusCode::NOT_FOUND, "{v}");
    }
    drop(server);
    assert!(ok(dir.path(), &["verify"]).contains("identical"));
}

/// Regression: 100 KB of nested `>` quotes (within the schema's limits)
/// rendered 2.7 MB of HTML in 0.83 s of CPU, and a preview cost one unit of
/// the minute's budget however large.
#[tokio::test]
async fn a_pathological_preview_is_bounded_and_charged_by_its_size() {
    let dir = microsites_with(|c| {
        quick(c).replace("max_updates_per_hour = 600", "max_updates_per_hour = 600\npreviews_per_minute = 10")
    });
    let server = serve(dir.path());
    let api = Api::new(&server);
    let alice = api.sign_up("alice").await;
    let quotes: Vec<Value> = (0..20).map(|_| json!({"heading": "h", "body": ">".repeat(5000)})).collect();
    let draft = json!({"name": "A", "sections": quotes});
    let started = std::time::Instant::now();
    let r = api.send(Method::POST, "/api/preview/sites/alice", &alice, Some(draft.clone())).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.expect("page");
    eprintln!("100 KB of nested quotes: {} bytes of preview in {:?}", page.len(), started.elapsed());
    assert!(page.len() < 100_000, "{} bytes of HTML", page.len());
    // Each body nests 32 deep (the renderer's bound), not 5,000.
    assert_eq!(page.matches("<blockquote>").count(), 20 * 32);
    // Seven units of ten (1 + 100 KB / 16 KiB): a second one must wait,
    // while short previews still fit.
    let r = api.send(Method::POST, "/api/preview/sites/alice", &alice, Some(draft)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..3 {
        let r = api.send(Method::POST, "/api/preview/sites/alice", &alice, Some(json!({"name": "A"}))).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn previews_and_uploads_are_limited_per_account() {
    let dir = microsites_with(|c| {
        quick(c).replace("max_updates_per_hour = 600", "max_updates_per_hour = 600\npreviews_per_minute = 2")
            + "\n[media]\nuploads_per_hour = 2\n"
    });
    let server = serve(dir.path());
    let api = Api::new(&server);
    let (alice, bob) = (api.sign_up("alice").await, api.sign_up("bob").await);
    let preview = |token: String| {
        let api = &api;
        async move { api.send(Method::POST, "/api/preview/sites/alice", &token, Some(json!({"name": "A"}))).await.status() }
    };
    assert_eq!(preview(alice.clone()).await, StatusCode::OK);
    assert_eq!(preview(alice.clone()).await, StatusCode::OK);
    let r = api.send(Method::POST, "/api/preview/sites/alice", &alice, Some(json!({"name": "A"}))).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    // Another account's budget is its own (its preview of alice's site is refused).
    assert_eq!(preview(bob.clone()).await, StatusCode::FORBIDDEN);
    for i in 0..2 {
        let r = api.upload(&alice, image_bytes(image::ImageFormat::Png, 8 + i, 8), "image/png").await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = api.upload(&alice, image_bytes(image::ImageFormat::Png, 20, 8), "image/png").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = api.upload(&bob, image_bytes(image::ImageFormat::Png, 20, 8), "image/png").await;
    assert_eq!(r.status(), StatusCode::CREATED, "bob's uploads are counted apart");
}
