//! The HTTP server every role listens with: hyper's HTTP/1.1 connections
//! with the limits a server facing the public internet needs.
//!
//! - **A cap on connections** (below the process's open-file limit, so that
//!   storage reads always find a descriptor). At the cap, the connection that
//!   has been quiet longest without a request in flight is closed to make
//!   room, as nginx reuses idle keep-alive connections; when every connection
//!   is busy, a newcomer waits a moment for a slot and is then answered 503.
//! - **A header timeout**: a request head must arrive whole within it once
//!   its first byte has (a client dribbling header lines is cut off).
//! - **An idle timeout**: a connection on which no byte moved for this long,
//!   with no request in flight, is closed (keep-alive clients that never
//!   close, stalled readers).
//! - **A bounded shutdown**: on the shutdown signal no new connection is
//!   accepted, connections without a request in flight close at once
//!   (including ones still sending a head), requests in flight get until the
//!   shutdown timeout to finish, then everything is dropped.
//! - **RFC 9112 section 3.2**: an HTTP/1.1 request without exactly one `Host`
//!   is answered 400; an absolute-form target's authority replaces `Host`.
//!
//! The protocol itself is hyper's; this module only keeps time and counts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{HeaderValue, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceExt;

/// Connection limits (`[serve]` in `sesame.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest time from the first byte of a request head to its end.
    pub header_timeout: Duration,
    /// Longest time a connection stays open with no byte moving and no
    /// request in flight.
    pub idle_timeout: Duration,
    /// Longest time requests in flight get to finish at shutdown.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Descriptors kept free of connections: storage reads, the database, logs.
const RESERVED_FDS: u64 = 256;

/// Raises the process's soft open-file limit to its hard limit (where the OS
/// allows) and returns the soft limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if let Some(hard) = limit.maximum
            && limit.current.is_some_and(|soft| soft < hard)
        {
            limit.current = Some(hard);
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                tracing::debug!(error = %e, "cannot raise the open-file limit");
            }
        }
        getrlimit(Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Open file descriptors of this process and its limit, for `/metrics`
/// (Linux only: read from `/proc`).
pub fn fd_usage() -> Option<(u64, u64)> {
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    #[cfg(unix)]
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    #[cfg(not(unix))]
    let limit = u64::MAX;
    Some((open, limit))
}

impl Limits {
    /// The limits with the connection cap lowered to fit `fd_limit` (leaving
    /// descriptors for storage reads and the database).
    pub fn within_fds(mut self, fd_limit: Option<u64>) -> Limits {
        if let Some(limit) = fd_limit {
            let room = limit.saturating_sub(RESERVED_FDS).max(16);
            self.max_connections = self.max_connections.min(usize::try_from(room).unwrap_or(usize::MAX));
        }
        self
    }
}

/// Milliseconds since the server started (monotonic).
fn elapsed_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// What the watchdog of a connection knows of it.
struct Activity {
    /// The server's clock origin.
    start: Instant,
    /// When a byte last moved either way.
    last_io: AtomicU64,
    /// When the first byte of a request head arrived (0: none pending).
    head_since: AtomicU64,
    /// Requests handed to the application whose response is not ready yet.
    in_flight: AtomicUsize,
}

impl Activity {
    fn new(start: Instant) -> Activity {
        Activity {
            start,
            last_io: AtomicU64::new(elapsed_ms(start)),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        elapsed_ms(self.start).max(1)
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        // Bytes while no request is in flight begin a request head.
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let _ = self.head_since.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    /// Why the connection must close now, or when to look again.
    fn verdict(&self, limits: &Limits) -> Result<Duration, &'static str> {
        let now = self.now();
        let mut next = u64::MAX;
        let head = self.head_since.load(Ordering::Relaxed);
        if head != 0 {
            let deadline = head + limits.header_timeout.as_millis() as u64;
            if now >= deadline {
                return Err("header_timeout");
            }
            next = next.min(deadline);
        }
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let deadline = self.last_io.load(Ordering::Relaxed) + limits.idle_timeout.as_millis() as u64;
            if now >= deadline {
                return Err("idle");
            }
            next = next.min(deadline);
        } else {
            next = next.min(now + limits.idle_timeout.as_millis() as u64);
        }
        Ok(Duration::from_millis(next.saturating_sub(now).max(1)))
    }
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.head_since.store(0, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.wrote();
    }
}

/// A socket that reports the bytes it moves to its connection's watchdog.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An open connection as the registry sees it: its activity and how to close it.
type Open = (Arc<Activity>, Arc<Notify>);

/// The open connections, for eviction at the cap.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
}

impl Registry {
    fn add(&self, activity: Arc<Activity>, close: Arc<Notify>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (activity, close));
        metrics::gauge!("sesame_http_connections_open").increment(1.0);
        id
    }

    fn remove(&self, id: u64) {
        if self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id).is_some() {
            metrics::gauge!("sesame_http_connections_open").decrement(1.0);
        }
    }

    /// Closes the connection quiet for longest with no request in flight;
    /// whether there was one.
    fn evict_idlest(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let idlest = open
            .values()
            .filter(|(a, _)| a.in_flight.load(Ordering::Relaxed) == 0)
            .min_by_key(|(a, _)| a.last_io.load(Ordering::Relaxed));
        match idlest {
            Some((_, close)) => {
                close.notify_one();
                true
            }
            None => false,
        }
    }
}

