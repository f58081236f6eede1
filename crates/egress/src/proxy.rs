//! A sandbox's egress proxy: an HTTP proxy (`CONNECT host:port` for TLS and any TCP
//! protocol, absolute-form requests for plain HTTP) that the sandbox reaches on its own
//! loopback and that connects out on its behalf, only where its [`Policy`] allows.
//!
//! Per connection: the request head is read within a time and size bound; the name is
//! decided before any DNS query; the name is resolved by Paddock (never by the sandbox);
//! every address is decided again right before the connect, and only an allowed one is
//! connected to (so DNS answers that change between lookups cannot smuggle a blocked
//! address in). A denial is answered at once (`403` with the rule that decided), logged,
//! counted and remembered for the API. Connections per sandbox are capped and the bytes
//! they move are rate-limited per sandbox.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::policy::{Policy, Verdict};

/// Resolves names for the egress path (Paddock's resolver, never the sandbox's).
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `name`.
    fn resolve<'a>(
        &'a self,
        name: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;
}

/// The host's resolver (`getaddrinfo` through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((name, port))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// Bounds of the egress path.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections of one sandbox.
    pub max_connections: usize,
    /// Bytes per second one sandbox's connections move together (both directions); `None`:
    /// no limit.
    pub bytes_per_sec: Option<u64>,
    /// The request head must arrive within this.
    pub head_timeout: Duration,
    /// Largest request head.
    pub max_head_bytes: usize,
    /// A name must resolve within this.
    pub resolve_timeout: Duration,
    /// A connect must succeed within this.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            bytes_per_sec: None,
            head_timeout: Duration::from_secs(10),
            max_head_bytes: 16 * 1024,
            resolve_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// One denied connection, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Denial {
    /// Seconds since the epoch.
    pub at: u64,
    /// The name asked for (or the address, when one was given).
    pub name: String,
    /// The address decided on, when the name resolved.
    pub addr: Option<IpAddr>,
    /// The port.
    pub port: u16,
    /// `deny not_listed`, `deny blocked=loopback`, …
    pub reason: String,
}

/// Denials kept per sandbox for the API.
pub const RECENT_DENIALS: usize = 32;

/// One sandbox's egress: its policy (replaceable while it runs), counters and bounds.
#[derive(Debug)]
pub struct SandboxEgress {
    id: String,
    policy: RwLock<Arc<Policy>>,
    this_host: Vec<IpAddr>,
    limits: Limits,
    conns: Arc<Semaphore>,
    bucket: Option<Mutex<Bucket>>,
    interceptor: Option<Arc<crate::inject::Interceptor>>,
    allowed: AtomicU64,
    denied: AtomicU64,
    bytes: AtomicU64,
    recent: Mutex<VecDeque<Denial>>,
}

/// Counters of one sandbox's egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Connections allowed.
    pub allowed: u64,
    /// Connections denied.
    pub denied: u64,
    /// Bytes moved (both directions).
    pub bytes: u64,
    /// Connections open now.
    pub open: u64,
}

