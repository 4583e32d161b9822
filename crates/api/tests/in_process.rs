//! The write API in process: `sesame_api::router` over a real project (the
//! microsites example on SQLite and LMDB in a temporary directory), requests
//! sent with `tower`'s `oneshot` (no socket, no `sesame` binary), and the
//! engine's publish loop in a task, as `sesame serve` runs it. What needs a
//! whole process (kill -9, signals, descriptors) stays in `cli/tests/it`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use sesame_api::ApiState;
use sesame_engine::{Project, PublishLoop, PublishLoopHandle, Quiet};
use sesame_testkit::eventually;
use tokio::sync::watch;
use tower::ServiceExt;

/// The API of a freshly built microsites project, with its publisher.
struct Service {
    _dir: tempfile::TempDir,
    app: axum::Router,
    project: Arc<Project>,
    _stop: watch::Sender<bool>,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read the example") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

impl Service {
    async fn start() -> Service {
        let dir = tempfile::tempdir().expect("temporary directory");
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/projects/microsites");
        copy_dir(&example, dir.path());
        let toml = dir.path().join("sesame.toml");
        let config = std::fs::read_to_string(&toml).expect("sesame.toml").replace("quiet_ms = 2000", "quiet_ms = 50");
        std::fs::write(&toml, config).expect("write sesame.toml");
        let project = Arc::new(Project::open(dir.path()).await.expect("open the project"));
        sesame_engine::build(&project, &Quiet).await.expect("build");
        let handle = PublishLoopHandle::default();
        let publisher = PublishLoop::new(project.clone(), handle.clone()).await.expect("publisher");
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(publisher.run(stopped));
        let app = sesame_api::router(ApiState::new(project.clone(), handle, None, None));
        Service { _dir: dir, app, project, _stop: stop }
    }

    /// Sends a request as if from `peer`; returns the status and the JSON body.
    async fn ask_from(
        &self,
        peer: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        let mut request = request.body(body).expect("request");
        let peer: SocketAddr = peer.parse().expect("address");
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = self.app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn ask(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        self.ask_from("192.0.2.1:5000", method, path, token, body).await
    }

    async fn sign_up(&self, handle: &str) -> String {
        let (status, body) = self.ask(Method::POST, "/api/accounts", None, Some(json!({ "handle": handle }))).await;
        assert_eq!(status, StatusCode::CREATED, "sign up {handle}: {body}");
        body["token"].as_str().expect("token").to_string()
    }

    /// Polls a change's status until it is published.
    async fn published(&self, token: &str, change: i64) -> Value {
        eventually(&format!("change {change} published"), || async {
            let (status, body) = self.ask(Method::GET, &format!("/api/changes/{change}"), Some(token), None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            match body["status"].as_str() {
                Some("published") => Ok(body),
                Some("queued" | "building") => Err(body.to_string()),
                other => panic!("change {change}: {other:?} {body}"),
            }
        })
        .await
    }
}

#[tokio::test]
async fn a_write_is_acknowledged_then_published_at_its_path() {
    let service = Service::start().await;
    let token = service.sign_up("ada").await;
    let (status, body) =
        service.ask(Method::PUT, "/api/sites/ada", Some(&token), Some(json!({ "name": "Ada", "bio": "*hi*" }))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let change = body["change"].as_i64().expect("change id");
    let status = service.published(&token, change).await;
    assert_eq!(status["urls"], json!(["http://127.0.0.1:8080/ada/"]), "{status}");
    let published = sesame_engine::manifest::pointers_at(&service.project, &["/ada/".to_string()]).await;
    assert_eq!(published.expect("the published table").len(), 1, "the page is live");
}

#[tokio::test]
async fn bad_input_is_a_4xx_with_a_json_body_naming_the_field() {
    let service = Service::start().await;
    let token = service.sign_up("bo").await;
    let (status, body) = service.ask(Method::PUT, "/api/sites/bo", Some(&token), Some(json!({ "name": 7 }))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("/name"), "names the field: {body}");
    let (status, body) =
        service.ask(Method::PUT, "/api/collections/nothing/docs/bo", Some(&token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("unknown collection")), "{body}");
    let (status, body) = service.ask(Method::PUT, "/api/sites/bo", Some("not-a-token"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn an_account_cannot_write_anothers_site() {
    let service = Service::start().await;
    let ada = service.sign_up("ada").await;
    let eve = service.sign_up("eve").await;
    let (status, _) = service.ask(Method::PUT, "/api/sites/ada", Some(&ada), Some(json!({ "name": "Ada" }))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let attempts = [
        (Method::PUT, "/api/sites/ada", Some(json!({ "name": "Not Ada" }))),
        (Method::PATCH, "/api/sites/ada", Some(json!({ "name": "Not Ada" }))),
        (Method::DELETE, "/api/collections/sites/docs/ada", None),
    ];
    for (method, path, body) in attempts {
        let (status, answer) = service.ask(method.clone(), path, Some(&eve), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
    }
    let (status, _) =
        service.ask(Method::PUT, "/api/sites/mallory", Some(&eve), Some(json!({ "name": "Squat" }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a site is its owner's handle");
}

#[tokio::test]
async fn sign_ups_are_limited_per_network() {
    let service = Service::start().await;
    let limit = service.project.site.config.api.signups_per_hour;
    for i in 0..limit {
        let (status, body) = service
            .ask_from("198.51.100.7:1", Method::POST, "/api/accounts", None, Some(json!({ "handle": format!("u{i}") })))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let next = json!({ "handle": "one-more" });
    let (status, body) =
        service.ask_from("198.51.100.7:2", Method::POST, "/api/accounts", None, Some(next.clone())).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let (status, _) = service.ask_from("203.0.113.9:1", Method::POST, "/api/accounts", None, Some(next)).await;
    assert_eq!(status, StatusCode::CREATED, "another network has its own budget");
}
