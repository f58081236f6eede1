//! The egress proxy with real sockets on loopback: a proxy for one sandbox, upstream servers
//! it may or may not reach, and a resolver the test controls (so a name can "resolve" to a
//! blocked address, as DNS rebinding would make it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paddock_egress::{Limits, Mode, Policy, Resolve, SandboxEgress, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Names the test decides, and how often it was asked.
#[derive(Default)]
struct Names {
    map: Mutex<HashMap<String, Vec<IpAddr>>>,
    asked: AtomicUsize,
}

impl Resolve for Names {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
        _port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>> {
        Box::pin(async move {
            self.asked.fetch_add(1, Ordering::SeqCst);
            self.map
                .lock()
                .unwrap()
                .get(name)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"))
        })
    }
}

/// An upstream that echoes what it gets (after a greeting), or records one HTTP request.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

struct Proxy {
    addr: SocketAddr,
    egress: Arc<SandboxEgress>,
    names: Arc<Names>,
}

async fn proxy(policy: Policy, limits: Limits) -> Proxy {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let egress = Arc::new(SandboxEgress::new("sb-test", policy, Vec::new(), limits));
    let names = Arc::new(Names::default());
    tokio::spawn(serve(l, egress.clone(), names.clone()));
    Proxy {
        addr,
        egress,
        names,
    }
}

fn policy(mode: Mode, rules: &[String]) -> Policy {
    Policy {
        mode,
        allow: rules.iter().map(|r| r.parse().unwrap()).collect(),
    }
}

/// Sends `CONNECT target` and returns the stream and the status line plus headers.
async fn connect(proxy: SocketAddr, target: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    (s, String::from_utf8(head).unwrap())
}

async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).await.unwrap();
    got
}

#[tokio::test]
async fn an_allowed_destination_is_tunnelled() {
    let up = echo_server().await;
    let p = proxy(
        policy(Mode::Allowlist, &[format!("{}", up)]),
        Limits::default(),
    )
    .await;
    let (mut s, head) = connect(p.addr, &up.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(roundtrip(&mut s, b"hello").await, b"hello");
    assert_eq!(p.egress.counts().allowed, 1);
}

#[tokio::test]
async fn a_listed_name_that_resolves_to_a_blocked_address_reaches_nothing() {
    let up = echo_server().await;
    let p = proxy(
        policy(Mode::Allowlist, &[format!("rebind.test:{}", up.port())]),
        Limits::default(),
    )
    .await;
    // First a public address (unreachable on this machine), then loopback: as DNS rebinding.
    p.names
        .map
        .lock()
        .unwrap()
        .insert("rebind.test".into(), vec!["127.0.0.1".parse().unwrap()]);
    let (_, head) = connect(p.addr, &format!("rebind.test:{}", up.port())).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        head.contains("X-Paddock-Egress: deny blocked=loopback"),
        "{head}"
    );
    for metadata in ["169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"] {
        p.names
            .map
            .lock()
            .unwrap()
            .insert("rebind.test".into(), vec![metadata.parse().unwrap()]);
        let (_, head) = connect(p.addr, &format!("rebind.test:{}", up.port())).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{metadata}: {head}");
    }
    let d = p.egress.recent_denials();
    assert_eq!(d.len(), 4);
    assert_eq!(d[0].name, "rebind.test");
    assert_eq!(d[0].addr, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(d[0].reason, "deny blocked=loopback");
    assert_eq!(d[1].reason, "deny blocked=metadata");
}

#[tokio::test]
async fn a_name_outside_the_allowlist_is_refused_without_a_dns_query() {
    let p = proxy(
        policy(Mode::Allowlist, &["pypi.org:443".into()]),
        Limits::default(),
    )
    .await;
    let (_, head) = connect(p.addr, "evil.example:443").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(head.contains("deny not_listed"), "{head}");
    assert_eq!(p.names.asked.load(Ordering::SeqCst), 0);
    let (_, head) = connect(p.addr, "pypi.org:80").await;
    assert!(head.starts_with("HTTP/1.1 403"), "another port: {head}");
    // Mode none refuses everything.
    p.egress.set_policy(Policy::of(Mode::None));
    let (_, head) = connect(p.addr, "pypi.org:443").await;
    assert!(head.contains("deny mode=none"), "{head}");
}

#[tokio::test]
async fn plain_http_is_forwarded_in_origin_form() {
    // An upstream that answers with the request head it got.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let body = String::from_utf8(head).unwrap();
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(reply.as_bytes()).await.unwrap();
    });
    let p = proxy(
        policy(Mode::Allowlist, &[up.to_string()]),
        Limits::default(),
    )
    .await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        format!("GET http://{up}/pkg/?x=1 HTTP/1.1\r\nHost: {up}\r\nProxy-Connection: keep-alive\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).await.unwrap();
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert!(
        got.contains(&format!(
            "GET /pkg/?x=1 HTTP/1.1\r\nHost: {up}\r\nConnection: close\r\n\r\n"
        )),
        "{got}"
    );
    assert!(!got.contains("Proxy-Connection"), "{got}");
}

#[tokio::test]
async fn a_new_policy_applies_to_new_connections_and_open_ones_go_on() {
    let up = echo_server().await;
    let p = proxy(
        policy(Mode::Allowlist, &[up.to_string()]),
        Limits::default(),
    )
    .await;
    let (mut open, head) = connect(p.addr, &up.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    p.egress.set_policy(Policy::of(Mode::None));
    let (_, head) = connect(p.addr, &up.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(roundtrip(&mut open, b"still here").await, b"still here");
    p.egress
        .set_policy(policy(Mode::Allowlist, &[up.to_string()]));
    let (_, head) = connect(p.addr, &up.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn connections_per_sandbox_are_capped() {
    let up = echo_server().await;
    let limits = Limits {
        max_connections: 3,
        ..Limits::default()
    };
    let p = proxy(policy(Mode::Allowlist, &[up.to_string()]), limits).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (s, head) = connect(p.addr, &up.to_string()).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(s);
    }
    let (_, head) = connect(p.addr, &up.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(p.egress.counts().open, 3);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, head) = connect(p.addr, &up.to_string()).await;
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "slots come back: {head}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bytes_per_sandbox_are_rate_limited() {
    let up = echo_server().await;
    let limits = Limits {
        bytes_per_sec: Some(100 * 1024),
        ..Limits::default()
    };
    let p = proxy(policy(Mode::Allowlist, &[up.to_string()]), limits).await;
    let (mut s, head) = connect(p.addr, &up.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // 150 KiB each way is 300 KiB against 100 KiB/s with one second of burst: at least 2 s.
    let msg = vec![7u8; 150 * 1024];
    let t = Instant::now();
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(&msg).await.unwrap();
    };
    let recv = async {
        let mut got = vec![0u8; msg.len()];
        r.read_exact(&mut got).await.unwrap();
    };
    tokio::join!(send, recv);
    assert!(
        t.elapsed() >= Duration::from_millis(1800),
        "300 KiB moved in {:?} under a 100 KiB/s limit",
        t.elapsed()
    );
    assert!(p.egress.counts().bytes >= 300 * 1024);
}
