//! Test helpers for running the same tests on both backends: SQLite with a
//! local directory (the default) and PostgreSQL with an S3-compatible server
//! (`SESAME_TEST_BACKEND=postgres`).
//!
//! PostgreSQL comes from `SESAME_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); every test gets a fresh
//! database, dropped afterwards. The S3-compatible server is `s3s-fs` (installed
//! by `scripts/test`), started once per test process on a free port; every
//! test gets a fresh bucket. A missing service fails the test loudly: nothing
//! is skipped.

pub mod crawler;
mod eventually;

pub use eventually::{eventually, eventually_within};

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The backend a test run targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file and local object directory.
    Embedded,
    /// PostgreSQL and an S3-compatible server.
    Scale,
}

/// The backend selected by `SESAME_TEST_BACKEND` (`postgres` for [`Backend::Scale`]).
pub fn backend() -> Backend {
    match std::env::var("SESAME_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Scale,
        _ => Backend::Embedded,
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("OS randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A PostgreSQL database created for one test, dropped when this is dropped.
#[derive(Debug)]
pub struct PgDatabase {
    /// URL of the database.
    pub url: String,
    admin: String,
    name: String,
}

fn admin_url() -> String {
    std::env::var("SESAME_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Runs a statement on the admin database from any context (its own thread
/// and runtime, so that sync and async tests can both call it).
fn admin(statement: String) -> Result<(), String> {
    let url = admin_url();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.map_err(|e| e.to_string())?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await.map_err(|e| e.to_string())?;
            Ok(())
        })
    })
    .join()
    .map_err(|_| "the admin thread panicked".to_string())?
}

impl PgDatabase {
    /// Creates a fresh database. Panics, naming the fix, when PostgreSQL is
    /// unreachable.
    pub fn create() -> PgDatabase {
        let name = format!("sesame_test_{}", random_suffix());
        let admin_url = admin_url();
        if let Err(e) = admin(format!("CREATE DATABASE {name}")) {
            panic!(
                "PostgreSQL is needed for these tests and is not reachable at {admin_url} ({e}). \
                 Start it (scripts/test does) or point SESAME_TEST_POSTGRES at one."
            );
        }
        let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(b, _)| b);
        PgDatabase { url: format!("{base}/{name}"), admin: admin_url.clone(), name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = &self.admin;
        let _ = admin(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// The S3-compatible server of this test process.
struct S3Server {
    endpoint: String,
    root: PathBuf,
    /// The server lives until this pipe closes, which happens when the test
    /// process exits (statics are never dropped).
    _lifeline: ChildStdin,
}

fn s3s_fs() -> PathBuf {
    if let Ok(path) = std::env::var("SESAME_TEST_S3S_FS") {
        return PathBuf::from(path);
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    home.join("bin").join("s3s-fs")
}

/// Runs the server until stdin closes, then stops it and removes its data.
const SUPERVISOR: &str = r#"
"$0" --host 127.0.0.1 --port "$1" "$2" >/dev/null 2>&1 &
server=$!
cat >/dev/null
kill "$server" 2>/dev/null
wait "$server"
rm -rf "$2"
"#;

fn s3_server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let binary = s3s_fs();
        assert!(
            binary.is_file(),
            "{} is missing; install it with `cargo install s3s-fs --version 0.14.1 --features binary --locked` \
             (scripts/test does)",
            binary.display()
        );
        for _ in 0..5 {
            let root = tempfile::tempdir().expect("temp dir").keep();
            let port =
                TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
            let mut child = Command::new("sh")
                .args(["-c", SUPERVISOR])
                .arg(&binary)
                .arg(port.to_string())
                .arg(&root)
                .stdin(Stdio::piped())
                // It outlives the test that started it: holding the test's
                // output open would read as a leaked process to the runner.
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start sh");
            let lifeline = child.stdin.take().expect("stdin");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    std::thread::spawn(move || child.wait()); // reaps the supervisor
                    return S3Server { endpoint: format!("http://127.0.0.1:{port}"), root, _lifeline: lifeline };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Perhaps the port was taken meanwhile: stop this one, try another.
            drop(lifeline);
            let _ = child.wait();
        }
        panic!("s3s-fs did not start listening");
    })
}

/// A storage URL for a fresh bucket on the test S3-compatible server.
pub fn s3_bucket() -> String {
    let server = s3_server();
    let bucket = format!("sesame-{}", random_suffix());
    std::fs::create_dir_all(server.root.join(&bucket)).expect("create bucket");
    // A connection per request: on a kept-alive connection s3s-fs holds about
    // half of its answers 40 ms (it writes a response's head and body apart
    // without TCP_NODELAY, and the client delays its ACK).
    format!(
        "s3://{bucket}?endpoint={}&region=us-east-1&path_style=true&skip_signature=true&pool_max_idle_per_host=0",
        server.endpoint
    )
}

/// For [`Backend::Scale`]: the database and storage URLs of a fresh pair (keep
/// the database guard alive for the test). `None` for [`Backend::Embedded`].
pub fn scale_urls() -> Option<(PgDatabase, String)> {
    match backend() {
        Backend::Embedded => None,
        Backend::Scale => Some((PgDatabase::create(), s3_bucket())),
    }
}

/// Inserts `database_url` and `storage_url` into a `sesame.toml` text (after
/// its first line, so that they stay top-level keys).
pub fn with_backend(config: &str, database_url: &str, storage_url: &str) -> String {
    let (first, rest) = config.split_once('\n').unwrap_or((config, ""));
    format!("{first}\ndatabase_url = \"{database_url}\"\nstorage_url = \"{storage_url}\"\n{rest}")
}

/// A DNS server whose answers a test sets: Pebble's `pebble-challtestsrv`
/// (Debian package `pebble`, installed by `scripts/test`), on free ports,
/// stopped when dropped. It answers A queries for any name with 127.0.0.1
/// unless told otherwise.
pub struct FakeDns {
    /// Where it answers DNS, over UDP and TCP.
    pub addr: std::net::SocketAddr,
    /// Its management API (`POST /set-txt`, `/add-a`, …).
    pub management: String,
    child: std::process::Child,
}

impl FakeDns {
    /// Starts one, failing loudly when the program is missing.
    pub fn start() -> FakeDns {
        let program = std::env::var("SESAME_TEST_CHALLTESTSRV").unwrap_or_else(|_| "pebble-challtestsrv".into());
        let (child, dns, management) = on_two_free_ports(&program, |dns, management| {
            let mut command = Command::new(&program);
            command
                .args(["-dns01", &format!("127.0.0.1:{dns}"), "-management", &format!("127.0.0.1:{management}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv6", ""]);
            command
        });
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], dns));
        FakeDns { addr, management: format!("http://127.0.0.1:{management}"), child }
    }
}

