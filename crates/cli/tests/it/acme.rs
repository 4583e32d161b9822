//! Certificates for custom domains, ordered from a real ACME server
//! (Pebble, with Pebble's DNS test server) and from a fake one that
//! refuses every order (429), for the budget and the back-off.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode as Status};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sesame_testkit::{FakeDns, Pebble, TestCertificate, eventually_within};

use crate::domains::{body, dns_set, https_client, with_domains};
use crate::support::*;

/// A TCP relay in front of the router's plain HTTP port, where Pebble
/// validates challenges: it forwards each connection to `target`, and
/// while closed it holds new ones (saying so on `held`) until opened.
struct Relay {
    port: u16,
    target: Arc<Mutex<SocketAddr>>,
    open: tokio::sync::watch::Sender<bool>,
    held: Arc<tokio::sync::Notify>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let target = Arc::new(Mutex::new(SocketAddr::from(([127, 0, 0, 1], 9))));
        let (open, _) = tokio::sync::watch::channel(true);
        let held = Arc::new(tokio::sync::Notify::new());
        let (to, gate, told) = (target.clone(), open.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (to, mut gate, told) = (to.clone(), gate.subscribe(), told.clone());
                tokio::spawn(async move {
                    if !*gate.borrow_and_update() {
                        told.notify_one();
                        let _ = gate.wait_for(|open| *open).await;
                    }
                    let target = *to.lock().expect("target");
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Relay { port, target, open, held }
    }

    fn point_to(&self, addr: SocketAddr) {
        *self.target.lock().expect("target") = addr;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

/// The project's `[domains.acme]` for `directory`, whose HTTPS certificate
/// `authority_file` signs.
fn acme_config(directory: &str, authority_file: &std::path::Path, extra: &str) -> String {
    format!(
        "https_listen = \"127.0.0.1:0\"\n\n[domains.acme]\ndirectory = \"{directory}\"\nroot_certificate = \"{}\"\n{extra}",
        authority_file.display()
    )
}

/// Attaches `host` to ann's site with its proof published and checks it.
async fn attach_proven(api: &Api, dns: &FakeDns, ann: &str, host: &str) -> Value {
    let r = api.send(Method::POST, "/api/sites/ann/domains", ann, Some(json!({"host": host}))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let token = body(r).await["records"][1]["value"].as_str().expect("token").to_string();
    dns_set(dns, "set-txt", json!({"host": format!("_sesame-challenge.{host}."), "value": token})).await;
    body(api.send(Method::POST, &format!("/api/sites/ann/domains/{host}/check"), ann, None).await).await
}

async fn hosts_ordered(project: &sesame_engine::Project) -> Vec<String> {
    project.store.orders_since(0).await.expect("orders").into_iter().map(|(host, _)| host).collect()
}

async fn chain_of(project: &sesame_engine::Project, host: &str) -> Option<String> {
    let certificates = project.store.certificates().await.expect("certificates");
    certificates.into_iter().find(|c| c.host == host).map(|c| c.chain)
}

#[tokio::test]
async fn a_verified_domain_gets_a_certificate_at_once_renewed_until_it_is_removed() {
    let dns = FakeDns::start();
    let relay = Relay::start().await;
    let pebble = Pebble::start(relay.port, free_port(), dns.addr);
    let acme = acme_config(&pebble.directory, &pebble.authority_file, "");
    let dir = microsites_with(|c| with_domains(&dns)(c) + &acme);
    let mut server = Server::in_process(dir.path());
    relay.point_to(server.addr.parse().expect("address"));
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    let r = api.put_site(&ann, "ann", "Ann, Secure").await;
    api.published(&ann, change_id(&body(r).await)).await;
    let project = sesame_engine::Project::open(dir.path()).await.expect("open the project");

    // Verified (the fake DNS points every name here): the certificate is
    // ordered at once, and the status says so until it is issued.
    let root = pebble_root(&pebble).await;
    let https = server.https.expect("an HTTPS listener");
    let url = |addr: SocketAddr| format!("https://ann.test:{}/", addr.port());
    let checked = attach_proven(&api, &dns, &ann, "ann.test").await;
    let verified = Instant::now();
    assert_eq!(checked["status"], "verified", "not live before HTTPS is: {checked}");

    // The first HTTPS request, sent at once, is held while the certificate
    // is ordered, and gets Pebble's certificate and the site.
    let first = https_client(&root, "ann.test", https).get(url(https)).send().await.expect("the first request");
    let listed = body(api.send(Method::GET, "/api/sites/ann/domains", &ann, None).await).await;
    assert_eq!(listed[0]["status"], "live", "{listed}");
    assert!(listed[0]["certificate"]["expires"].is_string(), "{listed}");
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("strict-transport-security").is_none(), "HSTS waits a week");
    assert!(first.text().await.expect("body").contains("Ann, Secure"));
    let took = verified.elapsed();
    eprintln!("ann.test served over HTTPS {took:?} after it was verified");
    assert!(took < Duration::from_secs(10), "served {took:?} after it was verified");
    // Over plain HTTP the domain now goes to HTTPS.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let plain = no_redirects.get(server.url("/")).header("host", "ann.test").send().await.expect("plain HTTP");
    assert_eq!(plain.status(), StatusCode::MOVED_PERMANENTLY);

    // A name nobody verified: no certificate, and never an order. Nor for a
    // host proven but pointing elsewhere (its validation could only fail).
    let unknown = https_client(&root, "unknown.test", https).get("https://unknown.test/").send().await;
    assert!(unknown.is_err(), "no certificate for unknown.test");
    dns_set(&dns, "add-a", json!({"host": "elsewhere.test.", "addresses": ["203.0.113.9"]})).await;
    let elsewhere = attach_proven(&api, &dns, &ann, "elsewhere.test").await;
    assert!(elsewhere["problem"].as_str().expect("why").contains("points to 203.0.113.9"), "{elsewhere}");
    tokio::time::sleep(Duration::from_secs(2)).await; // two of the issuer's rounds
    assert_eq!(hosts_ordered(&project).await, ["ann.test"]);
    let detached = "/api/sites/ann/domains/elsewhere.test";
    assert_eq!(api.send(Method::DELETE, detached, &ann, None).await.status(), StatusCode::NO_CONTENT);
    let issued = chain_of(&project, "ann.test").await.expect("ann.test's certificate");

    // A restart orders nothing: the certificate is the store's.
    drop(server);
    server = Server::in_process(dir.path());
    relay.point_to(server.addr.parse().expect("address"));
    tokio::time::sleep(Duration::from_secs(3)).await; // three of the issuer's rounds
    assert_eq!(hosts_ordered(&project).await, ["ann.test"], "re-issued after a restart");
    assert_eq!(chain_of(&project, "ann.test").await.as_ref(), Some(&issued));
    let https = server.https.expect("an HTTPS listener");
    let again = https_client(&root, "ann.test", https).get(url(https)).send().await.expect("after a restart");
    assert_eq!(again.status(), StatusCode::OK);

    // Due for renewal (a day left of 90): renewed, with a new certificate.
    let now = sesame_model::time::now();
    let mut expiring = project.store.certificates().await.expect("certificates").remove(0);
    (expiring.not_after, expiring.issued) = (now + 86_400, now - 89 * 86_400);
    assert!(project.store.put_certificate(&expiring).await.expect("store"));
    eventually_within("the renewal", Duration::from_secs(15), || async {
        match project.store.certificate_dates("ann.test").await.expect("dates") {
            Some((issued, _)) if issued >= now => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(hosts_ordered(&project).await, ["ann.test", "ann.test"]);
    assert_ne!(chain_of(&project, "ann.test").await, Some(issued), "a new certificate");

    // A domain removed while its order is validated gets no certificate.
    let api = Api::new(&server);
    relay.open.send_replace(false);
    attach_proven(&api, &dns, &ann, "www.ann.test").await;
    tokio::time::timeout(Duration::from_secs(15), relay.held.notified()).await.expect("the authority validating");
    let www = "/api/sites/ann/domains/www.ann.test";
    assert_eq!(api.send(Method::DELETE, www, &ann, None).await.status(), StatusCode::NO_CONTENT);
    relay.open.send_replace(true);
    eventually_within("the order to end", Duration::from_secs(15), || async {
        let discarded = server.metric("sesame_acme_discarded_total").await;
        if discarded >= 1.0 { Ok(()) } else { Err(format!("{discarded}")) }
    })
    .await;
    assert_eq!(chain_of(&project, "www.ann.test").await, None, "kept for a removed domain");
    assert_eq!(project.store.certificate_dates("www.ann.test").await.expect("dates"), None);

    // Removed: its certificate and key go, and it is never renewed.
    let ann_test = "/api/sites/ann/domains/ann.test";
    assert_eq!(api.send(Method::DELETE, ann_test, &ann, None).await.status(), StatusCode::NO_CONTENT);
    assert!(project.store.certificates().await.expect("certificates").is_empty());
    let ordered = hosts_ordered(&project).await.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hosts_ordered(&project).await.len(), ordered, "ordered after removal");
    eventually("no HTTPS for a removed domain", || async {
        match https_client(&root, "ann.test", https).get(url(https)).send().await {
            Err(_) => Ok(()),
            Ok(r) => Err(format!("still answered {}", r.status())),
        }
    })
    .await;
}

#[tokio::test]
async fn where_port_80_is_closed_the_router_answers_tls_alpn_01() {
    let dns = FakeDns::start();
    let relay = Relay::start().await;
    // Pebble's HTTP-01 checks would find nothing listening: only the TLS port leads here.
    let pebble = Pebble::start(free_port(), relay.port, dns.addr);
    let acme = acme_config(&pebble.directory, &pebble.authority_file, "challenge = \"tls-alpn-01\"\n");
    let dir = microsites_with(|c| with_domains(&dns)(c) + &acme);
    let server = Server::in_process(dir.path());
    let https = server.https.expect("an HTTPS listener");
    relay.point_to(https);
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    let r = api.put_site(&ann, "ann", "Ann, Secure").await;
    api.published(&ann, change_id(&body(r).await)).await;

    attach_proven(&api, &dns, &ann, "ann.test").await;
    eventually_within("a certificate for ann.test", Duration::from_secs(10), || async {
        let listed = body(api.send(Method::GET, "/api/sites/ann/domains", &ann, None).await).await;
        if listed[0]["status"] == "live" { Ok(()) } else { Err(listed.to_string()) }
    })
    .await;
    let page = https_client(&pebble_root(&pebble).await, "ann.test", https)
        .get(format!("https://ann.test:{}/", https.port()))
        .send()
        .await
        .expect("over HTTPS");
    assert!(page.text().await.expect("body").contains("Ann, Secure"));
    let project = sesame_engine::Project::open(dir.path()).await.expect("open the project");
    assert_eq!(project.store.alpn_challenge("ann.test").await.expect("read"), None, "the answer is dropped");
    // A validation for a name no order waits on gets no certificate.
    let mut client =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
    client.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(https).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("other.test").expect("name");
    let refused = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, tcp).await;
    assert!(refused.is_err(), "a challenge certificate for a name no order waits on");
}

/// The root Pebble's certificates chain to (from its management API).
async fn pebble_root(pebble: &Pebble) -> String {
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pebble.authority.as_bytes()).expect("PEM"))
        .build()
        .expect("client");
    let root = client.get(format!("{}/roots/0", pebble.management)).send().await.expect("Pebble's root");
    root.text().await.expect("PEM")
}

/// An ACME server that creates accounts and refuses every order with 429
/// (rate limited), recording when each came.
struct RefusingAcme {
    directory: String,
    authority_file: std::path::PathBuf,
    orders: Arc<Mutex<Vec<Instant>>>,
    _dir: tempfile::TempDir,
}

impl RefusingAcme {
    async fn start() -> RefusingAcme {
        let certificate = TestCertificate::new(&["IP:127.0.0.1"]);
        let dir = tempfile::tempdir().expect("temp dir");
        let authority_file = dir.path().join("ca.pem");
        std::fs::write(&authority_file, &certificate.authority).expect("write the authority");
        let listener = sesame_router::server::listen("127.0.0.1:0".parse().expect("address")).expect("listen");
        let base = format!("https://{}", listener.local_addr().expect("address"));
        let orders = Arc::new(Mutex::new(Vec::new()));
        let nonce = || {
            let mut h = HeaderMap::new();
            h.insert("replay-nonce", HeaderValue::from_str(&format!("n{}", fastrand::u64(..))).expect("nonce"));
            h
        };
        let directory = json!({"newNonce": format!("{base}/nonce"), "newAccount": format!("{base}/account"),
            "newOrder": format!("{base}/order")});
        let counted = orders.clone();
        let account_url = format!("{base}/account/1");
        let app = axum::Router::new()
            .route("/dir", axum::routing::get(move || async move { axum::Json(directory) }))
            .route("/nonce", axum::routing::get(move || async move { (nonce(), "") }))
            .route(
                "/account",
                axum::routing::post(move || async move {
                    let mut h = nonce();
                    h.insert("location", HeaderValue::from_str(&account_url).expect("url"));
                    (Status::CREATED, h, axum::Json(json!({"status": "valid"})))
                }),
            )
            .route(
                "/order",
                axum::routing::post(move || {
                    counted.lock().expect("orders").push(Instant::now());
                    async move {
                        let mut h = nonce();
                        h.insert("content-type", HeaderValue::from_static("application/problem+json"));
                        h.insert("retry-after", HeaderValue::from_static("3600"));
                        let problem = json!({"type": "urn:ietf:params:acme:error:rateLimited",
                            "detail": "too many new orders recently", "status": 429});
                        (Status::TOO_MANY_REQUESTS, h, problem.to_string())
                    }
                }),
            );
        let tls = tls_config(&certificate);
        tokio::spawn(async move {
            let limits = sesame_router::server::Limits::default();
            let tls = sesame_router::server::Tls { config: tls, challenges: None, wait: None };
            sesame_router::server::serve_with(listener, app, limits, Some(tls), std::future::pending()).await
        });
        RefusingAcme { directory: format!("{base}/dir"), authority_file, orders, _dir: dir }
    }

    fn orders(&self) -> Vec<Instant> {
        self.orders.lock().expect("orders").clone()
    }
}

fn tls_config(certificate: &TestCertificate) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(certificate.chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("the chain");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(certificate.key.as_bytes()).expect("the key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a TLS configuration");
    Arc::new(config)
}

#[tokio::test]
async fn refused_orders_back_off_per_host_within_the_order_budget() {
    let dns = FakeDns::start();
    let authority = RefusingAcme::start().await;
    // Three orders per hour; a failed host waits 1 s, then 2 s, then 4 s.
    let extra = "orders_per_window = 3\nwindow_hours = 1\nretry_seconds = 1\n";
    let acme = acme_config(&authority.directory, &authority.authority_file, extra);
    let dir = microsites_with(|c| with_domains(&dns)(c) + &acme);
    let server = Server::in_process(dir.path());
    let api = Api::new(&server);
    let ann = api.sign_up("ann").await;
    let r = api.put_site(&ann, "ann", "Ann").await;
    api.published(&ann, change_id(&body(r).await)).await;

    attach_proven(&api, &dns, &ann, "ann.test").await;
    let verified = Instant::now();
    // A client of ann.test is held while its certificate is ordered, but no
    // longer than the wait: with none issued, the handshake is then refused.
    let root = std::fs::read_to_string(&authority.authority_file).expect("a PEM certificate");
    let https = server.https.expect("an HTTPS listener");
    let held = Instant::now();
    let refused =
        https_client(&root, "ann.test", https).get(format!("https://ann.test:{}/", https.port())).send().await;
    assert!(refused.is_err(), "no certificate, no HTTPS");
    let held = held.elapsed();
    let wait = sesame_router::CERTIFICATE_WAIT;
    assert!(held >= wait - Duration::from_millis(200) && held < wait + Duration::from_secs(1), "held {held:?}");
    // Refused each time, ann.test is tried again later each time: at about
    // 0, 1 and 3 s (its fourth try, at 7 s, is past the budget).
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(verified.elapsed())).await;
    let orders = authority.orders();
    assert_eq!(orders.len(), 3, "orders at {orders:?}");
    let waits: Vec<Duration> = orders.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(waits[0] >= Duration::from_millis(900), "the first wait: {waits:?}");
    assert!(waits[1] >= Duration::from_millis(1_900), "doubled: {waits:?}");
    // The owner is told why, in the authority's words.
    let listed = body(api.send(Method::GET, "/api/sites/ann/domains", &ann, None).await).await;
    assert_eq!(listed[0]["status"], "verified", "{listed}");
    let problem = listed[0]["problem"].as_str().expect("why").to_string();
    assert!(problem.contains("too many new orders recently") && problem.contains("trying again after"), "{problem}");

    // The budget is spent: another verified host is not ordered at all.
    attach_proven(&api, &dns, &ann, "www.ann.test").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(authority.orders().len(), 3, "past the budget");
    assert!(server.metric("sesame_acme_budget_spent_total").await >= 1.0);
}
