//! `paddock-kubesim`: the Kubernetes API simulator as a program, for the Python
//! provisioner baseline and manual runs. Serves until SIGTERM/SIGINT, then kills every
//! agent process it started.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use paddock_kubesim::{SimOptions, SimServer};

/// Serve the Kubernetes REST subset Paddock and DeerFlow's provisioner use.
#[derive(Debug, Parser)]
#[command(name = "paddock-kubesim")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Run each Pod as a `paddock agent` process and serve NodePorts on 127.0.0.1.
    #[arg(long)]
    run_pods: bool,
    /// The `paddock` binary (default: next to this program, else on PATH).
    #[arg(long)]
    paddock_bin: Option<PathBuf>,
    /// Where PVC volumes live: `{pv_root}/{claimName}/{subPath}`.
    #[arg(long)]
    pv_root: Option<PathBuf>,
    /// Latency added to every request.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fraction of requests answered 500 (0..1).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Close the listener right after binding (every connection is refused).
    #[arg(long)]
    refuse_connections: bool,
    /// Milliseconds before a Pod turns Running (without --run-pods).
    #[arg(long, default_value_t = 100)]
    pod_start_ms: u64,
}

fn default_paddock_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("paddock")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("paddock"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.error_rate) {
        anyhow::bail!(
            "--error-rate must be between 0 and 1, got {}",
            args.error_rate
        );
    }
    let mut opts = SimOptions {
        run_pods: args.run_pods,
        paddock_bin: args.paddock_bin.unwrap_or_else(default_paddock_bin),
        latency: Duration::from_millis(args.latency_ms),
        error_rate: args.error_rate,
        pod_start: Duration::from_millis(args.pod_start_ms),
        ..SimOptions::default()
    };
    if let Some(p) = args.pv_root {
        opts.pv_root = p;
    }
    let mut server = SimServer::start(args.listen, opts)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    println!("listening on {}", server.url());
    if args.refuse_connections {
        server
            .refuse_connections(true)
            .await
            .context("could not close the listener")?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("could not listen for SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    server.shutdown().await;
    Ok(())
}
