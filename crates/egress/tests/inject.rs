//! Credential injection with real TLS on loopback: an HTTPS upstream with its own CA, the
//! egress proxy holding a header for it, and a sandbox-side client that trusts Paddock's
//! egress CA. The header reaches the upstream and nothing else; other destinations are
//! tunnelled untouched (the client sees the upstream's own certificate).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use paddock_egress::inject::{Injection, Interceptor, generate_ca};
use paddock_egress::{Limits, Mode, Policy, Resolve, SandboxEgress, serve};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "Bearer s3cret-7d1f";

struct Loopback;

impl Resolve for Loopback {
    fn resolve<'a>(
        &'a self,
        _name: &'a str,
        _port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>> {
        Box::pin(async { Ok(vec!["127.0.0.1".parse().unwrap()]) })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA for the upstream and an HTTPS server for `names` that answers with what
/// Authorization it saw (only whether it matched: the value never goes back).
async fn upstream(names: &[&str]) -> (SocketAddr, String, Arc<Mutex<Vec<Option<String>>>>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "upstream test CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8(head).unwrap();
                let auth = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("authorization: ")
                            .or_else(|| l.strip_prefix("Authorization: "))
                    })
                    .map(str::to_owned);
                let verdict = match auth.as_deref() {
                    Some(SECRET) => "auth=ok",
                    Some(_) => "auth=other",
                    None => "auth=missing",
                };
                seen.lock().unwrap().push(auth);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{verdict}",
                    verdict.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, ca_cert.pem(), seen)
}

/// CONNECT through the proxy, then TLS as `name` trusting `roots`, one GET; the response.
async fn get(
    proxy: SocketAddr,
    name: &str,
    port: u16,
    roots: &[String],
    extra: &str,
) -> Result<String, String> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        format!("CONNECT {name}:{port} HTTP/1.1\r\nHost: {name}:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head);
    }
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        for c in rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
            let c: CertificateDer<'static> = c.unwrap();
            store.add(c).unwrap();
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), s)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    tls.write_all(
        format!("GET /v1/thing HTTP/1.1\r\nHost: {name}\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn a_configured_header_reaches_its_destination_and_never_the_sandbox() {
    let (up, up_ca, seen) = upstream(&["api.test", "other.test"]).await;
    let (paddock_ca, paddock_key) = generate_ca().unwrap();
    let inj = Injection::new(
        0,
        "api.test",
        up.port(),
        &[("Authorization".into(), SECRET.into())],
    )
    .unwrap();
    let interceptor = Arc::new(
        Interceptor::new(&paddock_key, vec![inj], std::slice::from_ref(&up_ca), false).unwrap(),
    );
    let policy = Policy {
        mode: Mode::Allowlist,
        allow: ["api.test", "other.test", "127.0.0.1"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect(),
    };
    let egress = Arc::new(
        SandboxEgress::new("sb", policy, Vec::new(), Limits::default())
            .with_interceptor(interceptor),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = l.local_addr().unwrap();
    tokio::spawn(serve(l, egress, Arc::new(Loopback)));

    // The sandbox trusts Paddock's CA: the header is added on the way out.
    let r = get(
        proxy,
        "api.test",
        up.port(),
        std::slice::from_ref(&paddock_ca),
        "",
    )
    .await
    .unwrap();
    assert!(r.ends_with("auth=ok"), "{r}");
    assert!(
        !r.contains("s3cret"),
        "the value came back into the sandbox: {r}"
    );
    // A header the sandbox sends of the same name is replaced, not doubled.
    let r = get(
        proxy,
        "api.test",
        up.port(),
        std::slice::from_ref(&paddock_ca),
        "Authorization: Bearer mine\r\n",
    )
    .await
    .unwrap();
    assert!(r.ends_with("auth=ok"), "{r}");
    // The destination was intercepted: its own certificate is not what the sandbox saw.
    assert!(
        get(
            proxy,
            "api.test",
            up.port(),
            std::slice::from_ref(&up_ca),
            ""
        )
        .await
        .is_err()
    );

    // Another destination is a plain tunnel: the sandbox sees the upstream's own
    // certificate (Paddock's CA cannot verify it) and no header is added.
    let r = get(
        proxy,
        "other.test",
        up.port(),
        std::slice::from_ref(&up_ca),
        "",
    )
    .await
    .unwrap();
    assert!(r.ends_with("auth=missing"), "{r}");
    assert!(
        get(proxy, "other.test", up.port(), &[paddock_ca], "")
            .await
            .is_err()
    );

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![Some(SECRET.to_owned()), Some(SECRET.to_owned()), None],
        "the upstream saw the secret on api.test only"
    );
}