impl SandboxEgress {
    /// The egress of sandbox `id` under `policy`; `this_host` are the host's own addresses.
    pub fn new(
        id: impl Into<String>,
        policy: Policy,
        this_host: Vec<IpAddr>,
        limits: Limits,
    ) -> Self {
        Self {
            id: id.into(),
            policy: RwLock::new(Arc::new(policy)),
            this_host,
            conns: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            bucket: limits
                .bytes_per_sec
                .map(|r| Mutex::new(Bucket::new(r as f64))),
            limits,
            interceptor: None,
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Adds credential injection: destinations it has headers for are intercepted (see
    /// [`crate::inject`]); all others stay plain tunnels.
    pub fn with_interceptor(mut self, i: Arc<crate::inject::Interceptor>) -> Self {
        self.interceptor = Some(i);
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the policy: connections made from now on follow it; open ones go on.
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    /// The counters.
    pub fn counts(&self) -> Counts {
        Counts {
            allowed: self.allowed.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            open: (self.limits.max_connections.max(1) - self.conns.available_permits()) as u64,
        }
    }

    /// The most recent denials, oldest first.
    pub fn recent_denials(&self) -> Vec<Denial> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn record(&self, name: &str, addr: Option<IpAddr>, port: u16, v: &Verdict) {
        let text = v.describe();
        if v.allowed {
            self.allowed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "paddock::egress", sandbox = %self.id, name, addr = ?addr, port, verdict = %text, "egress");
            return;
        }
        self.denied.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "paddock::egress", sandbox = %self.id, name, addr = ?addr, port, verdict = %text, "egress");
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == RECENT_DENIALS {
            r.pop_front();
        }
        r.push_back(Denial {
            at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            name: name.to_owned(),
            addr,
            port,
            reason: text,
        });
    }

    async fn pace(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let wait = match &self.bucket {
            Some(b) => b.lock().unwrap_or_else(|p| p.into_inner()).take(n),
            None => Duration::ZERO,
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A token bucket with one second of burst.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        Self {
            rate: rate.max(1.0),
            tokens: rate.max(1.0),
            last: Instant::now(),
        }
    }

    fn take(&mut self, n: usize) -> Duration {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Serves a sandbox's egress on `listener` until the listener fails or the task is dropped.
pub async fn serve(listener: TcpListener, egress: Arc<SandboxEgress>, resolver: Arc<dyn Resolve>) {
    loop {
        let (conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(target: "paddock::egress", sandbox = %egress.id, error = %e, "egress listener failed");
                return;
            }
        };
        let _ = conn.set_nodelay(true);
        let egress = egress.clone();
        let resolver = resolver.clone();
        tokio::spawn(async move {
            handle(conn, egress, resolver).await;
        });
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc_codes::EMFILE
                | libc_codes::ENFILE
                | libc_codes::ENOBUFS
                | libc_codes::ENOMEM
                | libc_codes::ECONNABORTED
        )
    )
}

mod libc_codes {
    pub const EMFILE: i32 = 24;
    pub const ENFILE: i32 = 23;
    pub const ENOBUFS: i32 = 105;
    pub const ENOMEM: i32 = 12;
    pub const ECONNABORTED: i32 = 103;
}

/// The request the sandbox made of its proxy.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    /// `CONNECT host:port`.
    Tunnel { host: String, port: u16 },
    /// An absolute-form plain HTTP request, rewritten to origin form.
    Http {
        host: String,
        port: u16,
        head: Vec<u8>,
    },
}

/// A refusal, as the sandbox's client sees it.
#[derive(Debug)]
struct Refusal {
    status: &'static str,
    text: String,
}

fn refuse(status: &'static str, text: impl Into<String>) -> Refusal {
    Refusal {
        status,
        text: text.into(),
    }
}

/// Splits `host:port` (with `[v6]:port`), with `default` when no port is given.
fn authority(a: &str, default: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return None,
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return None,
            None => (a, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0)?,
        None => default?,
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port))
}

