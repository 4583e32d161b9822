//! Incremental publishing through the real binary: `apply`, `moderate` and
//! `verify`, observed over HTTP on a running server.

use reqwest::StatusCode;
use reqwest::header::{ETAG, LOCATION};

use crate::support::{Server, built_example, client, eventually, fails, ok, write};

/// Polls `path` until it answers `status` (the server follows generations
/// every half second).
async fn wait_for(server: &Server, path: &str, status: StatusCode) -> reqwest::Response {
    let http = client();
    eventually(&format!("{path} answers {status}"), || async {
        let r = http.get(server.url(path)).send().await.expect("request");
        if r.status() == status { Ok(r) } else { Err(r.status().to_string()) }
    })
    .await
}

/// Polls `path` until its body holds `text` (or, `present` false, no longer does).
async fn wait_for_text(server: &Server, path: &str, text: &str, present: bool) -> String {
    let http = client();
    let what = format!("{path} {} {text:?}", if present { "shows" } else { "no longer shows" });
    eventually(&what, || async {
        let body = http.get(server.url(path)).send().await.expect("request").text().await.expect("body");
        if body.contains(text) == present { Ok(body) } else { Err("otherwise".into()) }
    })
    .await
}

fn site_event(op: &str, id: &str) -> String {
    format!("{{\"op\":\"{op}\",\"collection\":\"sites\",\"id\":\"{id}\"}}\n")
}

fn upsert(id: &str, owner: &str, name: &str) -> String {
    format!(
        "{{\"op\":\"upsert\",\"collection\":\"sites\",\"id\":\"{id}\",\"doc\":{{\"owner\":\"{owner}\",\"name\":\"{name}\"}}}}\n"
    )
}

#[tokio::test]
async fn edits_takedowns_and_moves_publish_incrementally() {
    let dir = built_example("microsites");
    let server = Server::in_process(dir.path());
    let d = dir.path();

    // A new site and an edit, published as one generation.
    let events = write(d, "e1.ndjson", &(upsert("zoe", "zoe", "Zoe Quill") + &upsert("ada", "ada", "Ada Park-Lee")));
    let out = ok(d, &["apply", events.to_str().expect("utf-8")]);
    assert!(out.contains("batch 1: 2 events, 2 changed documents → generation 2:"), "{out}");
    let zoe = wait_for(&server, "/zoe/", StatusCode::OK).await.text().await.expect("body");
    assert!(zoe.contains("<h1>Zoe Quill</h1>"));
    let directory = wait_for(&server, "/sites/", StatusCode::OK).await.text().await.expect("body");
    assert!(directory.contains("Ada Park-Lee") && directory.contains("Zoe Quill"));
    assert!(ok(d, &["verify"]).contains("identical to a full build"));

    // Takedown: 410 with the project's page, gone from the directory and the sitemap.
    let events = write(d, "e2.ndjson", &site_event("takedown", "eli"));
    ok(d, &["apply", events.to_str().expect("utf-8")]);
    let gone = wait_for(&server, "/eli/", StatusCode::GONE).await.text().await.expect("body");
    assert!(gone.contains("This site has been taken down."));
    let http = client();
    let directory = http.get(server.url("/sites/")).send().await.expect("request").text().await.expect("body");
    assert!(!directory.contains("@eli"));
    let sitemap = http.get(server.url("/sitemaps/1.xml")).send().await.expect("request").text().await.expect("body");
    assert!(!sitemap.contains("/eli/"));

    // Restore undoes it.
    let events = write(d, "e3.ndjson", &site_event("restore", "eli"));
    ok(d, &["apply", events.to_str().expect("utf-8")]);
    wait_for(&server, "/eli/", StatusCode::OK).await;

    // A path change: the new path serves the page, the old one redirects.
    let events = write(d, "e4.ndjson", &upsert("bo", "bob", "Bo Lindqvist"));
    ok(d, &["apply", events.to_str().expect("utf-8")]);
    wait_for(&server, "/bob/", StatusCode::OK).await;
    let moved = wait_for(&server, "/bo/", StatusCode::MOVED_PERMANENTLY).await;
    assert_eq!(moved.headers()[LOCATION], "/bob/");
    assert!(ok(d, &["verify"]).contains("identical to a full build"));

    // The adult flag gates the page and marks it noindex.
    let events = write(
        d,
        "e5.ndjson",
        "{\"op\":\"flag\",\"collection\":\"sites\",\"id\":\"ada\",\"flag\":\"adult\",\"value\":true}\n",
    );
    ok(d, &["apply", events.to_str().expect("utf-8")]);
    wait_for_text(&server, "/ada/", "<meta name=\"robots\" content=\"noindex\">", true).await;
}