/// Runs `program` as `command(a, b)` makes it, on two free ports `a` and
/// `b`, until it listens on both (trying other ports when one was taken
/// meanwhile); fails loudly when it cannot run.
fn on_two_free_ports(program: &str, command: impl Fn(u16, u16) -> Command) -> (std::process::Child, u16, u16) {
    let free = || TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    for _ in 0..5 {
        let (a, b) = (free(), free());
        let mut child = command(a, b).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!("{program} cannot run ({e}): install Debian's `pebble` package (scripts/test does)")
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let up = |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if up(a) && up(b) {
                return (child, a, b);
            }
            if child.try_wait().ok().flatten().is_some() {
                break; // a port was taken meanwhile
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("{program} did not start");
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A certificate from a throwaway test authority, made by `openssl`
/// (Debian's openssl package): the authority's certificate (for a client
/// to trust) and the leaf's chain and key, all PEM.
pub struct TestCertificate {
    /// The authority's certificate.
    pub authority: String,
    /// The leaf certificate.
    pub chain: String,
    /// The leaf's private key.
    pub key: String,
}

impl TestCertificate {
    /// One for `names` (`DNS:host` or `IP:address` entries of its subject
    /// alternative names), valid for 30 days.
    pub fn new(names: &[&str]) -> TestCertificate {
        let dir = tempfile::tempdir().expect("temp dir");
        let openssl = |args: &[&str]| {
            let made = Command::new("openssl").args(args).current_dir(dir.path()).output().expect("run openssl");
            assert!(made.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&made.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let authority = ["-days", "30", "-subj", "/CN=sesame test authority", "-keyout", "ca.key", "-out", "ca.pem"];
        openssl(&[&["req", "-x509"], &ec[..], &authority[..]].concat());
        openssl(&[&["req"], &ec[..], &["-subj", "/CN=sesame test", "-keyout", "key.pem", "-out", "leaf.csr"]].concat());
        let extensions = format!("subjectAltName={}\nbasicConstraints=critical,CA:FALSE\n", names.join(","));
        std::fs::write(dir.path().join("leaf.ext"), extensions).expect("write the extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ]);
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect("read PEM");
        TestCertificate { authority: read("ca.pem"), chain: read("cert.pem"), key: read("key.pem") }
    }
}

/// Pebble, Let's Encrypt's test ACME server (Debian package `pebble`,
/// installed by `scripts/test`), on free ports with a certificate of its
/// own, validating challenges at `http_port` / `tls_port` of the addresses
/// `dns` gives; stopped when dropped. Orders are validated at once (no
/// random sleep), and good nonces are never refused.
pub struct Pebble {
    /// The ACME directory URL.
    pub directory: String,
    /// Its management API (`/roots/0` is the root its certificates chain to).
    pub management: String,
    /// The authority of its own HTTPS certificate, as a file (PEM), for
    /// clients of the directory to trust.
    pub authority_file: PathBuf,
    /// The same, as text.
    pub authority: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Pebble {
    /// Starts one, failing loudly when the program is missing.
    pub fn start(http_port: u16, tls_port: u16, dns: std::net::SocketAddr) -> Pebble {
        let program = std::env::var("SESAME_TEST_PEBBLE").unwrap_or_else(|_| "pebble".into());
        let dir = tempfile::tempdir().expect("temp dir");
        let own = TestCertificate::new(&["DNS:localhost", "IP:127.0.0.1"]);
        let at = |name: &str| dir.path().join(name);
        for (name, text) in [("ca.pem", &own.authority), ("cert.pem", &own.chain), ("key.pem", &own.key)] {
            std::fs::write(at(name), text).expect("write Pebble's certificate");
        }
        let (child, listen, management) = on_two_free_ports(&program, |listen, management| {
            let config = format!(
                r#"{{"pebble": {{"listenAddress": "127.0.0.1:{listen}", "managementListenAddress": "127.0.0.1:{management}",
                "certificate": "{}", "privateKey": "{}", "httpPort": {http_port}, "tlsPort": {tls_port},
                "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#,
                at("cert.pem").display(),
                at("key.pem").display(),
            );
            std::fs::write(at("pebble.json"), config).expect("write Pebble's config");
            let mut command = Command::new(&program);
            command
                .arg("-config")
                .arg(at("pebble.json"))
                .args(["-dnsserver", &dns.to_string()])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0");
            command
        });
        Pebble {
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: format!("https://127.0.0.1:{management}"),
            authority_file: at("ca.pem"),
            authority: own.authority,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
