//! Credentials the egress path adds for one destination, so they never enter the sandbox.
//!
//! For a destination with injected headers (and only for those), the egress path ends the
//! sandbox's TLS itself with a certificate for that name issued by Paddock's egress CA (which
//! the sandbox trusts), opens its own TLS connection to the real destination (verified
//! against the host's trust store and any roots the operator adds), and forwards each
//! HTTP/1.1 request with the configured headers set. Every other destination is tunnelled
//! untouched: never intercepted, its traffic unseen.
//!
//! Invariant: a header value is only ever written to a connection whose TLS peer proved to
//! be the destination it was configured for (the upstream name is verified), never into the
//! sandbox's direction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue, Request};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;

use crate::rule::normalise_name;

/// Errors setting up interception.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The CA could not be made or read.
    #[error("egress CA: {0}")]
    Ca(String),
    /// A configured injection is invalid.
    #[error("egress.inject[{index}]: {reason}")]
    Config {
        /// Which entry.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The trust store for upstream connections.
    #[error("trust store: {0}")]
    Roots(String),
}

/// Headers to add for one destination.
#[derive(Debug, Clone)]
pub struct Injection {
    /// The destination name (normalised).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The headers, set (replacing any the sandbox sent of the same name).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Injection {
    /// Validates one configured entry (`index` names it in errors). Values are marked
    /// sensitive so no log or debug output of the HTTP layer shows them.
    pub fn new(
        index: usize,
        host: &str,
        port: u16,
        headers: &[(String, String)],
    ) -> Result<Self, InjectError> {
        let err = |reason: String| InjectError::Config { index, reason };
        let host = normalise_name(host).map_err(|r| err(format!("host: {r}")))?;
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Err(err("host must be a name (TLS names the destination)".into()));
        }
        if headers.is_empty() {
            return Err(err("headers: at least one".into()));
        }
        let mut out = Vec::new();
        for (n, v) in headers {
            let name = HeaderName::try_from(n.as_str())
                .map_err(|_| err(format!("header name {n:?} is invalid")))?;
            if matches!(
                name.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection"
            ) {
                return Err(err(format!("header {n} cannot be injected")));
            }
            let mut value = HeaderValue::try_from(v.as_str()).map_err(|_| {
                err(format!(
                    "the value of header {n} is not a valid header value"
                ))
            })?;
            value.set_sensitive(true);
            out.push((name, value));
        }
        Ok(Self {
            host,
            port,
            headers: out,
        })
    }
}