#[test]
fn a_bad_line_rejects_its_whole_batch() {
    let dir = built_example("microsites");
    let d = dir.path();
    let text = upsert("n1", "n1", "One") + &upsert("n2", "n2", "Two") + &site_event("takedown", "nobody");
    let events = write(d, "bad.ndjson", &text);
    let err = fails(d, &["apply", events.to_str().expect("utf-8")]);
    assert!(err.contains("bad.ndjson: line 3: document sites/nobody does not exist"), "{err}");
    let report = ok(d, &["verify"]);
    assert!(report.contains("generation 1:") && !report.contains("pending"), "nothing was applied: {report}");

    // With one event per batch, the batches before the bad line are published.
    let err = fails(d, &["apply", events.to_str().expect("utf-8"), "--batch", "1"]);
    assert!(err.contains("line 3"), "{err}");
    let report = ok(d, &["verify"]);
    assert!(report.contains("generation 3:"), "two batches published: {report}");

    let events = write(d, "junk.ndjson", "{\"op\":\"upsert\",\"collection\":\"sites\"}\n");
    let err = fails(d, &["apply", events.to_str().expect("utf-8")]);
    assert!(err.contains("junk.ndjson: line 1: not a valid event: missing field `id`"), "{err}");
    let events = write(d, "path.ndjson", &site_event("takedown", "../../etc"));
    let err = fails(d, &["apply", events.to_str().expect("utf-8")]);
    assert!(err.contains("line 1: id \"../../etc\" must not start with '.'"), "{err}");
}

#[test]
fn moderation_lists_take_down_and_flag_in_one_batch() {
    let dir = built_example("microsites");
    let d = dir.path();
    let removed = write(d, "removed.tsv", "# id\treason\neli\tspam\nghost\tgone already\n");
    let adult = write(d, "adult.tsv", "dee\n\nbo\n");
    let out =
        ok(d, &["moderate", "--removed", removed.to_str().expect("utf-8"), "--adult", adult.to_str().expect("utf-8")]);
    assert!(
        out.contains("2 takedowns and 2 adult flags listed; 3 changed, 0 already so, 1 ids not found (skipped)"),
        "{out}"
    );
    assert!(out.contains("published generation 2: 3 events"), "{out}");
    let again = ok(d, &["moderate", "--removed", removed.to_str().expect("utf-8")]);
    assert!(again.contains("0 changed, 1 already so, 1 ids not found"), "{again}");
    assert!(ok(d, &["verify"]).contains("identical"));
}

#[tokio::test]
async fn stable_gallery_pages_stay_frozen_while_items_arrive() {
    let dir = built_example("gallery");
    let d = dir.path();
    let server = Server::in_process(d);
    let http = client();
    let etags = |pages: std::ops::RangeInclusive<u32>| {
        let http = http.clone();
        let base = server.base.clone();
        async move {
            let mut out = Vec::new();
            for n in pages {
                let r = http.get(format!("{base}/sprites/page/{n}/")).send().await.expect("request");
                assert_eq!(r.status(), StatusCode::OK, "page {n}");
                out.push(r.headers()[ETAG].clone());
            }
            out
        }
    };
    // 5,000 sprites at 60 a page: pages 1..=84, the top one a third full.
    let before = etags(1..=84).await;
    let mut text = String::new();
    for i in 0..100 {
        text += &format!(
            "{{\"op\":\"upsert\",\"collection\":\"sprites\",\"id\":\"{}\",\"doc\":{{\"title\":\"New {i}\",\"created\":\"2026-11-01\",\"owner\":\"newcomer\",\"tags\":[\"fresh\"]}}}}\n",
            9_000_000 + i
        );
    }
    let events = write(d, "adds.ndjson", &text);
    let out = ok(d, &["apply", events.to_str().expect("utf-8"), "--batch", "10"]);
    // Each batch of 10 adds touches at most: 10 item pages, the top gallery
    // page(s), the landing, the new tag and owner pages, one sitemap chunk,
    // and the two feeds of /latest/.
    for line in out.lines().filter(|l| l.starts_with("batch ")) {
        let planned: u64 = line
            .split(" pages planned")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("planned count");
        assert!(planned <= 10 + 3 + 2 + 2 + 1 + 2, "{line}");
    }
    // Wait for the last batch's generation: the landing shows the newest add.
    wait_for_text(&server, "/sprites/", "New 99", true).await;
    wait_for(&server, "/sprites/page/85/", StatusCode::OK).await;
    let after = etags(1..=84).await;
    assert_eq!(before[..83], after[..83], "pages 1..=83 are frozen");
    assert_ne!(before[83], after[83], "page 84 filled up and links to 85");
    assert!(ok(d, &["verify"]).contains("identical"));
}

