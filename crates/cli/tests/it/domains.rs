//! Custom domains over HTTP, with a real DNS server whose answers the test
//! sets (Pebble's `pebble-challtestsrv`): an owner attaches a host, is told
//! the records to add, and the claim becomes verified when the TXT proof is
//! published and live when the host points here; a stranger can neither
//! attach to another's site nor take a host without publishing its proof.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sesame_testkit::{FakeDns, TestCertificate};

use crate::support::*;

/// The page a request for `path` with `Host: host` gets: (status, body).
async fn at_host(api: &Api, host: &str, path: &str) -> (StatusCode, String) {
    let r = api.http.get(format!("{}{path}", api.base)).header("host", host).send().await.expect("request");
    (r.status(), r.text().await.expect("body"))
}

/// Waits until the router serves `host`'s home page with `text` in it.
async fn serves(api: &Api, host: &str, text: &str) {
    eventually(&format!("{host} serving {text:?}"), || async {
        let (status, body) = at_host(api, host, "/").await;
        if status == StatusCode::OK && body.contains(text) { Ok(()) } else { Err(format!("{status}")) }
    })
    .await;
}

/// Sets what the fake DNS answers (`POST /set-txt`, `/add-a`, …).
pub(crate) async fn dns_set(dns: &FakeDns, what: &str, body: Value) {
    let r = client().post(format!("{}/{what}", dns.management)).json(&body).send().await.expect("the fake DNS");
    assert!(r.status().is_success(), "{what}: {}", r.status());
}

pub(crate) fn with_domains(dns: &FakeDns) -> impl Fn(String) -> String {
    let addr = dns.addr;
    move |c: String| {
        quick(c)
            + &format!(
                "\n[domains]\ncname_target = \"sites.platform.test\"\nresolver = \"{addr}\"\ncheck_seconds = 1\nper_site = 3\n"
            )
    }
}

pub(crate) async fn body(r: reqwest::Response) -> Value {
    r.json().await.expect("a JSON body")
}

