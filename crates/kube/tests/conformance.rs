//! The conformance suite on sandboxes the Kubernetes backend provisions through the
//! simulator's kubelet: each case's Pod runs a real `paddock agent` (as the Pod spec
//! says, `--isolation none`), reached through its NodePort capability URL.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use paddock_client::{AgentClient, RemoteSandbox};
use paddock_conformance::{Prepared, Unsupported};
use paddock_core::{Sandbox, SandboxId};
use paddock_kube::{KubeBackend, KubeConfig};
use paddock_kubesim::{SimOptions, SimServer};
use paddock_server::Backend as _;
use paddock_server::CreateSpec;
use paddock_server::backend::CreateFlags;

struct KubeSimTarget;

fn paddock_bin() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/paddock");
    p.is_file().then_some(p)
}

#[async_trait]
impl paddock_conformance::Target for KubeSimTarget {
    async fn open(
        &self,
        prep: &Prepared,
    ) -> anyhow::Result<(Arc<dyn Sandbox>, Vec<Box<dyn Send + Sync>>)> {
        let bin = paddock_bin().ok_or_else(|| {
            Unsupported("target/debug/paddock is not built (cargo build -p paddock-cli)".into())
        })?;
        let sim = SimServer::start(
            "127.0.0.1:0".parse()?,
            SimOptions {
                run_pods: true,
                paddock_bin: bin,
                ..SimOptions::default()
            },
        )
        .await?;
        let backend = KubeBackend::connect(KubeConfig {
            api_server: Some(sim.url()),
            node_host: "127.0.0.1".into(),
            host_base_dir: prep.data_dir().to_string_lossy().into_owned(),
            // The suite seeds its skill into the data dir's `skills/` (SKILLS_HOST_PATH;
            // the default is the gateway's projection `skills_view/`).
            skills_host_path: Some(
                prep.data_dir()
                    .join("skills")
                    .to_string_lossy()
                    .into_owned(),
            ),
            request_timeout_secs: 5,
            ready_timeout_secs: 30,
            ..KubeConfig::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let record = backend
            .create(&CreateSpec {
                sandbox_id: SandboxId::new("conf")?,
                thread_id: prep.thread.clone(),
                user_id: prep.user.clone(),
                extra_mounts: Vec::new(),
                flags: CreateFlags::default(),
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let client = AgentClient::new(&record.sandbox_url).context("client")?;
        let sb = RemoteSandbox::connect(client).await?;
        Ok((Arc::new(sb), vec![Box::new(sim), Box::new(backend)]))
    }
}

paddock_conformance::conformance_suite!(KubeSimTarget);