#[tokio::test]
async fn head_pages_render_on_request_and_follow_changes() {
    let dir = built_example("gallery");
    let d = dir.path();
    let server = Server::in_process(d);
    let http = client();
    let first = http.get(server.url("/latest/")).send().await.expect("request").text().await.expect("body");
    let older =
        first.split("rel=\"next\" href=\"").nth(1).and_then(|s| s.split('"').next()).expect("Older link").to_string();
    assert!(older.starts_with("/latest/?after="), "{older}");
    let deep = http.get(server.url(&older)).send().await.expect("request");
    assert_eq!(deep.status(), StatusCode::OK);
    assert!(deep.headers().contains_key(ETAG));
    let deep = deep.text().await.expect("body");
    assert!(deep.contains("<small>Older</small>") && deep.contains("href=\"/latest/\""), "newest link back");
    // The second page continues where the first stopped: no item on both.
    let item = |html: &str| -> Vec<String> {
        html.split("class=\"title\" href=\"").skip(1).filter_map(|s| s.split('"').next()).map(str::to_string).collect()
    };
    let (a, b) = (item(&first), item(&deep));
    assert_eq!((a.len(), b.len()), (30, 30));
    assert!(a.iter().all(|x| !b.contains(x)));

    // The JSON feed pages the same way.
    let feed: serde_json::Value =
        http.get(server.url("/latest/feed.json")).send().await.expect("request").json().await.expect("json");
    assert_eq!(feed["items"].as_array().expect("items").len(), 30);
    let next = feed["next"].as_str().expect("next").to_string();
    let feed2: serde_json::Value =
        http.get(server.url(&next)).send().await.expect("request").json().await.expect("json");
    assert_eq!(feed2["items"][0]["url"].as_str(), Some(b[0].as_str()));

    // Taking down an item shown on the cached second page re-renders it.
    let victim = b[0].trim_matches('/').rsplit('/').next().expect("id").to_string();
    let events =
        write(d, "td.ndjson", &format!("{{\"op\":\"takedown\",\"collection\":\"sprites\",\"id\":\"{victim}\"}}\n"));
    ok(d, &["apply", events.to_str().expect("utf-8")]);
    let again = eventually("the cached page drops the taken-down item", || async {
        let again = http.get(server.url(&older)).send().await.expect("request").text().await.expect("body");
        if item(&again).contains(&b[0]) { Err("shown".to_string()) } else { Ok(again) }
    })
    .await;
    assert_eq!(item(&again).len(), 30, "the page pulled in the next item");
    // A malformed cursor names no page (never the first page again, which
    // is also what the edge Worker answers); nor does a bad feed cursor.
    let r = http.get(server.url("/latest/?after=bogus")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = http.get(server.url("/latest/feed.json?after=..%2f..")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// `kill -9` during full builds (a template change rewrites every page): the
/// previous generation stays served, whole; the objects the killed builds
/// wrote are swept by `gc`; the next build is correct. Objects stay on local
/// disk on either backend (see `built_example_with_local_objects`).
#[tokio::test]
async fn a_kill_9_during_a_full_build_leaves_the_previous_generation_served() {
    let edit = |c: String| c + "\n[retention]\ngrace_seconds = 0\n";
    let dir = crate::support::built_example_with_local_objects("gallery", &edit);
    let d = dir.path();
    let base = d.join("templates/_base.html");
    let original = std::fs::read_to_string(&base).expect("read template");
    // A full build timed first, up to its commit (the compressed variants
    // that follow it are timed apart), so that the kills land inside the
    // builds whatever the backend's speed (objects are written throughout one).
    std::fs::write(&base, original.replacen("<head>", "<head><!-- timed -->", 1)).expect("edit template");
    let started = std::time::Instant::now();
    let out = ok(d, &["build"]);
    let compressing = out
        .lines()
        .find(|l| l.starts_with("then compressed variants"))
        .and_then(|l| l.rsplit(" in ").next()?.trim_end_matches(" s").parse::<f64>().ok())
        .unwrap_or(0.0);
    let full_build = started.elapsed().saturating_sub(std::time::Duration::from_secs_f64(compressing));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut served = 2;
    // Builds after the first can be faster (a warm cache, a quieter
    // machine): a kill that came after the commit halves the next wait, so
    // that some land inside a build, which is what this test is about.
    let (mut scale, mut interrupted, mut swept) = (1.0, 0, 0);
    for trial in 1..=8 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let marker = format!("<!-- trial {trial} -->");
        std::fs::write(&base, original.replacen("<head>", &format!("<head>{marker}"), 1)).expect("edit template");
        let mut build = std::process::Command::new(crate::support::bin())
            .arg("--project")
            .arg(d)
            .arg("build")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a build");
        std::thread::sleep(full_build.mul_f64(scale * (0.3 + (seed % 65) as f64 / 100.0)));
        let _ = build.kill();
        let _ = build.wait();
        let server = Server::in_process(d);
        let http = client();
        let health: serde_json::Value =
            http.get(server.url("/healthz")).send().await.expect("health").json().await.expect("json");
        let generation = health["generation"].as_u64().expect("generation");
        for path in ["/sprites/132/", "/sprites/", "/tags/example/"] {
            let r = http.get(server.url(path)).send().await.expect("request");
            assert_eq!(r.status(), StatusCode::OK, "trial {trial}: {path}");
            let body = r.text().await.expect("body");
            // Either the kill came before the commit (the previous generation,
            // untouched) or after it (the new one, whole): never a mix.
            assert_eq!(
                body.contains(&marker),
                generation != served,
                "trial {trial}: {path} in generation {generation}"
            );
        }
        if generation == served {
            interrupted += 1;
            eprintln!("trial {trial}: killed inside the build");
        } else {
            scale /= 2.0;
            eprintln!("trial {trial}: killed after the commit");
        }
        // What the killed build wrote, gc sweeps (once something was: the
        // final gc sweeps the rest): objects no root names, and manifest
        // blobs or staging files nothing names. Nothing when the kill came
        // before the build's first write, as on a loaded host.
        if generation == served && swept == 0 {
            let out = ok(d, &["gc"]);
            let count = |after: &str| -> u64 {
                out.split_once(after)
                    .and_then(|(_, rest)| rest.split(' ').next())
                    .and_then(|n| n.replace(',', "").parse().ok())
                    .unwrap_or_else(|| panic!("no count after {after:?} in {out}"))
            };
            let files = count("garbage collected: ") + count("; ");
            if files == 0 {
                scale *= 1.5; // too early for this host now: kill later
            }
            swept += files;
            eprintln!("trial {trial}: gc swept {files} files");
        }
        served = generation;
        if trial >= 4 && swept > 0 {
            break;
        }
    }
    assert!(interrupted > 0, "no kill landed inside a build");
    assert!(swept > 0, "the killed builds left files behind, and gc swept them");
    ok(d, &["gc"]); // what the builds killed since left
    ok(d, &["build"]);
    assert!(ok(d, &["verify"]).contains("identical"));
    let out = ok(d, &["gc"]);
    assert!(out.starts_with("garbage collected: 0 objects") && out.contains("; 0 files no record refers to"), "{out}");
}
