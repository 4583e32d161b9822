//! The HTTP server every role listens with: hyper's HTTP/1.1 connections
//! with the limits a server facing the public internet needs.
//!
//! - **A cap on connections** (below the process's open-file limit, so that
//!   storage reads always find a descriptor), kept without ever closing a
//!   connection a client may be writing a request on at that moment (the
//!   keep-alive race of RFC 9112 section 9.6: the request would be lost,
//!   and a link checker reports the page as unreachable). The server says
//!   when it closes instead of surprising clients: every response announces
//!   `Keep-Alive: timeout=N`, and above three quarters of the cap responses
//!   carry `Connection: close`, so clients stop pooling and connections turn
//!   over by themselves. At the cap, a newcomer takes the place of a slow
//!   head if there is one, and otherwise waits for a slot, in a waiting
//!   room of its own and past it in the kernel's listen queue, without
//!   stopping the accept loop; when none comes free within the idle
//!   timeout, it is answered 503 with a lingering close.
//! - **A header timeout**: a request head must arrive whole within it once
//!   its first byte has (a client dribbling header lines is cut off; the
//!   first byte wakes the connection's watchdog to keep that time).
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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::{CONNECTION, CONTENT_TYPE, HOST};
use axum::http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceExt;

/// `Keep-Alive` (RFC 7230 appendix A.1.2; the `timeout` parameter clients honour).
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

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
    /// How long a client may keep an answered connection for its next
    /// request, announced as `Keep-Alive: timeout=N` (whole seconds), so
    /// that clients drop it before the idle timeout closes it.
    pub keep_alive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(5),
        }
    }
}

/// Descriptors kept free of connections: storage reads, the database, logs,
/// and the newcomers waiting for a slot or being refused ([`WAITING_ROOM`]).
const RESERVED_FDS: u64 = 256;

/// Connections accepted that may wait for a slot at once; the others wait in
/// the kernel's listen queue, which costs no descriptor.
const WAITING_ROOM: usize = 64;

/// A request head still arriving after this long is a slow client's.
const SLOW_HEAD_MS: u64 = 50;

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
    /// Open connections above which responses carry `Connection: close`:
    /// three quarters of the cap.
    fn high_water(&self) -> usize {
        self.max_connections - self.max_connections / 4
    }

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
    /// Woken when a request head begins, so that the watchdog times it.
    head_started: Notify,
    /// Chosen to close for a newcomer.
    evicted: AtomicBool,
}

impl Activity {
    fn new(start: Instant) -> Activity {
        Activity {
            start,
            last_io: AtomicU64::new(elapsed_ms(start)),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            head_started: Notify::new(),
            evicted: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        elapsed_ms(self.start).max(1)
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        // Bytes while no request is in flight begin a request head; the
        // watchdog sleeps towards the idle deadline until told.
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.head_started.notify_one();
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

/// The open connections, for eviction at the cap and the high-water mark.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    /// `open.len()`, read on every response without taking the lock.
    count: AtomicUsize,
    open: Mutex<HashMap<u64, Open>>,
}

impl Registry {
    fn add(&self, activity: Arc<Activity>, close: Arc<Notify>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (activity, close));
        self.count.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("sesame_http_connections_open").increment(1.0);
        id
    }

    fn remove(&self, id: u64) {
        if self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!("sesame_http_connections_open").decrement(1.0);
        }
    }

    fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Closes the connection whose request head has been arriving longest,
    /// for a newcomer, if it began at least [`SLOW_HEAD_MS`] ago (a
    /// client's head normally arrives in one segment); whether there was one.
    ///
    /// Nothing else is closed early: a quiet connection may be one its
    /// client is about to write a request on, which closing would lose (the
    /// keep-alive race of RFC 9112 section 9.6). Those leave by themselves:
    /// clients drop a kept connection after the announced `keep_alive`,
    /// above the high-water mark every response closes its connection, and
    /// the idle timeout bounds the rest (a client that connects and says
    /// nothing among them).
    fn evict_slow_head(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let slowest = open
            .values()
            .filter(|(a, _)| !a.evicted.load(Ordering::Relaxed) && a.in_flight.load(Ordering::Relaxed) == 0)
            .filter_map(|(a, close)| {
                let head = a.head_since.load(Ordering::Relaxed);
                (head != 0 && a.now().saturating_sub(head) >= SLOW_HEAD_MS).then_some((head, a, close))
            })
            .min_by_key(|(head, _, _)| *head);
        match slowest {
            Some((_, activity, close)) => {
                activity.evicted.store(true, Ordering::Relaxed);
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

/// Listens on `addr` with a listen queue as long as the system allows
/// (`net.core.somaxconn`): at the cap, newcomers wait there without a
/// descriptor, and a full queue drops connection attempts (clients see
/// connect timeouts). The standard library's queue holds 128.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_QUEUE)
}

/// The listen queue asked for (the kernel caps it at `net.core.somaxconn`).
const LISTEN_QUEUE: u32 = 4096;

/// Serves `app` on `listener` within `limits` until `shutdown` resolves,
/// then drains within the shutdown timeout.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, app, limits, None, shutdown).await
}

/// Finds the TLS settings that answer ACME's TLS-ALPN-01 validation of a
/// name (a client offering the `acme-tls/1` protocol): the challenge
/// certificate an order waits on, if there is one.
pub type AlpnChallenges =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Option<Arc<rustls::ServerConfig>>> + Send>> + Send + Sync>;

/// Waits, a bounded time, for the certificate of a name being issued (a
/// custom domain just verified) before the handshake goes on.
pub type CertificateWait = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// HTTPS settings.
#[derive(Clone)]
pub struct Tls {
    /// For every client but ACME's TLS-ALPN-01 validations.
    pub config: Arc<rustls::ServerConfig>,
    /// For those, when this server answers them.
    pub challenges: Option<AlpnChallenges>,
    /// For the first clients of a domain whose certificate is being issued.
    pub wait: Option<CertificateWait>,
}

/// [`serve`], speaking TLS with `tls` when given (HTTPS): the handshake must
/// end within the header timeout, and a refused one closes the connection.
pub async fn serve_with(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let start = Instant::now();
    let registry = Arc::new(Registry::default());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let waiting_room = Arc::new(Semaphore::new(WAITING_ROOM));
    let keep_alive = HeaderValue::try_from(format!("timeout={}", limits.keep_alive.as_secs().max(1)))
        .unwrap_or(HeaderValue::from_static("timeout=5"));
    let (stop, stopping) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // A place in the waiting room before a connection is taken off the
        // listen queue: at the cap, newcomers wait there for a slot in a task
        // of their own, and past the room in the kernel's queue, so the loop
        // never stalls on one of them.
        let next = async {
            let place = waiting_room.clone().acquire_owned().await;
            (place, listener.accept().await)
        };
        let (place, stream, peer) = tokio::select! {
            (place, accepted) = next => match (place, accepted) {
                (Ok(place), Ok((stream, peer))) => (place, stream, peer),
                (_, Err(e)) => {
                    // Out of descriptors, or a connection reset before it
                    // was accepted: neither ends the server.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                (Err(_), _) => break, // the room is never closed
            },
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let (app, registry, slots, stopping, keep_alive, tls) =
            (app.clone(), registry.clone(), slots.clone(), stopping.clone(), keep_alive.clone(), tls.clone());
        tasks.spawn(async move {
            let permit = match slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => match make_room(&registry, &slots, &limits).await {
                    Some(permit) => permit,
                    None => {
                        metrics::counter!("sesame_http_connections_refused_total").increment(1);
                        // Over TLS a plain answer would be noise: just close.
                        return if tls.is_none() { refuse(stream).await } else { drop(stream) };
                    }
                },
            };
            drop(place);
            metrics::counter!("sesame_http_connections_total").increment(1);
            let activity = Arc::new(Activity::new(start));
            let close = Arc::new(Notify::new());
            let id = registry.add(activity.clone(), close.clone());
            let conn = Conn { activity, close, registry: registry.clone(), limits, keep_alive, secure: false };
            connection(stream, peer, app, conn, stopping, tls).await;
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

/// A slot for a newcomer at the cap, or `None` when none came free within
/// the idle timeout: by then every connection holding one has sent a
/// request or been closed as idle, so the server is busy and the newcomer
/// is answered 503.
///
/// Connections answered `Connection: close` free their slots by themselves,
/// usually within milliseconds. A client that opens more connections than
/// it writes requests on (linkinator 7 fetches every link of a page at once,
/// each on a connection of its own, and its event loop lags by seconds) is
/// thus answered on every one, a little later, instead of having a
/// connection closed under the request it was about to write.
async fn make_room(
    registry: &Registry,
    slots: &Arc<Semaphore>,
    limits: &Limits,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let deadline = Instant::now() + limits.idle_timeout;
    loop {
        registry.evict_slow_head();
        let wait = tokio::time::timeout(Duration::from_millis(250), slots.clone().acquire_owned());
        if let Ok(Ok(permit)) = wait.await {
            return Some(permit);
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// Answers a connection the server has no room for: 503, then a lingering
/// close. Closing a socket with the client's request still unread would
/// reset it, and a reset can destroy the answer before the client reads it;
/// so the server stops writing and reads what comes for a moment first (as
/// nginx's `lingering_close`). The caller's place in the waiting room
/// bounds how many do so at once.
async fn refuse(mut stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\n\r\nServer busy\n";
    let linger = async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
}

/// What a connection's task holds besides its socket.
struct Conn {
    activity: Arc<Activity>,
    /// Notified to close the connection for a newcomer.
    close: Arc<Notify>,
    registry: Arc<Registry>,
    limits: Limits,
    /// `timeout=N` of `Keep-Alive`, made once per server.
    keep_alive: HeaderValue,
    /// Whether it speaks TLS (its requests carry [`OverTls`]).
    secure: bool,
}

/// Marks a request that came over TLS (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

impl Conn {
    /// Tells the client how long it may keep the connection, or that it may
    /// not, when the server is above its high-water mark.
    fn announce(&self, response: &mut Response<Body>) {
        let headers = response.headers_mut();
        if self.registry.len() > self.limits.high_water() {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        } else if !headers.contains_key(CONNECTION) {
            headers.insert(KEEP_ALIVE, self.keep_alive.clone());
        }
    }
}

/// One connection, from accept to close.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    conn: Conn,
    stopping: watch::Receiver<bool>,
    tls: Option<Tls>,
) {
    // Pages are written in one go; Nagle's algorithm would only delay them.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let tracked = Tracked { inner: stream, activity: conn.activity.clone() };
    let Some(tls) = tls else {
        return exchange(TokioIo::new(tracked), peer, app, conn, stopping).await;
    };
    match tokio::time::timeout(conn.limits.header_timeout, handshake(tracked, &tls)).await {
        // A TLS-ALPN-01 validation ends with the handshake.
        Ok(Ok(secure)) if secure.get_ref().1.alpn_protocol() == Some(ACME_TLS) => closed("acme_tls_alpn"),
        Ok(Ok(secure)) => exchange(TokioIo::new(secure), peer, app, Conn { secure: true, ..conn }, stopping).await,
        // A name with no certificate, a client that speaks no TLS: nothing to answer.
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake refused");
            closed("tls_handshake");
        }
        Err(_) => closed("header_timeout"),
    }
}

/// The ALPN protocol of ACME's TLS-ALPN-01 validations (RFC 8737).
const ACME_TLS: &[u8] = b"acme-tls/1";

/// The TLS handshake: with the settings for the name asked for when the
/// client is an ACME validation, with `tls.config` otherwise.
async fn handshake<S>(stream: S, tls: &Tls) -> io::Result<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    let hello = start.client_hello();
    let validation = hello.alpn().is_some_and(|mut offered| offered.any(|p| p == ACME_TLS));
    let name = hello.server_name().map(|n| n.trim_end_matches('.').to_ascii_lowercase());
    let config = match (&tls.challenges, validation, name) {
        (Some(challenges), true, Some(name)) => challenges(name)
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no TLS-ALPN-01 challenge for that name"))?,
        (_, _, name) => {
            if let (Some(wait), Some(name)) = (&tls.wait, name) {
                wait(name).await;
            }
            tls.config.clone()
        }
    };
    start.into_stream(config).await
}

/// Requests and responses on a connection, until it closes.
async fn exchange<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    app: axum::Router,
    conn: Conn,
    mut stopping: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let activity = conn.activity.clone();
    let service = hyper::service::service_fn({
        let conn = conn.clone();
        move |request: Request<hyper::body::Incoming>| {
            let in_flight = InFlight::begin(&conn.activity);
            let (app, conn) = (app.clone(), conn.clone());
            async move {
                let mut response = handle(app, peer, request, conn.secure).await;
                conn.announce(&mut response);
                drop(in_flight);
                Ok::<_, Infallible>(response)
            }
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true).max_buf_size(64 * 1024);
    let http = http.serve_connection(io, service);
    tokio::pin!(http);
    let mut draining = *stopping.borrow();
    if draining {
        return;
    }
    loop {
        let wait = match activity.verdict(&conn.limits) {
            Ok(wait) => wait,
            Err(reason) => {
                closed(reason);
                return;
            }
        };
        tokio::select! {
            result = http.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = conn.close.notified() => {
                closed("evicted");
                return;
            }
            // The deadline changes: look again.
            () = activity.head_started.notified() => {}
            changed = stopping.changed(), if !draining => {
                // Nothing in flight (idle, or a head still arriving): close now.
                if activity.in_flight.load(Ordering::Relaxed) == 0 {
                    closed("shutdown");
                    return;
                }
                if changed.is_ok() {
                    http.as_mut().graceful_shutdown();
                }
                draining = true;
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Checks the request's `Host` (RFC 9112, section 3.2) and hands it to `app`.
async fn handle(
    app: axum::Router,
    peer: SocketAddr,
    request: Request<hyper::body::Incoming>,
    secure: bool,
) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    if secure {
        parts.extensions.insert(OverTls);
    }
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