/// Parses a complete request head (up to and including the blank line).
fn parse_head(head: &[u8]) -> Result<Ask, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Err(refuse(
                "400 Bad Request",
                "the request head could not be read",
            ));
        }
    }
    let method = req.method.unwrap_or_default();
    let target = req.path.unwrap_or_default();
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = authority(target, None)
            .ok_or_else(|| refuse("400 Bad Request", "CONNECT needs host:port"))?;
        return Ok(Ask::Tunnel { host, port });
    }
    let Some(rest) = target.strip_prefix("http://") else {
        return Err(refuse(
            "400 Bad Request",
            "the proxy takes CONNECT, or plain HTTP requests in absolute form (http://host/path); https goes through CONNECT",
        ));
    };
    let (auth, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    let auth = auth.rsplit_once('@').map_or(auth, |(_, a)| a);
    let (host, port) = authority(auth, Some(80))
        .ok_or_else(|| refuse("400 Bad Request", "the request's URL has no valid host"))?;
    // Origin form, without the hop-by-hop proxy headers, one request per connection.
    let mut out = Vec::with_capacity(head.len());
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\n").as_bytes());
    let mut has_host = false;
    for h in req.headers.iter() {
        let n = h.name;
        if n.eq_ignore_ascii_case("proxy-connection")
            || n.eq_ignore_ascii_case("proxy-authorization")
            || n.eq_ignore_ascii_case("connection")
            || n.eq_ignore_ascii_case("keep-alive")
        {
            continue;
        }
        has_host |= n.eq_ignore_ascii_case("host");
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_host {
        out.extend_from_slice(format!("Host: {auth}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Ask::Http {
        host,
        port,
        head: out,
    })
}

async fn read_head<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = r
            .read(&mut chunk)
            .await
            .map_err(|_| refuse("400 Bad Request", "the connection failed"))?;
        if n == 0 {
            return Err(refuse(
                "400 Bad Request",
                "the connection closed before a request",
            ));
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + i + 4;
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > max {
            return Err(refuse(
                "431 Request Header Fields Too Large",
                format!("the request head is over {max} bytes"),
            ));
        }
    }
}

async fn answer(conn: &mut TcpStream, r: &Refusal, verdict: Option<&str>) {
    let body = format!("paddock egress: {}\n", r.text);
    let mut head = format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        body.len()
    );
    if let Some(v) = verdict {
        head.push_str(&format!("X-Paddock-Egress: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body.as_bytes()).await;
    let _ = conn.shutdown().await;
}

async fn handle(mut conn: TcpStream, eg: Arc<SandboxEgress>, resolver: Arc<dyn Resolve>) {
    let Ok(_permit) = eg.conns.clone().try_acquire_owned() else {
        let r = refuse(
            "503 Service Unavailable",
            format!(
                "the sandbox has {} connections open, its limit",
                eg.limits.max_connections
            ),
        );
        answer(&mut conn, &r, None).await;
        return;
    };
    let head = tokio::time::timeout(
        eg.limits.head_timeout,
        read_head(&mut conn, eg.limits.max_head_bytes),
    )
    .await;
    let (head, early) = match head {
        Ok(Ok(h)) => h,
        Ok(Err(r)) => return answer(&mut conn, &r, None).await,
        Err(_) => {
            return answer(
                &mut conn,
                &refuse("408 Request Timeout", "no request head in time"),
                None,
            )
            .await;
        }
    };
    let ask = match parse_head(&head) {
        Ok(a) => a,
        Err(r) => return answer(&mut conn, &r, None).await,
    };
    let (host, port) = match &ask {
        Ask::Tunnel { host, port } | Ask::Http { host, port, .. } => (host.clone(), *port),
    };
    let upstream = match connect(&eg, &*resolver, &host, port).await {
        Ok(s) => s,
        Err((r, v)) => return answer(&mut conn, &r, v.as_deref()).await,
    };
    let mut upstream = upstream;
    let injection = match &ask {
        Ask::Tunnel { host, port } => eg.interceptor.as_ref().and_then(|i| {
            i.for_destination(host, *port)
                .map(|inj| (i.clone(), inj.clone()))
        }),
        Ask::Http { .. } => None,
    };
    if let Some((interceptor, inj)) = injection {
        // The sandbox speaks TLS only after the 200; bytes sent before it cannot be the
        // start of a handshake Paddock should end.
        if !early.is_empty() {
            return answer(
                &mut conn,
                &refuse("400 Bad Request", "data before the tunnel was established"),
                None,
            )
            .await;
        }
        if conn
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        tracing::info!(target: "paddock::egress", sandbox = %eg.id, name = %inj.host, port = inj.port, "egress: credentials injected for this destination");
        if let Err(e) = interceptor.serve(conn, upstream, &inj).await {
            tracing::info!(target: "paddock::egress", sandbox = %eg.id, name = %inj.host, error = %e, "egress: intercepted connection ended");
        }
        return;
    }
    match ask {
        Ask::Tunnel { .. } => {
            if conn
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
        }
        Ask::Http { head, .. } => {
            if upstream.write_all(&head).await.is_err() {
                return;
            }
        }
    }
    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
        return;
    }
    eg.bytes.fetch_add(early.len() as u64, Ordering::Relaxed);
    pump(conn, upstream, &eg).await;
}

/// Decides, resolves, decides every address, connects to the first allowed one.
async fn connect(
    eg: &SandboxEgress,
    resolver: &dyn Resolve,
    host: &str,
    port: u16,
) -> Result<TcpStream, (Refusal, Option<String>)> {
    let policy = eg.policy();
    let v = policy.decide_name(host, port);
    if !v.allowed {
        eg.record(host, None, port, &v);
        let text = v.describe();
        return Err((
            refuse(
                "403 Forbidden",
                format!("{host}:{port} is not allowed ({text})"),
            ),
            Some(text),
        ));
    }
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse::<IpAddr>()
        .ok();
    let addrs = match literal {
        Some(a) => vec![a],
        None => match tokio::time::timeout(eg.limits.resolve_timeout, resolver.resolve(host, port))
            .await
        {
            Ok(Ok(a)) if !a.is_empty() => a,
            Ok(Ok(_)) | Ok(Err(_)) => {
                return Err((
                    refuse("502 Bad Gateway", format!("{host} does not resolve")),
                    None,
                ));
            }
            Err(_) => {
                return Err((
                    refuse(
                        "504 Gateway Timeout",
                        format!("{host} did not resolve in time"),
                    ),
                    None,
                ));
            }
        },
    };
    let name = literal.is_none().then_some(host);
    let mut first_denial: Option<(IpAddr, Verdict)> = None;
    let mut allowed = Vec::new();
    for a in addrs {
        let v = policy.decide_addr(name, a, port, &eg.this_host);
        if v.allowed {
            allowed.push((a, v));
        } else if first_denial.is_none() {
            first_denial = Some((a, v));
        }
    }
    if let (true, Some((a, v))) = (allowed.is_empty(), first_denial) {
        eg.record(host, Some(a), port, &v);
        let text = v.describe();
        return Err((
            refuse(
                "403 Forbidden",
                format!("{host}:{port} ({a}) is not allowed ({text})"),
            ),
            Some(text),
        ));
    }
    let mut last_err = None;
    for (a, v) in allowed {
        match tokio::time::timeout(
            eg.limits.connect_timeout,
            TcpStream::connect(SocketAddr::new(a, port)),
        )
        .await
        {
            Ok(Ok(s)) => {
                eg.record(host, Some(a), port, &v);
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last_err = Some(e.to_string()),
            Err(_) => last_err = Some("timed out".into()),
        }
    }
    Err((
        refuse(
            "502 Bad Gateway",
            format!(
                "could not connect to {host}:{port}: {}",
                last_err.unwrap_or_default()
            ),
        ),
        None,
    ))
}

/// Moves bytes both ways until both sides are done, paced by the sandbox's rate.
async fn pump(a: TcpStream, b: TcpStream, eg: &SandboxEgress) {
    let (mut ar, mut aw) = a.into_split();
    let (mut br, mut bw) = b.into_split();
    let up = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match ar.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            eg.pace(n).await;
            if bw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = bw.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match br.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            eg.pace(n).await;
            if aw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = aw.shutdown().await;
    };
    tokio::join!(up, down);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_and_rewritten_to_origin_form() {
        let a = parse_head(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n").unwrap();
        assert_eq!(
            a,
            Ask::Tunnel {
                host: "pypi.org".into(),
                port: 443
            }
        );
        let a = parse_head(b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            a,
            Ask::Tunnel {
                host: "2001:db8::1".into(),
                port: 443
            }
        );
        let a = parse_head(
            b"GET http://example.com:8080/a?b=1 HTTP/1.1\r\nHost: example.com:8080\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: x\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        let Ask::Http { host, port, head } = a else {
            panic!()
        };
        assert_eq!((host.as_str(), port), ("example.com", 8080));
        let head = String::from_utf8(head).unwrap();
        assert_eq!(
            head,
            "GET /a?b=1 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let Ask::Http { head, port, .. } =
            parse_head(b"GET http://u:p@example.com?x HTTP/1.1\r\n\r\n").unwrap()
        else {
            panic!()
        };
        assert_eq!(port, 80);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /?x HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
        );
        for bad in [
            &b"GET /local HTTP/1.1\r\n\r\n"[..],
            b"GET https://example.com/ HTTP/1.1\r\n\r\n",
            b"CONNECT example.com HTTP/1.1\r\n\r\n",
            b"CONNECT :443 HTTP/1.1\r\n\r\n",
            b"CONNECT example.com:0 HTTP/1.1\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
