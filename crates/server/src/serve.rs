//! `paddock serve`: binds, recovers state, serves the control plane and the local
//! sandboxes' agent APIs on one listener, reaps idle sandboxes, and on SIGTERM/SIGINT
//! stops accepting, kills every sandbox process and exits (records stay for the next start).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::api::{AppState, app};
use crate::backend::{Backend, BackendError};
use crate::lifecycle::{Lifecycle, LifecycleConfig};
use crate::local::{LocalBackend, LocalConfig, random_hex};
use crate::metrics::Metrics;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The API key could not be read or created.
    #[error("api key: {0}")]
    ApiKey(String),
    /// The address could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The backend could not start.
    #[error("backend: {0}")]
    Backend(#[from] BackendError),
    /// The local runtime could not start (e.g. a kernel feature is missing).
    #[error("{0}")]
    Runtime(String),
    /// Serving failed.
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the API key comes from.
#[derive(Debug, Clone)]
pub enum ApiKeySource {
    /// Given directly (flag, env, config).
    Value(String),
    /// Read from a file.
    File(PathBuf),
    /// `{data_dir}/api-key`, generated on first start.
    Generated,
}

/// Everything `serve` needs, resolved by the caller from config, env and flags.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Address to bind (port 0 picks one).
    pub listen: SocketAddr,
    /// Base of sandbox URLs; default `http://{bound address}`.
    pub public_url: Option<String>,
    /// The API key.
    pub api_key: ApiKeySource,
    /// Lifecycle.
    pub lifecycle: LifecycleConfig,
    /// Which backend runs the sandboxes.
    pub backend: BackendChoice,
    /// Header, idle and connection limits of the listener.
    pub listen_limits: paddock_agent::listen::ListenConfig,
}

/// The backend `serve` drives.
#[derive(Clone)]
pub enum BackendChoice {
    /// Isolated process trees on this host; their agent APIs are served by this process.
    Local {
        /// Runtime options.
        runtime: paddock_runtime::RuntimeOptions,
        /// Local backend settings except the URL (filled in after binding).
        local: Box<LocalConfig>,
    },
    /// A backend built by the caller (Kubernetes); sandbox URLs point elsewhere.
    External(Arc<dyn Backend>),
}

impl std::fmt::Debug for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local { .. } => f.write_str("Local"),
            Self::External(b) => write!(f, "External({})", b.name()),
        }
    }
}

/// Resolves the API key, creating `{data_dir}/api-key` (mode 0600) when needed. Returns
/// the key and, when it was generated now, where it was written.
pub fn resolve_api_key(
    src: &ApiKeySource,
    data_dir: &Path,
) -> Result<(String, Option<PathBuf>), ServeError> {
    match src {
        ApiKeySource::Value(v) if !v.trim().is_empty() => Ok((v.trim().to_owned(), None)),
        ApiKeySource::Value(_) => Err(ServeError::ApiKey("the configured api key is empty".into())),
        ApiKeySource::File(p) => {
            let k = std::fs::read_to_string(p)
                .map_err(|e| ServeError::ApiKey(format!("cannot read {}: {e}", p.display())))?;
            let k = k.trim().to_owned();
            if k.is_empty() {
                return Err(ServeError::ApiKey(format!("{} is empty", p.display())));
            }
            Ok((k, None))
        }
        ApiKeySource::Generated => {
            let path = data_dir.join("api-key");
            if let Ok(k) = std::fs::read_to_string(&path) {
                let k = k.trim().to_owned();
                if !k.is_empty() {
                    return Ok((k, None));
                }
            }
            std::fs::create_dir_all(data_dir).map_err(|e| {
                ServeError::ApiKey(format!("cannot create {}: {e}", data_dir.display()))
            })?;
            let key =
                random_hex(32).map_err(|e| ServeError::ApiKey(format!("no randomness: {e}")))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| {
                    ServeError::ApiKey(format!("cannot create {}: {e}", path.display()))
                })?;
            f.write_all(format!("{key}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| ServeError::ApiKey(format!("cannot write {}: {e}", path.display())))?;
            Ok((key, Some(path)))
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Runs the server until SIGTERM/SIGINT. `ready` gets the bound address and the key
/// file's path when one was generated (the CLI prints them).
pub async fn serve(
    opts: ServeOptions,
    ready: impl FnOnce(SocketAddr, Option<&Path>),
) -> Result<(), ServeError> {
    let (api_key, generated) = resolve_api_key(&opts.api_key, &opts.data_dir)?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let (backend, data_plane): (Arc<dyn Backend>, Option<axum::Router>) = match opts.backend.clone()
    {
        BackendChoice::Local { runtime, mut local } => {
            local.public_url = opts
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{addr}"));
            let layout = paddock_core::DataLayout::new(opts.data_dir.clone())
                .with_gateway_root(local.gateway_root.clone());
            let rt = tokio::task::spawn_blocking(move || {
                paddock_runtime::Runtime::server(layout, runtime)
            })
            .await
            .map_err(|e| ServeError::Runtime(e.to_string()))?
            .map_err(|e| ServeError::Runtime(e.to_string()))?;
            let local = Arc::new(LocalBackend::open(rt, *local).await?);
            let dp = local.data_plane();
            (local, Some(dp))
        }
        BackendChoice::External(b) => (b, None),
    };
    let metrics = Arc::new(Metrics::default());
    let lifecycle = Arc::new(Lifecycle::new(
        backend.clone(),
        opts.lifecycle.clone(),
        metrics.clone(),
    ));
    let recovered = lifecycle.recover().await?;
    let state = AppState {
        lifecycle: lifecycle.clone(),
        metrics,
        api_key: api_key.into(),
    };
    let router = app(state, data_plane);
    tracing::info!(%addr, recovered, backend = backend.name(), "paddock serve ready");
    ready(addr, generated.as_deref());
    let reaper = tokio::spawn(lifecycle.clone().reaper());
    // Header and idle timeouts and a connection cap: slow or idle clients cannot hold
    // the server (see paddock_agent::listen).
    let result =
        paddock_agent::listen::serve(listener, router, opts.listen_limits, shutdown_signal()).await;
    reaper.abort();
    backend.shutdown().await;
    result.map_err(ServeError::Io)
}