fn closed(reason: &'static str) {
    metrics::counter!("sesame_http_connections_closed_total", "reason" => reason).increment(1);
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves,
/// then drains within the shutdown timeout.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let start = Instant::now();
    let registry = Arc::new(Registry::default());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was
                    // accepted: neither ends the server.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                registry.evict_idlest();
                match tokio::time::timeout(Duration::from_secs(1), slots.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        metrics::counter!("sesame_http_connections_refused_total").increment(1);
                        tasks.spawn(refuse(stream));
                        continue;
                    }
                }
            }
        };
        metrics::counter!("sesame_http_connections_total").increment(1);
        let (app, registry, stopping) = (app.clone(), registry.clone(), stopping.clone());
        tasks.spawn(async move {
            let activity = Arc::new(Activity::new(start));
            let close = Arc::new(Notify::new());
            let id = registry.add(activity.clone(), close.clone());
            connection(stream, peer, app, activity, close, limits, stopping).await;
            registry.remove(id);
            drop(permit);
        });
    }
    drop(listener);
    stop.send(true).ok();
    let drained =
        tokio::time::timeout(limits.shutdown_timeout, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(connections = tasks.len(), "shutdown timeout: closing connections still open");
        tasks.abort_all();
    }
    Ok(())
}

/// Answers a connection the server has no room for.
async fn refuse(mut stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\n\r\nServer busy\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
}

/// One connection, from accept to close.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    activity: Arc<Activity>,
    close: Arc<Notify>,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) {
    // Pages are written in one go; Nagle's algorithm would only delay them.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let io = TokioIo::new(Tracked { inner: stream, activity: activity.clone() });
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |request: Request<hyper::body::Incoming>| {
            let in_flight = InFlight::begin(&activity);
            let app = app.clone();
            async move {
                let response = handle(app, peer, request).await;
                drop(in_flight);
                Ok::<_, Infallible>(response)
            }
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true).max_buf_size(64 * 1024);
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = *stopping.borrow();
    if draining {
        return;
    }
    loop {
        let wait = match activity.verdict(&limits) {
            Ok(wait) => wait,
            Err(reason) => {
                closed(reason);
                return;
            }
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = close.notified() => {
                closed("evicted");
                return;
            }
            changed = stopping.changed(), if !draining => {
                // Nothing in flight (idle, or a head still arriving): close now.
                if activity.in_flight.load(Ordering::Relaxed) == 0 {
                    closed("shutdown");
                    return;
                }
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
                draining = true;
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Checks the request's `Host` (RFC 9112, section 3.2) and hands it to `app`.
async fn handle(app: axum::Router, peer: SocketAddr, request: Request<hyper::body::Incoming>) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    if let Some(authority) = parts.uri.authority() {
        // An absolute-form target names the host; a `Host` field is ignored.
        match HeaderValue::from_str(authority.as_str()) {
            Ok(host) => {
                parts.headers.insert(HOST, host);
            }
            Err(_) => return bad_request(),
        }
    }
    let hosts = parts.headers.get_all(HOST).iter().count();
    if hosts > 1 || (hosts == 0 && parts.version == Version::HTTP_11) {
        return bad_request();
    }
    parts.extensions.insert(ConnectInfo(peer));
    let request = Request::from_parts(parts, Body::new(body));
    match app.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

fn bad_request() -> Response<Body> {
    let mut r = Response::new(Body::from("Bad Request\n"));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_storage() {
        let limits = Limits { max_connections: 4096, ..Limits::default() };
        assert_eq!(limits.within_fds(Some(1024)).max_connections, 768);
        assert_eq!(limits.within_fds(Some(100_000)).max_connections, 4096);
        assert_eq!(limits.within_fds(None).max_connections, 4096);
        assert_eq!(limits.within_fds(Some(10)).max_connections, 16);
    }

    #[test]
    fn a_started_head_must_finish_in_time_and_quiet_connections_close() {
        let limits = Limits {
            header_timeout: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let activity = Arc::new(Activity::new(Instant::now() - Duration::from_secs(1)));
        assert!(activity.verdict(&limits).is_ok(), "fresh");
        activity.read();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(activity.verdict(&limits), Err("header_timeout"));
        let busy = InFlight::begin(&activity);
        assert!(activity.verdict(&limits).is_ok(), "a request in flight has its head");
        std::thread::sleep(Duration::from_millis(250));
        assert!(activity.verdict(&limits).is_ok(), "never idle while a request is in flight");
        drop(busy);
        assert!(activity.verdict(&limits).is_ok(), "the response just went out");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(activity.verdict(&limits), Err("idle"));
    }
}
