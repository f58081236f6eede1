//! The control plane over the Kubernetes backend, configured only by DeerFlow's
//! provisioner environment variables (as `paddock serve` with `backend: kubernetes`
//! does), for the side-by-side benchmark in `bench/kube/run.sh`.
//!
//! Usage: `kube_provisioner 127.0.0.1:8002` with `K8S_API_SERVER`, `PROVISIONER_API_KEY`, …

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use paddock_kube::{KubeBackend, KubeConfig};
use paddock_server::metrics::Metrics;
use paddock_server::{AppState, Lifecycle, LifecycleConfig, app};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8002".into())
        .parse()
        .context("the first argument must be ADDR:PORT")?;
    let mut cfg = KubeConfig::default();
    cfg.apply_env(&|k| std::env::var(k).ok())?;
    let key = std::env::var("PROVISIONER_API_KEY").context("PROVISIONER_API_KEY is not set")?;
    let backend = KubeBackend::connect(cfg)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let metrics = Arc::new(Metrics::default());
    let lifecycle = Arc::new(Lifecycle::new(
        Arc::new(backend),
        LifecycleConfig::default(),
        metrics.clone(),
    ));
    lifecycle
        .recover()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = AppState {
        lifecycle,
        metrics,
        api_key: key.into(),
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(state, None)).await?;
    Ok(())
}
