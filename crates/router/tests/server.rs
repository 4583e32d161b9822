//! The HTTP server's limits, in process: `server::serve` on a port-0
//! listener with a trivial application, driven by raw sockets so that each
//! test controls exactly which bytes arrive when.

use std::time::{Duration, Instant};

use axum::routing::get;
use sesame_router::server::{self, Limits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running server; stops when dropped.
struct Served {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(limits: Limits) -> Served {
    let listener = server::listen("127.0.0.1:0".parse().expect("address")).expect("listen");
    let addr = listener.local_addr().expect("address");
    let app = axum::Router::new().route("/", get(|| async { "hello\n" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "slow\n"
        }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, app, limits, async {
        let _ = stopped.await;
    }));
    Served { addr, stop: Some(stop) }
}

/// One response read off `stream`: status and header fields (lowercase
/// names), its body skipped by `Content-Length`.
async fn response(stream: &mut TcpStream) -> Option<(u16, Vec<(String, String)>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut fields);
        if let httparse::Status::Complete(head) = parsed.parse(&buf).ok()? {
            let headers: Vec<(String, String)> = parsed
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            let length: usize = field(&headers, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let status = parsed.code?;
            while buf.len() < head + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some((status, headers));
        }
    }
}

fn field<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// A connection with one request answered on it.
async fn answered(addr: std::net::SocketAddr) -> (TcpStream, Vec<(String, String)>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.expect("write");
    let (status, headers) = response(&mut stream).await.expect("an answer");
    assert_eq!(status, 200);
    (stream, headers)
}

/// Waits until the server closes `stream`, reading and discarding; how long
/// that took, or `None` if it stayed open for `limit`.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Regression: the watchdog slept towards the idle deadline (60 s) chosen
/// before the first byte, so a client dribbling header lines every 2 s kept
/// its connection until then with `header_timeout = 10 s`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_trickling_headers_are_closed_at_the_header_timeout() {
    let served = serve(Limits { header_timeout: Duration::from_secs(10), ..Limits::default() }).await;
    let addr = served.addr;
    let lorises: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async move {
                let (mut reader, mut writer) = TcpStream::connect(addr).await.expect("connect").into_split();
                let started = Instant::now();
                writer.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n").await.expect("write");
                let trickle = tokio::spawn(async move {
                    for line in 0.. {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        if writer.write_all(format!("X-Slow-{line}: 1\r\n").as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
                // The close, seen the moment it happens.
                closed_within(&mut reader, Duration::from_secs(30)).await.expect("closed");
                trickle.abort();
                started.elapsed()
            })
        })
        .collect();
    for loris in lorises {
        let took = loris.await.expect("loris");
        assert!(
            (Duration::from_secs(9)..=Duration::from_secs(11)).contains(&took),
            "a trickling client was closed after {took:?}, not 10 s ± 1"
        );
    }
}

#[tokio::test]
async fn responses_announce_keep_alive_and_close_connections_above_three_quarters_of_the_cap() {
    let served = serve(Limits { max_connections: 8, ..Limits::default() }).await;
    let mut kept = Vec::new();
    for n in 1..=6 {
        let (stream, headers) = answered(served.addr).await;
        assert_eq!(field(&headers, "keep-alive"), Some("timeout=5"), "connection {n}");
        assert_eq!(field(&headers, "connection"), None, "connection {n}");
        kept.push(stream);
    }
    // Seven open: above the high-water mark of six.
    let (mut seventh, headers) = answered(served.addr).await;
    assert_eq!(field(&headers, "connection"), Some("close"));
    assert!(closed_within(&mut seventh, Duration::from_secs(2)).await.is_some(), "the server closes it");
    // Kept connections still answer, and keep-alive returns below the mark
    // (once the seventh's task has ended, a moment after its client saw it).
    let mut kept_alive = false;
    for stream in &mut kept {
        stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.expect("write");
        let (status, headers) = response(stream).await.expect("an answer on a kept connection");
        assert_eq!(status, 200);
        if field(&headers, "keep-alive") == Some("timeout=5") {
            kept_alive = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(kept_alive, "keep-alive again below the high-water mark");
}

/// Regression: at the cap the quietest connection was closed for a
/// newcomer; a client reusing it at that moment lost its request (linkinator
/// reported thousands of links without an answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_newcomer_waits_instead_of_closing_a_kept_connection() {
    let served = serve(Limits { max_connections: 4, ..Limits::default() }).await;
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(answered(served.addr).await.0);
    }
    // The fourth slot: a client that connected and has not written yet.
    let _quiet = TcpStream::connect(served.addr).await.expect("connect");
    // Its task must take the slot before the newcomer's runs: tasks spawned
    // one after the other may start in either order.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = served.addr;
    let newcomer = tokio::spawn(async move { answered(addr).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!newcomer.is_finished(), "the newcomer waits for a slot");
    // Every kept connection still answers; the first closes after its
    // answer (the server being above its high-water mark), and the newcomer
    // takes its slot.
    for (n, stream) in kept.iter_mut().enumerate() {
        stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.expect("write");
        let answer = response(stream).await.expect("a kept connection was closed under its client");
        assert_eq!(answer.0, 200);
        if n == 0 {
            assert_eq!(field(&answer.1, "connection"), Some("close"));
        }
    }
    tokio::time::timeout(Duration::from_secs(2), newcomer).await.expect("the newcomer is answered").expect("task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_a_slow_head_makes_room_for_a_newcomer() {
    let served = serve(Limits { max_connections: 2, ..Limits::default() }).await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(served.addr).await.expect("connect");
        stream.write_all(b"GET / HTTP/1.1\r\nHost: sl").await.expect("write");
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let (_, _) = tokio::time::timeout(Duration::from_secs(2), answered(served.addr)).await.expect("answered");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    let mut closed = 0;
    for stream in &mut slow {
        closed += usize::from(closed_within(stream, Duration::from_millis(200)).await.is_some());
    }
    assert_eq!(closed, 1, "one slow head made room");
}

/// What bounds a newcomer's wait at the cap: when every slot holds a request
/// in flight for longer than the idle timeout, it is answered 503 (with a
/// lingering close, so the answer is read rather than reset), not held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_cap_busy_past_the_idle_timeout_a_newcomer_is_answered_503() {
    let served = serve(Limits { max_connections: 1, idle_timeout: Duration::from_secs(1), ..Limits::default() }).await;
    let mut busy = TcpStream::connect(served.addr).await.expect("connect");
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n").await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut newcomer = TcpStream::connect(served.addr).await.expect("connect");
    newcomer.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.expect("write");
    let (status, headers) = response(&mut newcomer).await.expect("an answer, not a reset");
    let waited = started.elapsed();
    assert_eq!((status, field(&headers, "retry-after")), (503, Some("1")));
    assert!((Duration::from_millis(900)..Duration::from_secs(3)).contains(&waited), "answered after {waited:?}");
    // The slow request was not cut short for it.
    assert_eq!(response(&mut busy).await.map(|r| r.0), Some(200));
}
