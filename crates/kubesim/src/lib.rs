//! A Kubernetes API simulator: the REST subset Paddock (kube-rs) and DeerFlow's Python
//! provisioner use, over plain HTTP, with a pod-phase simulator, fault injection and an
//! optional "kubelet" ([`kubelet`]) that runs each Pod as a real `paddock agent` process.
//!
//! Invariants: every write bumps one global, strictly increasing `resourceVersion` and is
//! recorded in the event log watches read from, so a watch started at version N sees
//! every later change exactly once, in order; errors are Kubernetes `Status` bodies.

mod faults;
mod http;
pub mod kubelet;
mod ports;
pub mod select;
pub mod store;
mod validate;
mod watches;
mod writes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use store::{Sim, SimOptions};

/// A running simulator.
#[derive(Debug)]
pub struct SimServer {
    /// Its state (for fault injection and inspection in tests).
    pub sim: Arc<Sim>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimServer {
    /// Binds `addr` and serves until dropped or stopped.
    pub async fn start(addr: SocketAddr, opts: SimOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let sim = Sim::new(opts);
        let (stop, _) = watch::channel(false);
        let mut this = Self {
            sim,
            addr,
            stop,
            task: None,
        };
        this.serve(listener);
        Ok(this)
    }

    fn serve(&mut self, listener: TcpListener) {
        let app: Router = http::router(self.sim.clone());
        let mut rx = self.stop.subscribe();
        let _ = self.stop.send(false);
        self.task = Some(tokio::spawn(async move {
            let stopped = async move {
                while !*rx.borrow_and_update() {
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
            };
            // Watch events are small writes on a long response: without TCP_NODELAY,
            // Nagle plus the client's delayed ACK holds each one back ~40 ms (Go's
            // API server sets it by default).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
            });
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(error = %e, "simulator server ended");
            }
        }));
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listener (connections are refused) and ends open watches; `false`
    /// re-opens it on the same address.
    pub async fn refuse_connections(&mut self, refuse: bool) -> std::io::Result<()> {
        if refuse {
            let _ = self.stop.send(true);
            self.sim.end_watches();
            if let Some(t) = self.task.take() {
                let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
            }
            Ok(())
        } else {
            if self.task.is_some() {
                return Ok(());
            }
            let listener = TcpListener::bind(self.addr).await?;
            self.serve(listener);
            Ok(())
        }
    }

    /// Stops serving and kills every agent process the kubelet started.
    pub async fn shutdown(mut self) {
        let _ = self.refuse_connections(true).await;
        self.sim.kill_all().await;
    }
}

impl Drop for SimServer {
    /// A simulator dropped without [`SimServer::shutdown`] still ends its agents: they are
    /// separate processes, and the `Arc<Sim>` holding them may outlive this handle in tasks.
    fn drop(&mut self) {
        self.sim.kill_all_now();
    }
}