#[tokio::test]
async fn a_domain_is_verified_by_its_txt_proof_and_live_when_it_points_here() {
    let dns = FakeDns::start();
    let dir = microsites_with(with_domains(&dns));
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    let bob = api.sign_up("bob").await;
    let r = api.put_site(&ann, "ann", "Ann").await;
    api.published(&ann, change_id(&body(r).await)).await;
    const DOMAINS: &str = "/api/sites/ann/domains";

    // Attached as typed, read as DNS has it, with the records to add.
    let r = api.send(Method::POST, DOMAINS, &ann, Some(json!({"host": "Ann.Test."}))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let attached = body(r).await;
    assert_eq!((attached["host"].as_str(), attached["status"].as_str()), (Some("ann.test"), Some("waiting_for_dns")));
    let record = |kind: &str| {
        attached["records"].as_array().expect("records").iter().find(|r| r["type"] == kind).cloned().expect(kind)
    };
    assert_eq!(
        (&record("CNAME")["name"], &record("CNAME")["value"]),
        (&json!("ann.test"), &json!("sites.platform.test"))
    );
    let txt = record("TXT");
    assert_eq!(txt["name"], "_sesame-challenge.ann.test");
    let token = txt["value"].as_str().expect("the token").to_string();
    assert!(token.len() >= 32, "unguessable: {token}");

    let check = "/api/sites/ann/domains/ann.test/check";
    let checked = body(api.send(Method::POST, check, &ann, None).await).await;
    assert_eq!(checked["status"], "waiting_for_dns");
    assert!(checked["problem"].as_str().expect("why").contains("no TXT record"), "{checked}");
    dns_set(&dns, "set-txt", json!({"host": "_sesame-challenge.ann.test.", "value": "someone else's"})).await;
    let checked = body(api.send(Method::POST, check, &ann, None).await).await;
    assert!(checked["problem"].as_str().expect("why").contains("does not hold this site's token"), "{checked}");

    // The proof, and the host pointing elsewhere: verified, not live.
    dns_set(&dns, "set-txt", json!({"host": "_sesame-challenge.ann.test.", "value": token})).await;
    dns_set(&dns, "add-a", json!({"host": "ann.test.", "addresses": ["203.0.113.9"]})).await;
    let checked = body(api.send(Method::POST, check, &ann, None).await).await;
    assert_eq!(checked["status"], "verified", "{checked}");
    assert!(checked["problem"].as_str().expect("why").contains("points to 203.0.113.9"), "{checked}");
    // Pointed here (the fake DNS answers 127.0.0.1, as for the CNAME target): live.
    dns_set(&dns, "clear-a", json!({"host": "ann.test."})).await;
    let checked = body(api.send(Method::POST, check, &ann, None).await).await;
    assert_eq!((checked["status"].as_str(), &checked["problem"]), (Some("live"), &Value::Null), "{checked}");
    // The router serves ann's site at the host (any case, port or trailing
    // dot), as its address, to which /ann/ now leads.
    serves(&api, "ann.test", "<link rel=\"canonical\" href=\"http://ann.test/\">").await;
    let (status, page) = at_host(&api, "ANN.test.:8080", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, at_host(&api, "ann.test", "/").await.1, "the same page at any spelling of the host");
    let r = api.get("/ann/").await;
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()["location"], format!("http://ann.test:{}/", api.base.rsplit_once(':').expect("port").1));

    // A stranger: not on ann's site, and a claim of their own takes nothing
    // until the DNS shows their token.
    let r = api.send(Method::POST, DOMAINS, &bob, Some(json!({"host": "bob.test"}))).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(api.send(Method::GET, DOMAINS, &bob, None).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(api.send(Method::POST, check, &bob, None).await.status(), StatusCode::FORBIDDEN);
    let r = api.send(Method::POST, "/api/sites/bob/domains", &bob, Some(json!({"host": "ann.test"}))).await;
    assert_eq!(r.status(), StatusCode::CREATED, "a contested host may be claimed");
    let bobs_token = body(r).await["records"][1]["value"].as_str().expect("token").to_string();
    let bobs_check = "/api/sites/bob/domains/ann.test/check";
    let checked = body(api.send(Method::POST, bobs_check, &bob, None).await).await;
    assert_eq!(checked["status"], "waiting_for_dns", "without the proof: {checked}");
    let anns = body(api.send(Method::GET, DOMAINS, &ann, None).await).await;
    assert_eq!(anns[0]["status"], "live", "ann's is untouched: {anns}");
    // The DNS owner publishes bob's token: the host is bob's, and ann is told why.
    dns_set(&dns, "set-txt", json!({"host": "_sesame-challenge.ann.test.", "value": bobs_token})).await;
    let checked = body(api.send(Method::POST, bobs_check, &bob, None).await).await;
    assert_eq!(checked["status"], "live", "{checked}");
    let anns = body(api.send(Method::GET, DOMAINS, &ann, None).await).await;
    assert_eq!(anns[0]["status"], "waiting_for_dns", "{anns}");
    assert!(anns[0]["problem"].as_str().expect("why").contains("another site's token"), "{anns}");
    let r = api.put_site(&bob, "bob", "Bob").await;
    api.published(&bob, change_id(&body(r).await)).await;
    serves(&api, "ann.test", "Bob").await;
    // It is bob's address now (his site, made after the domain went live, is
    // caught up by the background round), and ann's site is back at /ann/.
    serves(&api, "ann.test", "<link rel=\"canonical\" href=\"http://ann.test/\">").await;
    eventually("ann's canonical link back at the platform", || async {
        let (status, page) = at_host(&api, "127.0.0.1", "/ann/").await;
        let back = page.contains("<link rel=\"canonical\" href=\"http://127.0.0.1:8080/ann/\">");
        if status == StatusCode::OK && back { Ok(()) } else { Err(format!("{status}")) }
    })
    .await;

    // Checked in the background too: the status changes without asking.
    let r = api.send(Method::POST, DOMAINS, &ann, Some(json!({"host": "www.ann.test"}))).await;
    let www_token = body(r).await["records"][1]["value"].as_str().expect("token").to_string();
    dns_set(&dns, "set-txt", json!({"host": "_sesame-challenge.www.ann.test.", "value": www_token})).await;
    let started = Instant::now();
    loop {
        let listed = body(api.send(Method::GET, DOMAINS, &ann, None).await).await;
        let www = listed.as_array().expect("list").iter().find(|d| d["host"] == "www.ann.test").cloned();
        if www.as_ref().is_some_and(|d| d["status"] == "live") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "not checked in the background: {www:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Detached: gone, and once only.
    let www = "/api/sites/ann/domains/www.ann.test";
    assert_eq!(api.send(Method::DELETE, www, &bob, None).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(api.send(Method::DELETE, www, &ann, None).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(api.send(Method::DELETE, www, &ann, None).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_apex_and_its_www_on_one_site_are_one_address_the_first_attached() {
    let dns = FakeDns::start();
    let (_dir, _server, api, ann) = ann_with_a_site(&dns).await;
    for host in ["ann.test", "www.ann.test"] {
        attach_live(&api, &dns, &ann, host).await;
    }
    serves(&api, "ann.test", "Ann").await;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let get = |host: &'static str| no_redirects.get(format!("{}/about/?x=1", api.base)).header("host", host).send();
    let r = get("www.ann.test:8080").await.expect("www");
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()["location"], "http://ann.test:8080/about/?x=1");
    // ACME's challenges are answered at both.
    let r = no_redirects
        .get(format!("{}/.well-known/acme-challenge/x", api.base))
        .header("host", "www.ann.test")
        .send()
        .await
        .expect("challenge");
    assert_ne!(r.status(), StatusCode::MOVED_PERMANENTLY);
    // Without the apex, www is served itself.
    let apex = "/api/sites/ann/domains/ann.test";
    assert_eq!(api.send(Method::DELETE, apex, &ann, None).await.status(), StatusCode::NO_CONTENT);
    serves(&api, "www.ann.test", "Ann").await;
}

/// A project with custom domains checked against `dns`, served in process,
/// and ann's site published there: (project, server, client, ann's token).
async fn ann_with_a_site(dns: &FakeDns) -> (TestProject, Server, Api, String) {
    let dir = microsites_with(with_domains(dns));
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    let r = api.put_site(&ann, "ann", "Ann").await;
    api.published(&ann, change_id(&body(r).await)).await;
    (dir, server, api, ann)
}

/// Attaches `host` to ann's site and publishes its proof; the claim is live.
async fn attach_live(api: &Api, dns: &FakeDns, token: &str, host: &str) {
    let r = api.send(Method::POST, "/api/sites/ann/domains", token, Some(json!({"host": host}))).await;
    let proof = body(r).await["records"][1]["value"].as_str().expect("token").to_string();
    dns_set(dns, "set-txt", json!({"host": format!("_sesame-challenge.{host}."), "value": proof})).await;
    let checked =
        body(api.send(Method::POST, &format!("/api/sites/ann/domains/{host}/check"), token, None).await).await;
    assert_eq!(checked["status"], "live", "{checked}");
}

/// The URLs of every file the sitemap index at the platform's host lists.
async fn sitemap_urls(api: &Api) -> String {
    let (status, index) = at_host(api, "127.0.0.1", "/sitemap.xml").await;
    assert_eq!(status, StatusCode::OK);
    let mut urls = String::new();
    for file in index.split("<loc>").skip(1).filter_map(|l| l.split_once("</loc>")).map(|(loc, _)| loc) {
        let path = file.strip_prefix("http://127.0.0.1:8080").expect("a sitemap of the platform's");
        urls += &at_host(api, "127.0.0.1", path).await.1;
    }
    urls
}

#[tokio::test]
async fn a_live_domain_is_the_sites_address_in_its_pages_feeds_and_sitemap_and_its_path_form_moves_there() {
    let dns = FakeDns::start();
    let (_dir, _server, api, ann) = ann_with_a_site(&dns).await;
    const PLATFORM: &str = "<link rel=\"canonical\" href=\"http://127.0.0.1:8080/ann/\">";
    const DOMAIN: &str = "<link rel=\"canonical\" href=\"http://ann.test/\">";
    assert!(at_host(&api, "127.0.0.1", "/ann/").await.1.contains(PLATFORM));

    attach_live(&api, &dns, &ann, "ann.test").await;
    // The site's page names its domain, under either address.
    eventually("the page's canonical link at the domain", || async {
        let (status, page) = at_host(&api, "ann.test", "/").await;
        if status == StatusCode::OK && page.contains(DOMAIN) { Ok(()) } else { Err(format!("{status}")) }
    })
    .await;
    // Its feed links there, and keeps its id (readers see no entry twice).
    let (status, feed) = at_host(&api, "ann.test", "/index.xml").await;
    assert_eq!(status, StatusCode::OK);
    assert!(feed.contains("<link rel=\"alternate\" type=\"text/html\" href=\"http://ann.test/\"/>"), "{feed}");
    assert!(feed.contains("<id>http://127.0.0.1:8080/ann/</id>"), "{feed}");
    // The platform's sitemap lists the site at its domain, and the domain's
    // robots.txt names that sitemap (the protocol's cross-host submission).
    let urls = sitemap_urls(&api).await;
    assert!(urls.contains("<loc>http://ann.test/</loc>") && !urls.contains("/ann/</loc>"), "{urls}");
    let (status, robots) = at_host(&api, "ann.test", "/robots.txt").await;
    assert_eq!(status, StatusCode::OK);
    assert!(robots.contains("Sitemap: http://127.0.0.1:8080/sitemap.xml"), "{robots}");
    // The path form moves to the domain, path and query kept.
    let port = api.base.rsplit_once(':').expect("a port").1;
    let r = client().get(format!("{}/ann/index.json?x=1", api.base)).send().await.expect("path form");
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()["location"], format!("http://ann.test:{port}/index.json?x=1"));

    // An edit keeps the domain; a write cannot set one.
    let r = api.send(Method::PUT, "/api/sites/ann", &ann, Some(json!({"name": "Ann B"}))).await;
    api.published(&ann, change_id(&body(r).await)).await;
    let (_, page) = at_host(&api, "ann.test", "/").await;
    assert!(page.contains("Ann B") && page.contains(DOMAIN), "{page}");
    let r = api.send(Method::PUT, "/api/sites/ann", &ann, Some(json!({"name": "x", "domain": "evil.test"}))).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Detached: the platform's address again, everywhere.
    assert_eq!(
        api.send(Method::DELETE, "/api/sites/ann/domains/ann.test", &ann, None).await.status(),
        StatusCode::NO_CONTENT
    );
    eventually("the page's canonical link back at the platform", || async {
        let (status, page) = at_host(&api, "127.0.0.1", "/ann/").await;
        if status == StatusCode::OK && page.contains(PLATFORM) { Ok(()) } else { Err(format!("{status}")) }
    })
    .await;
    assert!(sitemap_urls(&api).await.contains("<loc>http://127.0.0.1:8080/ann/</loc>"));
}

#[tokio::test]
async fn hosts_that_cannot_be_a_sites_domain_are_refused_naming_the_field() {
    let dns = FakeDns::start();
    let budget = |c: String| with_domains(&dns)(c).replace("max_updates_per_hour = 600", "max_updates_per_hour = 12");
    let dir = microsites_with(budget);
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    const DOMAINS: &str = "/api/sites/ann/domains";
    for (host, status) in [
        (json!("127.0.0.1"), StatusCode::UNPROCESSABLE_ENTITY),
        (json!("[::1]"), StatusCode::UNPROCESSABLE_ENTITY),
        (json!("intranet"), StatusCode::UNPROCESSABLE_ENTITY),
        (json!("ann.localhost"), StatusCode::UNPROCESSABLE_ENTITY),
        (json!("ann_blog.test"), StatusCode::UNPROCESSABLE_ENTITY),
        (json!("ann.test/path"), StatusCode::UNPROCESSABLE_ENTITY),
        (json!("sites.platform.test"), StatusCode::UNPROCESSABLE_ENTITY),
        (json!("x.sites.platform.test"), StatusCode::UNPROCESSABLE_ENTITY),
        (json!(format!("{}.test", "a".repeat(64))), StatusCode::UNPROCESSABLE_ENTITY),
        (json!(42), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let r = api.send(Method::POST, DOMAINS, &ann, Some(json!({"host": host}))).await;
        assert_eq!(r.status(), status, "{host}");
        assert_eq!(body(r).await["field"], "host", "{host}");
    }
    let r = api.send(Method::POST, DOMAINS, &ann, Some(json!({"host": "ann.test", "owner": "bob"}))).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "unknown fields");
    // Once per site, and `per_site` of them.
    for host in ["a.ann.test", "b.ann.test", "c.ann.test"] {
        let r = api.send(Method::POST, DOMAINS, &ann, Some(json!({"host": host}))).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{host}");
    }
    let r = api.send(Method::POST, DOMAINS, &ann, Some(json!({"host": "A.ann.test"}))).await;
    assert_eq!((r.status(), body(r).await["field"].clone()), (StatusCode::CONFLICT, json!("host")), "attached already");
    let r = api.send(Method::POST, DOMAINS, &ann, Some(json!({"host": "d.ann.test"}))).await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "past per_site");
    // Each check asks DNS: a flood of them runs into the account's budget.
    let statuses: Vec<StatusCode> = futures::future::join_all(
        (0..20).map(|_| api.send(Method::POST, "/api/sites/ann/domains/a.ann.test/check", &ann, None)),
    )
    .await
    .iter()
    .map(|r| r.status())
    .collect();
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");

    // Without [domains] there are none to attach.
    let plain = microsites_with(quick);
    let other = Server::in_process(plain.path());
    let there = Api::new(&other);
    let ann_there = there.sign_up("ann").await;
    let r = there.send(Method::POST, DOMAINS, &ann_there, Some(json!({"host": "ann.test"}))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(body(r).await["error"].as_str().expect("why").contains("[domains]"));
}

/// An HTTPS client that trusts `cert` and finds `host` at `addr`.
pub(crate) fn https_client(cert: &str, host: &str, addr: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).expect("a PEM certificate"))
        .resolve(host, addr)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTPS client")
}

#[tokio::test]
async fn a_verified_domain_is_served_over_https_with_its_certificate_and_other_names_get_none() {
    let dns = FakeDns::start();
    let https = |c: String| with_domains(&dns)(c) + "https_listen = \"127.0.0.1:0\"\n";
    let dir = microsites_with(https);
    let server = Server::in_process(dir.path());
    let addr = server.https.expect("an HTTPS listener");
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    let r = api.put_site(&ann, "ann", "Ann, Secure").await;
    api.published(&ann, change_id(&body(r).await)).await;
    let r = api.send(Method::POST, "/api/sites/ann/domains", &ann, Some(json!({"host": "ann.test"}))).await;
    let token = body(r).await["records"][1]["value"].as_str().expect("token").to_string();
    dns_set(&dns, "set-txt", json!({"host": "_sesame-challenge.ann.test.", "value": token})).await;
    let checked = body(api.send(Method::POST, "/api/sites/ann/domains/ann.test/check", &ann, None).await).await;
    assert_eq!(checked["status"], "live");

    // The certificate, as the issuer stores it.
    // (Served for eight days already: HTTPS is made strict.)
    let TestCertificate { authority, chain, key } = TestCertificate::new(&["DNS:ann.test"]);
    let project = sesame_engine::Project::open(dir.path()).await.expect("open the project");
    let now = sesame_model::time::now();
    let row = sesame_store::CertificateRow {
        host: "ann.test".into(),
        chain,
        key,
        not_after: now + 30 * 86_400,
        issued: now,
        first_issued: now - 8 * 86_400,
    };
    assert!(project.store.put_certificate(&row).await.expect("store the certificate"));

    let secure = https_client(&authority, "ann.test", addr);
    let url = format!("https://ann.test:{}/", addr.port());
    let page = eventually("ann.test over HTTPS", || async {
        match secure.get(&url).send().await {
            Ok(r) if r.status() == StatusCode::OK => Ok(r.text().await.expect("body")),
            Ok(r) => Err(format!("{}", r.status())),
            Err(e) => Err(format!("{e:?}")),
        }
    })
    .await;
    assert!(page.contains("Ann, Secure"), "the site at its domain");
    let strict = secure.get(&url).send().await.expect("over HTTPS");
    assert_eq!(strict.headers()["strict-transport-security"], "max-age=31536000");
    // The path form leads there over HTTPS.
    let r = api.get("/ann/").await;
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()["location"], url.as_str());

    // Another name: no certificate, refused at the handshake, at once:
    // from connecting to the refusal, as a client sees it.
    let other = https_client(&authority, "unknown.test", addr);
    assert!(other.get(format!("https://unknown.test:{}/", addr.port())).send().await.is_err(), "unknown.test");
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let mut took = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("unknown.test").expect("name");
        assert!(connector.connect(name, tcp).await.is_err(), "no certificate for unknown.test");
        took.push(started.elapsed());
    }
    took.sort();
    let (p50, p99) = (took[100], took[198]);
    eprintln!("an unknown name is refused in {p50:?} (p50), {p99:?} (p99), connection included");
    assert!(p50 < Duration::from_millis(1), "refused in {p50:?} (p50)");
    // Over plain HTTP the domain is sent to HTTPS, but for ACME's challenges.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let plain_get = |path: &str| no_redirects.get(format!("{}{path}", server.base)).header("host", "ann.test").send();
    let r = plain_get("/about/?x=1").await.expect("plain HTTP");
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()["location"], format!("https://ann.test:{}/about/?x=1", addr.port()).as_str());
    let r = plain_get("/.well-known/acme-challenge/abc").await.expect("plain HTTP");
    assert_ne!(r.status(), StatusCode::MOVED_PERMANENTLY, "a challenge is answered over plain HTTP");

    // A flood of handshakes for names with no certificate: each refused,
    // and the site still answered over HTTPS meanwhile.
    let flood: Vec<_> = (0..200)
        .map(|i| {
            let client = https_client(&authority, &format!("n{i}.test"), addr);
            let url = format!("https://n{i}.test:{}/", addr.port());
            tokio::spawn(async move { client.get(url).send().await.is_err() })
        })
        .collect();
    let during = secure.get(&url).send().await.expect("answered during the flood");
    assert_eq!(during.status(), StatusCode::OK);
    for refused in flood {
        assert!(refused.await.expect("task"), "a name with no certificate got one");
    }
    // Plain HTTP on the HTTPS port is not answered either.
    let plain = client().get(format!("http://{addr}/")).send().await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true), "no page over plain HTTP there");

    // Removed: the certificate (and its key) goes with it.
    assert_eq!(
        api.send(Method::DELETE, "/api/sites/ann/domains/ann.test", &ann, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert!(project.store.certificates().await.expect("certificates").is_empty());
    eventually("no redirect once removed", || async {
        let r = plain_get("/").await.map_err(|e| format!("{e}"))?;
        if r.status() == StatusCode::MOVED_PERMANENTLY { Err("still redirected".to_string()) } else { Ok(()) }
    })
    .await;
    // (A new client each time: a kept connection's handshake is done already.)
    eventually("ann.test without a certificate", || async {
        match https_client(&authority, "ann.test", addr).get(&url).send().await {
            Err(_) => Ok(()),
            Ok(r) => Err(format!("still answered {}", r.status())),
        }
    })
    .await;
}
