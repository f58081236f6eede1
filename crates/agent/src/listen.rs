//! The HTTP/1 listener of `paddock serve` and `paddock agent`, built on hyper directly so
//! that slow or idle clients cannot hold the server:
//!
//! - a request's headers must arrive within `header_read_timeout`, which also bounds how
//!   long a kept-alive connection may sit between requests;
//! - a request body that sends nothing for `connection_idle` is failed (the handler sees a
//!   body error, the client gets a 4xx and the connection is closed), and so is a response
//!   the client stops reading for that long (the write fails and the connection closes).
//!   A handler that is merely working (a long command) is never timed out here;
//! - at most `max_connections` connections are open. At the cap a new connection closes
//!   the oldest connection that has no request in progress (an idle one, or one still
//!   sending its headers); when every connection is busy the new one gets a short 503 and
//!   is closed. When the process runs out of descriptors (other work holds them, or the
//!   limit was lowered), accepting closes the longest-idle connection too. So a flood of
//!   idle connections can never keep a fresh client out.
//!
//! Invariant: every accepted connection is in the registry until its task ends, and a
//! connection counts as busy from the moment its request is dispatched until its response
//! body is finished or dropped.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, Request, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Sleep;
use tower::ServiceExt as _;

/// Default of `server.header_read_timeout_secs`.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 30;
/// Default of `server.connection_idle_secs`.
pub const DEFAULT_CONNECTION_IDLE_SECS: u64 = 60;
/// Default of `server.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
/// How long shutdown waits for requests in progress before it drops their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the listener enforces (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// Time allowed for a request's headers and for a kept-alive connection's next request.
    pub header_read_timeout: Duration,
    /// Time a request body or a response may make no progress while the server waits on
    /// the client.
    pub connection_idle: Duration,
    /// Most open connections.
    pub max_connections: usize,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            connection_idle: Duration::from_secs(DEFAULT_CONNECTION_IDLE_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ListenConfig {
    /// The connection cap in force: the configured one, lowered to half of this process's
    /// open-file limit so connections can never take the descriptors sandboxes and file
    /// operations need.
    pub fn effective_max_connections(&self) -> usize {
        let soft = nofile_soft_limit().unwrap_or(u64::MAX);
        let room = usize::try_from(soft / 2).unwrap_or(usize::MAX).max(1);
        self.max_connections.clamp(1, room)
    }
}

/// This process's soft limit on open files (`None`: unlimited or unknown).
fn nofile_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[derive(Debug)]
struct Conn {
    /// Requests dispatched and not finished.
    busy: usize,
    /// When it last became idle (accepted, or its last response finished).
    idle_since: Instant,
    close: Arc<Notify>,
}

/// The connection without a request in progress that has been idle longest.
fn longest_idle(conns: &HashMap<u64, Conn>) -> Option<u64> {
    conns
        .iter()
        .filter(|(_, c)| c.busy == 0)
        .min_by_key(|(_, c)| c.idle_since)
        .map(|(id, _)| *id)
}

/// The open connections.
#[derive(Debug)]
struct Registry {
    conns: Mutex<HashMap<u64, Conn>>,
    next: AtomicU64,
    /// The cap in force (it follows the open-file limit, see [`serve`]).
    max: AtomicUsize,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Conn>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection, closing the longest-idle ones to get under the cap; `None`
    /// when every connection is busy.
    fn admit(&self) -> Option<(u64, Arc<Notify>)> {
        let mut conns = self.lock();
        let max = self.max.load(Ordering::Relaxed).max(1);
        while conns.len() >= max {
            let victim = longest_idle(&conns)?;
            if let Some(c) = conns.remove(&victim) {
                c.close.notify_one();
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        conns.insert(
            id,
            Conn {
                busy: 0,
                idle_since: Instant::now(),
                close: close.clone(),
            },
        );
        Some((id, close))
    }

    /// Closes the longest-idle connection, if any (to free its descriptor).
    fn evict_idle(&self) -> bool {
        let mut conns = self.lock();
        match longest_idle(&conns).and_then(|v| conns.remove(&v)) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn begin(self: &Arc<Self>, id: u64) -> BusyGuard {
        if let Some(c) = self.lock().get_mut(&id) {
            c.busy += 1;
        }
        BusyGuard {
            reg: self.clone(),
            id,
        }
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Marks its connection busy while it lives.
struct BusyGuard {
    reg: Arc<Registry>,
    id: u64,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if let Some(c) = self.reg.lock().get_mut(&self.id) {
            c.busy = c.busy.saturating_sub(1);
            if c.busy == 0 {
                c.idle_since = Instant::now();
            }
        }
    }
}

/// A response body holding its connection's busy mark.
struct Tracked {
    inner: Body,
    _busy: BusyGuard,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The error a stalled request body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0} s; the connection is closed")]
pub struct BodyStalled(u64);

/// A request body that fails after `limit` without progress.
struct IdleBody {
    inner: hyper::body::Incoming,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    stalled: Arc<AtomicBool>,
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.timer = None;
                Poll::Ready(frame.map(|r| r.map_err(axum::Error::new)))
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    self.stalled.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(axum::Error::new(BodyStalled(limit.as_secs())))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket whose writes fail after `limit` without progress (a client that stopped
/// reading its response).
struct StallIo {
    io: TcpStream,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl StallIo {
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        timer.as_mut().poll(cx).is_ready()
    }

    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        p: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match p {
            Poll::Ready(r) => {
                self.timer = None;
                Poll::Ready(r)
            }
            Poll::Pending if self.stalled(cx) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading its response",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(cx, p)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(cx, p)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(cx, p)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// "Too many open files" for the process (Linux errno).
const EMFILE: i32 = 24;
/// "Too many open files" for the system (Linux errno).
const ENFILE: i32 = 23;

/// What a connection refused at the cap is told before it is closed.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 100\r\n\r\n\
{\"detail\":\"too many open connections (server.max_connections); retry\",\"code\":\"too_many_connections\"}";

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets
/// requests in progress finish for up to [`SHUTDOWN_GRACE`] and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: ListenConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let max = cfg.effective_max_connections();
    if max < cfg.max_connections {
        tracing::info!(
            configured = cfg.max_connections,
            max,
            "server.max_connections lowered to half the open-file limit"
        );
    }
    let reg = Arc::new(Registry {
        conns: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
        max: AtomicUsize::new(max),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut accept_errors = 0u64;
    let mut limit_read = Instant::now();
    loop {
        // The open-file limit can change under a running process (prlimit): follow it.
        if limit_read.elapsed() >= Duration::from_secs(1) {
            limit_read = Instant::now();
            reg.max
                .store(cfg.effective_max_connections(), Ordering::Relaxed);
        }
        let (tcp, _peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!(error = %e, count = accept_errors, "accepting a connection failed");
                    }
                    // Out of descriptors (EMFILE, ENFILE: other work may hold them, or the
                    // limit was lowered under us): an idle connection gives its up, so
                    // idle connections can never keep a new client out. Otherwise back
                    // off; the connection waits in the backlog.
                    let out_of_fds = matches!(e.raw_os_error(), Some(EMFILE | ENFILE));
                    let pause = if out_of_fds && reg.evict_idle() { 1 } else { 20 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    continue;
                }
            },
        };
        // Exec streams are many small writes (chunks, then the exit record); with Nagle's
        // algorithm each later write waits for the peer's delayed ACK (~40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let Some((id, close)) = reg.admit() else {
            // Every connection is busy: say so and close, without waiting on the client.
            let _ = tcp.try_write(BUSY_RESPONSE);
            drop(tcp);
            continue;
        };
        tokio::spawn(connection(
            tcp,
            id,
            close,
            reg.clone(),
            router.clone(),
            cfg.clone(),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while reg.len() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn connection(
    tcp: TcpStream,
    id: u64,
    close: Arc<Notify>,
    reg: Arc<Registry>,
    router: Router,
    cfg: ListenConfig,
    mut stop: watch::Receiver<bool>,
) {
    let idle = cfg.connection_idle;
    let io = TokioIo::new(StallIo {
        io: tcp,
        limit: idle,
        timer: None,
    });
    let svc_reg = reg.clone();
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let router = router.clone();
        let busy = svc_reg.begin(id);
        async move {
            let stalled = Arc::new(AtomicBool::new(false));
            let req = req.map(|b| {
                Body::new(IdleBody {
                    inner: b,
                    limit: idle,
                    timer: None,
                    stalled: stalled.clone(),
                })
            });
            let Ok(mut resp) = router.oneshot(req).await;
            if stalled.load(Ordering::Relaxed) {
                // The rest of the body will not come: do not wait for it to reuse the
                // connection.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp.map(|b| {
                Body::new(Tracked {
                    inner: b,
                    _busy: busy,
                })
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = close.notified() => {
            tracing::debug!("idle connection closed to admit a new one");
        }
        // Shutdown (or the server gone, which is the same).
        () = async { drop(stop.wait_for(|s| *s).await) } => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
        }
    }
    reg.remove(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize) -> Arc<Registry> {
        Arc::new(Registry {
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            max: AtomicUsize::new(max),
        })
    }

    #[test]
    fn the_busy_response_is_well_formed() {
        let text = std::str::from_utf8(BUSY_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "too_many_connections");
    }

    #[test]
    fn the_open_file_limit_is_read() {
        let n = nofile_soft_limit().unwrap();
        assert!(n >= 1);
        let c = ListenConfig {
            max_connections: usize::MAX,
            ..ListenConfig::default()
        };
        assert_eq!(c.effective_max_connections() as u64, (n / 2).max(1));
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let reg = registry(3);
        let (a, a_close) = reg.admit().unwrap();
        let (b, _) = reg.admit().unwrap();
        let (c, _) = reg.admit().unwrap();
        let _busy_a = reg.begin(a);
        let busy_b = reg.begin(b);
        // c is the only idle one: it goes, a and b stay.
        let (d, _) = reg.admit().unwrap();
        assert_eq!(reg.len(), 3);
        assert!(!reg.lock().contains_key(&c));
        // b becomes idle after d did: d is the longest idle now.
        std::thread::sleep(Duration::from_millis(2));
        drop(busy_b);
        reg.admit().unwrap();
        assert!(!reg.lock().contains_key(&d));
        assert!(reg.lock().contains_key(&b));
        // Everyone busy: a new connection is refused, nobody is closed.
        let _busy_b = reg.begin(b);
        let ids: Vec<u64> = reg.lock().keys().copied().collect();
        let _guards: Vec<BusyGuard> = ids.iter().map(|id| reg.begin(*id)).collect();
        assert!(reg.admit().is_none());
        assert_eq!(reg.len(), 3);
        assert!(!reg.evict_idle(), "nothing idle to give up its descriptor");
        drop(_guards);
        assert!(reg.evict_idle());
        assert_eq!(reg.len(), 2);
        let _ = a_close;
    }
}