/// The subject of Paddock's egress CA (fixed, so the issuer can be rebuilt from its key).
const CA_NAME: &str = "Paddock egress CA";

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// A new CA: (certificate PEM, private key PEM).
pub fn generate_ca() -> Result<(String, String), InjectError> {
    let key = KeyPair::generate().map_err(|e| InjectError::Ca(e.to_string()))?;
    let cert = ca_params()
        .self_signed(&key)
        .map_err(|e| InjectError::Ca(e.to_string()))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// Ends TLS for injected destinations and forwards their requests with the headers set.
pub struct Interceptor {
    issuer: Issuer<'static, KeyPair>,
    injections: Vec<Injection>,
    upstream: Arc<rustls::ClientConfig>,
    leaves: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the header values.
        f.debug_struct("Interceptor")
            .field(
                "destinations",
                &self
                    .injections
                    .iter()
                    .map(|i| format!("{}:{}", i.host, i.port))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Interceptor {
    /// An interceptor issuing from the CA key (PEM) for `injections`, trusting the host's
    /// store plus `extra_roots` (PEM certificates) for upstream connections.
    pub fn new(
        ca_key_pem: &str,
        injections: Vec<Injection>,
        extra_roots: &[String],
        include_system_roots: bool,
    ) -> Result<Self, InjectError> {
        let key = KeyPair::from_pem(ca_key_pem).map_err(|e| InjectError::Ca(e.to_string()))?;
        let issuer = Issuer::new(ca_params(), key);
        let mut roots = rustls::RootCertStore::empty();
        if include_system_roots {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
        }
        for pem in extra_roots {
            for c in rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
                let c: CertificateDer<'static> =
                    c.map_err(|e| InjectError::Roots(e.to_string()))?;
                roots
                    .add(c)
                    .map_err(|e| InjectError::Roots(e.to_string()))?;
            }
        }
        if roots.is_empty() {
            return Err(InjectError::Roots(
                "no trusted roots for upstream connections".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut upstream = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| InjectError::Roots(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        upstream.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            issuer,
            injections,
            upstream: Arc::new(upstream),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The injection for a destination, if any.
    pub fn for_destination(&self, host: &str, port: u16) -> Option<&Injection> {
        let host = normalise_name(host).ok()?;
        self.injections
            .iter()
            .find(|i| i.port == port && i.host == host)
    }

    fn leaf(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, String> {
        if let Some(c) = self
            .leaves
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
        {
            return Ok(c.clone());
        }
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut p = CertificateParams::new(vec![host.to_owned()]).map_err(|e| e.to_string())?;
        p.distinguished_name.push(DnType::CommonName, host);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let today = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| (d.as_secs() / 86_400) as i64)
            .unwrap_or(0);
        let (y, m, d) = civil(today - 1);
        p.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = civil(today + 90);
        p.not_after = rcgen::date_time_ymd(y, m, d);
        let cert = p.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(|e| e.to_string())?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        self.leaves
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_owned(), cfg.clone());
        Ok(cfg)
    }

    /// Serves one intercepted tunnel: TLS from the sandbox ended here, TLS to `upstream`
    /// verified as `inj.host`, each request forwarded with the headers set.
    pub async fn serve(
        &self,
        client: TcpStream,
        upstream: TcpStream,
        inj: &Injection,
    ) -> Result<(), String> {
        let leaf = self.leaf(&inj.host)?;
        let client = tokio_rustls::TlsAcceptor::from(leaf)
            .accept(client)
            .await
            .map_err(|e| format!("TLS from the sandbox: {e}"))?;
        let name = ServerName::try_from(inj.host.clone()).map_err(|e| e.to_string())?;
        let upstream = tokio_rustls::TlsConnector::from(self.upstream.clone())
            .connect(name, upstream)
            .await
            .map_err(|e| format!("TLS to {}: {e}", inj.host))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(upstream))
            .await
            .map_err(|e| format!("HTTP to {}: {e}", inj.host))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let sender = Arc::new(tokio::sync::Mutex::new(sender));
        let headers = inj.headers.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let sender = sender.clone();
            let headers = headers.clone();
            async move {
                for (n, v) in &headers {
                    req.headers_mut().insert(n.clone(), v.clone());
                }
                let mut s = sender.lock().await;
                s.ready().await?;
                s.send_request(req).await
            }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(client), service)
            .await
            .map_err(|e| format!("HTTP from the sandbox: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(20_790), (2026, 12, 3));
        assert_eq!(civil(-1), (1969, 12, 31));
    }

    #[test]
    fn injections_are_checked() {
        let h = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
        assert!(Injection::new(0, "api.test", 443, &h("Authorization", "Bearer x")).is_ok());
        for (host, headers) in [
            ("203.0.113.1", h("Authorization", "x")),
            ("bad host", h("Authorization", "x")),
            ("api.test", h("Host", "x")),
            ("api.test", h("Content-Length", "1")),
            ("api.test", h("bad header", "x")),
            ("api.test", h("X-Key", "line\nbreak")),
            ("api.test", Vec::new()),
        ] {
            assert!(
                Injection::new(3, host, 443, &headers).is_err(),
                "{host} {headers:?}"
            );
        }
        let e = Injection::new(3, "api.test", 443, &h("Host", "x")).unwrap_err();
        assert!(e.to_string().starts_with("egress.inject[3]:"), "{e}");
    }

    #[test]
    fn a_debug_print_never_shows_a_value() {
        let (_, key) = generate_ca().unwrap();
        let inj = Injection::new(
            0,
            "api.test",
            443,
            &[("Authorization".into(), "Bearer s3cret".into())],
        )
        .unwrap();
        let ca_cert = generate_ca().unwrap().0;
        let i = Interceptor::new(&key, vec![inj.clone()], &[ca_cert], false).unwrap();
        assert!(!format!("{i:?}").contains("s3cret"));
        assert!(!format!("{inj:?}").contains("s3cret"), "{inj:?}");
    }
}
