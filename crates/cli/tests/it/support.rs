//! Helpers: run the real binary on a temporary project and talk HTTP to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
pub use sesame_testkit::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sesame")
}

/// Runs `sesame --project DIR ARGS…` and returns its output.
pub fn sesame(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--project")
        .arg(dir)
        .args(args)
        .env_remove("SESAME_DATABASE_URL")
        .env_remove("SESAME_STORAGE_URL")
        .output()
        .expect("run sesame")
}

/// The keys of every object in a project's object storage (the one the
/// project opens: configured, embedded, or a directory of files), sorted.
pub async fn stored_objects(dir: &Path) -> Vec<String> {
    use futures::TryStreamExt;
    let project = sesame_engine::Project::open(dir).await.expect("open the project");
    let mut keys: Vec<String> =
        project.objects.list().map_ok(|(k, _)| k).try_collect().await.expect("list the objects");
    keys.sort();
    keys
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = sesame(dir, args);
    assert!(
        out.status.success(),
        "sesame {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns its stderr.
pub fn fails(dir: &Path, args: &[&str]) -> String {
    let out = sesame(dir, args);
    assert!(!out.status.success(), "sesame {args:?} unexpectedly succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A test project: its directory and, on the PostgreSQL backend, its database.
pub struct TestProject {
    dir: tempfile::TempDir,
    _db: Option<sesame_testkit::PgDatabase>,
}

impl TestProject {
    /// The project directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A fresh project from an example, with its sample content imported and
/// built, on the backend `SESAME_TEST_BACKEND` selects.
pub fn built_example(example: &str) -> TestProject {
    built_example_on(example, sesame_testkit::scale_urls(), &|c| c)
}

/// [`built_example`] with its `sesame.toml` edited by `edit` before the build.
pub fn built_example_with(example: &str, edit: &dyn Fn(String) -> String) -> TestProject {
    built_example_on(example, sesame_testkit::scale_urls(), edit)
}

/// [`built_example_with`], with objects in a local directory whatever the
/// backend: for tests that sweep storage after writing several full sites,
/// which the test S3 server lists too slowly (hundreds of thousands of files).
pub fn built_example_with_local_objects(example: &str, edit: &dyn Fn(String) -> String) -> TestProject {
    let scale = sesame_testkit::scale_urls().map(|(db, _)| (db, "file://.sesame/objects".to_string()));
    built_example_on(example, scale, edit)
}

/// [`built_example`] on PostgreSQL and the S3-compatible server, whatever
/// `SESAME_TEST_BACKEND` says.
pub fn built_example_at_scale(example: &str) -> TestProject {
    built_example_on(example, Some((sesame_testkit::PgDatabase::create(), sesame_testkit::s3_bucket())), &|c| c)
}

/// A fresh project from an example with its sample content imported and
/// not built, on the backend `SESAME_TEST_BACKEND` selects: for tests of the
/// stored documents alone (`check`), which need no pages.
pub fn imported_example(example: &str) -> TestProject {
    example_on(example, sesame_testkit::scale_urls(), &|c| c, false)
}

fn built_example_on(
    example: &str,
    scale: Option<(sesame_testkit::PgDatabase, String)>,
    edit: &dyn Fn(String) -> String,
) -> TestProject {
    example_on(example, scale, edit, true)
}

fn example_on(
    example: &str,
    scale: Option<(sesame_testkit::PgDatabase, String)>,
    edit: &dyn Fn(String) -> String,
    build: bool,
) -> TestProject {
    let dir = tempfile::tempdir().expect("temp dir");
    ok(dir.path(), &["init", "--example", example]);
    let config = dir.path().join("sesame.toml");
    let mut text = edit(std::fs::read_to_string(&config).expect("read config"));
    let db = scale.map(|(db, storage)| {
        text = sesame_testkit::with_backend(&text, &db.url, &storage);
        db
    });
    std::fs::write(&config, text).expect("write config");
    let (file, collection) = match example {
        "gallery" => ("content/sprites.ndjson.gz", "sprites"),
        _ => ("content/sites.ndjson", "sites"),
    };
    let file = dir.path().join(file);
    ok(dir.path(), &["import", file.to_str().expect("utf-8 path"), "--collection", collection]);
    if build {
        ok(dir.path(), &["build"]);
    }
    TestProject { dir, _db: db }
}

/// A running `sesame serve`: a child process (killed on drop), or the same
/// roles in this process (stopped on drop).
pub struct Server {
    running: Running,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// Where it answers HTTPS for custom domains, when it does (in process).
    pub https: Option<std::net::SocketAddr>,
}

enum Running {
    Process(Child),
    /// `sesame::roles::serve` on a runtime of its own thread.
    InProcess {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

impl Server {
    /// Runs what `sesame serve` runs (router, API, publisher) in this
    /// process on a free port, on a runtime of its own (so that a test may
    /// block on a command meanwhile), and waits until it listens. For tests
    /// of what the service answers; those of the process itself (signals,
    /// descriptors, memory, `kill -9`) start it with [`Server::start`].
    pub fn in_process(dir: &Path) -> Server {
        let dir = dir.to_path_buf();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the service");
            runtime.block_on(async move {
                let project = sesame_engine::Project::open(&dir).await.expect("open the project");
                let roles = sesame::roles::Roles { router: true, api: true, publisher: true };
                let listen = Some("127.0.0.1:0".parse().expect("address"));
                let until = async {
                    let _ = stopped.await;
                };
                let ready = move |r: sesame::roles::Ready| {
                    let _ = ready_tx.send((r.addr.expect("listening").to_string(), r.https));
                };
                sesame::roles::serve(project, listen, roles, until, ready).await.expect("the service ran");
            });
        });
        let (addr, https) = ready.recv_timeout(Duration::from_secs(60)).expect("the service listens");
        let running = Running::InProcess { stop: Some(stop), thread: Some(thread) };
        Server { running, base: format!("http://{addr}"), addr, https }
    }

    /// [`Server::in_process`] with [`ADMIN`] as the admin token, written into
    /// the project's `[api]` (the environment is the process's, not the
    /// service's).
    pub fn in_process_with_admin(dir: &Path) -> Server {
        let toml = dir.join("sesame.toml");
        let config = std::fs::read_to_string(&toml).expect("read sesame.toml");
        assert!(config.contains("\n[api]\n"), "the project has an [api] section");
        let config = config.replacen("\n[api]\n", &format!("\n[api]\nadmin_token = \"{ADMIN}\"\n"), 1);
        std::fs::write(&toml, config).expect("write sesame.toml");
        Server::in_process(dir)
    }

    /// Starts `sesame serve` on a free port and waits until it listens.
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, &[], "127.0.0.1:0")
    }

    /// Starts `sesame serve` with extra environment variables on `listen`.
    pub fn start_with(dir: &Path, env: &[(&str, &str)], listen: &str) -> Server {
        Server::role(dir, "serve", env, listen)
    }

    /// Starts one role (`serve`, `router`, `api` or `publisher`) listening on
    /// `listen` and waits until it does.
    pub fn role(dir: &Path, role: &str, env: &[(&str, &str)], listen: &str) -> Server {
        Server::spawn(dir, role, env, listen, Stdio::inherit())
    }

    /// Starts `sesame serve` with its log (stderr) written to `log`.
    pub fn logged(dir: &Path, env: &[(&str, &str)], log: &Path) -> Server {
        let file = std::fs::File::create(log).expect("create the log file");
        Server::spawn(dir, "serve", env, "127.0.0.1:0", Stdio::from(file))
    }

    fn spawn(dir: &Path, role: &str, env: &[(&str, &str)], listen: &str, stderr: Stdio) -> Server {
        let mut child = Command::new(bin())
            .args([role, "--listen", listen, "--project"])
            .arg(dir)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn sesame {role}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split_once("at http://") {
                    let addr = rest.1.split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("server announced its address");
        Server { running: Running::Process(child), base: format!("http://{addr}"), addr, https: None }
    }

    fn child(&mut self) -> &mut Child {
        match &mut self.running {
            Running::Process(child) => child,
            Running::InProcess { .. } => panic!("a service in this process has no process of its own"),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        match &self.running {
            Running::Process(child) => child.id(),
            Running::InProcess { .. } => panic!("a service in this process has no process of its own"),
        }
    }

    /// Asks the server to stop (SIGTERM) and returns how long it took to exit.
    pub fn terminate(mut self) -> Duration {
        let started = Instant::now();
        let child = self.child();
        let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM");
        loop {
            if child.try_wait().expect("wait").is_some() {
                return started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the server did not stop within a minute");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server without letting it shut down (SIGKILL).
    pub fn kill(mut self) {
        let child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The value of a metric at `/metrics` now (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = client().get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        metric(&text, name)
    }

    /// Absolute URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request line exactly as given (no client-side path
    /// normalisation) and returns the status code and body.
    pub async fn raw_get(&self, target: &str) -> (u16, String) {
        self.raw_get_host(target, "test").await
    }

    /// [`Server::raw_get`] with a given `Host` header.
    pub async fn raw_get_host(&self, target: &str, host: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(&self.addr).await.expect("connect");
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }
}

/// A response read off the wire.
#[derive(Debug)]
pub struct Raw {
    /// Status code.
    pub status: u16,
    /// Header fields in order, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body as sent.
    pub body: String,
}

impl Raw {
    /// The value of a header field, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl Server {
    /// Sends `request` (a whole HTTP/1.x request, sent as is) on a new
    /// connection and reads the response until the server closes it.
    pub async fn raw(&self, request: &str) -> Raw {
        let mut stream = tokio::net::TcpStream::connect(&self.addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
            .await
            .expect("the server answers and closes")
            .expect("read");
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Raw { status, headers, body: body.to_string() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::InProcess { stop, thread } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// An HTTP client that neither follows redirects nor decompresses.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// The microsites example, built, with its `sesame.toml` edited by `edit`.
pub fn microsites_with(edit: impl Fn(String) -> String) -> TestProject {
    let dir = built_example("microsites");
    let config = dir.path().join("sesame.toml");
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, edit(text)).expect("write config");
    dir
}

/// Writes a file, creating parent folders.
pub fn write(dir: &Path, rel: &str, contents: &str) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, contents).expect("write");
    path
}

/// The admin token the API tests start servers with.
pub const ADMIN: &str = "admin-secret-for-tests";

/// A client of one server.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(server: &Server) -> Api {
        Api { http: client(), base: server.base.clone() }
    }

    pub async fn sign_up(&self, handle: &str) -> String {
        let r = self
            .http
            .post(format!("{}/api/accounts", self.base))
            .json(&json!({ "handle": handle }))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::CREATED, "sign up {handle}");
        let body: Value = r.json().await.expect("json");
        let token = body["token"].as_str().expect("token").to_string();
        assert!(token.len() >= 64, "at least 256 bits");
        token
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.expect("request")
    }

    pub async fn put_site(&self, token: &str, handle: &str, name: &str) -> reqwest::Response {
        self.send(
            reqwest::Method::PUT,
            &format!("/api/sites/{handle}"),
            token,
            Some(json!({ "name": name, "bio": "*hi*" })),
        )
        .await
    }

    /// Uploads an image (`POST /api/media`) as `token`'s account.
    pub async fn upload(&self, token: &str, bytes: Vec<u8>, content_type: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/media", self.base))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes)
            .send()
            .await
            .expect("request")
    }

    /// Polls a change until it is published; returns its status document.
    pub async fn published(&self, token: &str, change: i64) -> Value {
        eventually(&format!("change {change} published"), || async {
            let r = self.send(reqwest::Method::GET, &format!("/api/changes/{change}"), token, None).await;
            if r.status() == StatusCode::TOO_MANY_REQUESTS {
                // A polite client waits as told (status reads are rate-limited).
                let wait: u64 = r.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
                tokio::time::sleep(Duration::from_secs(wait)).await;
                return Err("rate-limited".into());
            }
            assert_eq!(r.status(), StatusCode::OK);
            let body: Value = r.json().await.expect("json");
            match body["status"].as_str() {
                Some("published") => Ok(body),
                Some("queued" | "building") => Err(body.to_string()),
                other => panic!("change {change}: {other:?} {body}"),
            }
        })
        .await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base)).send().await.expect("request")
    }
}

pub fn change_id(body: &Value) -> i64 {
    body["change"].as_i64().unwrap_or_else(|| panic!("no change id in {body}"))
}

/// Fast debounce for tests.
pub fn quick(config: String) -> String {
    config.replace("quiet_ms = 2000", "quiet_ms = 300")
}

/// The highest value `sample` gives while this lives, sampled every 10 ms
/// on the runtime (a process's memory or descriptors, read from `/proc`).
pub struct Peak {
    highest: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sampling: tokio::task::JoinHandle<()>,
}

impl Peak {
    pub fn watch(sample: impl Fn() -> u64 + Send + 'static) -> Peak {
        let highest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(sample()));
        let sampling = tokio::spawn({
            let highest = highest.clone();
            async move {
                loop {
                    highest.fetch_max(sample(), std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Peak { highest, sampling }
    }

    /// Stops sampling; the highest value seen.
    pub fn stop(self) -> u64 {
        self.sampling.abort();
        self.highest.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Resident memory of a process, in bytes (from `/proc`).
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Open file descriptors of a process (from `/proc`).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The value of a metric in Prometheus text (0 when absent).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// An image of `format`, `width`×`height`, in colours that vary (so that
/// compression cannot make it tiny).
pub fn image_bytes(format: image::ImageFormat, width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        let v = x.wrapping_mul(7919) ^ y.wrapping_mul(104_729) ^ (x * y);
        image::Rgb([(v & 0xff) as u8, (v >> 8 & 0xff) as u8, (v >> 16 & 0xff) as u8])
    });
    let mut out = Vec::new();
    if format == image::ImageFormat::Gif || format == image::ImageFormat::WebP {
        image::DynamicImage::ImageRgb8(image)
            .to_rgba8()
            .write_to(&mut std::io::Cursor::new(&mut out), format)
            .expect("encode");
    } else {
        image.write_to(&mut std::io::Cursor::new(&mut out), format).expect("encode");
    }
    out
}
