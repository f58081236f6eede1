//! The Kubernetes backend: each sandbox is a Secret, Pod, Service and NetworkPolicy in
//! one namespace, made and found through kube-rs.
//!
//! Invariants: every API call is bounded by `request_timeout_secs` and a failure to reach
//! the API server surfaces as [`BackendError::Unavailable`] (503), never a hang; create is
//! idempotent (objects that already exist for the same user and thread are reused) and
//! deletes exactly the objects it made when a later step fails; readiness comes from a
//! watch on the Pod; the sandbox list is rebuilt from labels, so a restarted Paddock
//! finds what it made before.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use paddock_core::{SandboxId, ThreadId, UserId};
use paddock_server::{Backend, BackendError, CreateSpec, SandboxRecord, SandboxStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{KubeConfig, Resolved};
use crate::mounts::validate_extra_mounts;
use crate::objects::{
    self, MANAGED_SELECTOR, SandboxSpec, THREAD_ANNOTATION, TOKEN_KEY, USER_ANNOTATION,
};

/// Sandboxes as Kubernetes Pods.
pub struct KubeBackend {
    client: Client,
    cfg: Resolved,
    node_host: String,
    timeout: Duration,
}

impl std::fmt::Debug for KubeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBackend")
            .field("namespace", &self.cfg.cfg.namespace)
            .field("node_host", &self.node_host)
            .finish()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> BackendError {
    tracing::warn!(error = %e, "{what}");
    BackendError::Unavailable(format!("Kubernetes API server: {what}: {e}"))
}

/// Maps a kube error: transport failures and 5xx/429 answers are "unavailable" (503),
/// anything else the API server refused is an internal error (logged with its reason).
fn map_err(what: &str, e: kube::Error) -> BackendError {
    match &e {
        kube::Error::Api(s) if s.code >= 500 || s.code == 429 => unavailable(what, &e),
        kube::Error::Api(s) => {
            tracing::error!(code = s.code, reason = %s.reason, message = %s.message, "{what}");
            BackendError::Internal(format!("{what}: {} ({})", s.reason, s.code))
        }
        _ => unavailable(what, &e),
    }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn new_token() -> Result<String, BackendError> {
    use std::io::Read;
    let mut buf = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| {
            tracing::error!(error = %e, "could not read random bytes");
            BackendError::Internal("could not generate a sandbox secret".into())
        })?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn owner(meta: &kube::api::ObjectMeta) -> Option<(UserId, ThreadId)> {
    let a = meta.annotations.as_ref()?;
    let u = UserId::new(a.get(USER_ANNOTATION)?.clone()).ok()?;
    let t = ThreadId::new(a.get(THREAD_ANNOTATION)?.clone()).ok()?;
    Some((u, t))
}

fn token_of(secret: &Secret) -> Option<String> {
    let raw = secret.data.as_ref()?.get(TOKEN_KEY)?;
    String::from_utf8(raw.0.clone())
        .ok()
        .filter(|t| !t.is_empty())
}

/// The status DeerFlow reports: the Pod phase, `Running` only once it is Ready.
pub fn pod_status(pod: Option<&Pod>) -> SandboxStatus {
    let Some(status) = pod.and_then(|p| p.status.as_ref()) else {
        return if pod.is_some() {
            SandboxStatus::Pending
        } else {
            SandboxStatus::NotFound
        };
    };
    if pod.is_some_and(|p| p.metadata.deletion_timestamp.is_some()) {
        return SandboxStatus::Unknown;
    }
    match status.phase.as_deref() {
        Some("Running") if is_ready(pod) => SandboxStatus::Running,
        Some("Running") | Some("Pending") | None => SandboxStatus::Pending,
        Some("Succeeded") => SandboxStatus::Succeeded,
        Some("Failed") => SandboxStatus::Failed,
        Some(_) => SandboxStatus::Unknown,
    }
}

fn is_ready(pod: Option<&Pod>) -> bool {
    pod.and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_port(svc: &Service) -> Option<i32> {
    svc.spec.as_ref()?.ports.as_ref()?.first()?.node_port
}

/// Delete attempts per object when rolling back a failed create.
const ROLLBACK_ATTEMPTS: u32 = 4;

/// Which objects this `create` made (rather than reused), so a failed create rolls back
/// exactly those.
#[derive(Default)]
struct CreatedObjects {
    secret: bool,
    pod: bool,
    service: bool,
    policy: bool,
}

impl KubeBackend {
    /// Connects to the API server the configuration names (kubeconfig, `api_server`
    /// override, or in-cluster), checks it answers and resolves the node host.
    pub async fn connect(cfg: KubeConfig) -> Result<Self, BackendError> {
        let resolved = cfg.validate().map_err(|e| BackendError::Invalid {
            field: e.field.clone(),
            message: e.to_string(),
        })?;
        let timeout = Duration::from_secs(cfg.request_timeout_secs);
        let mut kc = Self::client_config(&cfg).await?;
        kc.connect_timeout = Some(timeout);
        kc.read_timeout = Some(timeout);
        kc.write_timeout = Some(timeout);
        let client =
            Client::try_from(kc).map_err(|e| unavailable("could not build the client", e))?;
        let mut this = Self {
            client,
            cfg: resolved,
            node_host: cfg.node_host.clone(),
            timeout,
        };
        let version = this
            .call(
                "could not reach the API server",
                this.client.apiserver_version(),
            )
            .await?;
        tracing::info!(version = %version.git_version, namespace = %this.cfg.cfg.namespace, "connected to Kubernetes");
        if this.node_host.is_empty() {
            this.node_host = this.first_node_address().await?;
        }
        Ok(this)
    }

    async fn client_config(cfg: &KubeConfig) -> Result<kube::Config, BackendError> {
        let invalid = |field: &str, e: &dyn std::fmt::Display| BackendError::Invalid {
            field: field.to_owned(),
            message: format!("{field}: {e}"),
        };
        let from_file = match &cfg.kubeconfig_path {
            Some(p) if p.is_file() => {
                let kcfg = kube::config::Kubeconfig::read_from(p)
                    .map_err(|e| invalid("kubernetes.kubeconfig_path", &e))?;
                Some(
                    kube::Config::from_custom_kubeconfig(
                        kcfg,
                        &kube::config::KubeConfigOptions::default(),
                    )
                    .await
                    .map_err(|e| invalid("kubernetes.kubeconfig_path", &e))?,
                )
            }
            Some(p) if p.exists() => {
                return Err(invalid("kubernetes.kubeconfig_path", &"is not a file"));
            }
            _ => None,
        };
        let mut kc = match (from_file, &cfg.api_server) {
            (Some(mut kc), Some(url)) => {
                kc.cluster_url = url.parse().map_err(|e| invalid("kubernetes.api_server", &e))?;
                kc
            }
            (Some(kc), None) => kc,
            (None, Some(url)) => kube::Config::new(url.parse().map_err(|e| invalid("kubernetes.api_server", &e))?),
            (None, None) => kube::Config::incluster().map_err(|e| {
                invalid(
                    "kubernetes.api_server",
                    &format!("no kubeconfig and not running in a cluster ({e}); set K8S_API_SERVER or KUBECONFIG_PATH"),
                )
            })?,
        };
        kc.default_namespace = cfg.namespace.clone();
        if cfg.insecure_skip_tls_verify {
            kc.accept_invalid_certs = true;
        }
        Ok(kc)
    }

    /// Runs one API call under the request timeout.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, BackendError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(|e| map_err(what, e)),
            Err(_) => Err(BackendError::Unavailable(format!(
                "Kubernetes API server: {what}: no answer within {}s",
                self.timeout.as_secs()
            ))),
        }
    }

    async fn first_node_address(&self) -> Result<String, BackendError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = self
            .call("could not list nodes", nodes.list(&ListParams::default()))
            .await?;
        list.items
            .iter()
            .filter_map(|n| n.status.as_ref()?.addresses.as_ref())
            .flatten()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address.clone())
            .ok_or_else(|| {
                BackendError::Unavailable(
                    "node_host is empty and no node reports an InternalIP".into(),
                )
            })
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.cfg.cfg.namespace)
    }

    async fn get_opt<K>(&self, what: &str, name: &str) -> Result<Option<K>, BackendError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        self.call(what, self.api::<K>().get_opt(name)).await
    }

    /// Creates `obj`; when it exists already, returns the existing one if it belongs to
    /// the same user and thread (`Ok((obj, false))`), else a conflict.
    async fn create_or_reuse<K>(
        &self,
        what: &str,
        obj: &K,
        spec: &CreateSpec,
    ) -> Result<(K, bool), BackendError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let api = self.api::<K>();
        match tokio::time::timeout(self.timeout, api.create(&PostParams::default(), obj)).await {
            Ok(Ok(made)) => Ok((made, true)),
            Ok(Err(e)) if is_code(&e, 409) => {
                let name = obj.name_any();
                let existing: K = self.get_opt(what, &name).await?.ok_or_else(|| {
                    BackendError::Unavailable(format!("{what}: {name} vanished while being reused"))
                })?;
                match owner(existing.meta()) {
                    Some((u, t)) if u == spec.user_id && t == spec.thread_id => {
                        Ok((existing, false))
                    }
                    _ => Err(BackendError::Conflict(format!(
                        "sandbox '{}' already belongs to another user or thread",
                        spec.sandbox_id
                    ))),
                }
            }
            Ok(Err(e)) => Err(map_err(what, e)),
            Err(_) => Err(BackendError::Unavailable(format!(
                "Kubernetes API server: {what}: no answer within {}s",
                self.timeout.as_secs()
            ))),
        }
    }

    async fn delete_named<K>(&self, what: &str, name: &str) -> Result<bool, BackendError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        match tokio::time::timeout(
            self.timeout,
            self.api::<K>().delete(name, &DeleteParams::default()),
        )
        .await
        {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if is_code(&e, 404) => Ok(false),
            Ok(Err(e)) => Err(map_err(what, e)),
            Err(_) => Err(BackendError::Unavailable(format!(
                "Kubernetes API server: {what}: no answer within {}s",
                self.timeout.as_secs()
            ))),
        }
    }

    async fn delete_kind(&self, kind: &str, id: &SandboxId) -> Result<bool, BackendError> {
        match kind {
            "NetworkPolicy" => {
                self.delete_named::<NetworkPolicy>("rollback", &objects::policy_name(id))
                    .await
            }
            "Service" => {
                self.delete_named::<Service>("rollback", &objects::service_name(id))
                    .await
            }
            "Pod" => {
                self.delete_named::<Pod>("rollback", &objects::pod_name(id))
                    .await
            }
            _ => {
                self.delete_named::<Secret>("rollback", &objects::secret_name(id))
                    .await
            }
        }
    }

    async fn rollback(&self, id: &SandboxId, made: &CreatedObjects) {
        let steps = [
            (made.policy, "NetworkPolicy"),
            (made.service, "Service"),
            (made.pod, "Pod"),
            (made.secret, "Secret"),
        ];
        // The whole rollback is bounded too, so a hanging API server cannot hold the
        // create (and its caller) for attempts x objects x timeout.
        let deadline = tokio::time::Instant::now() + self.timeout * 2;
        for (did, kind) in steps {
            if !did {
                continue;
            }
            // A few bounded attempts: the failure that triggered the rollback is often a
            // transient API server error the next request does not hit.
            let mut last = Some(BackendError::Unavailable(
                "the rollback time budget was spent".into(),
            ));
            for attempt in 0..ROLLBACK_ATTEMPTS {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                match self.delete_kind(kind, id).await {
                    Ok(_) => {
                        last = None;
                        break;
                    }
                    Err(e @ BackendError::Unavailable(_)) => last = Some(e),
                    Err(e) => {
                        last = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = last {
                tracing::error!(sandbox_id = %id, kind, error = %e, "rollback could not delete an object; it is left behind");
            }
        }
    }

    /// Waits (watching, not polling) until the Pod is Ready, Failed or the ready timeout
    /// passes; returns the last Pod seen.
    async fn wait_ready(&self, name: &str) -> Result<Option<Pod>, BackendError> {
        let limit = Duration::from_secs(self.cfg.cfg.ready_timeout_secs);
        // The server ends each watch before the client's read timeout would.
        let server_timeout =
            u32::try_from(self.timeout.as_secs().saturating_sub(1).max(1)).unwrap_or(1);
        let wc = watcher::Config::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(server_timeout);
        let stream = watcher::watcher(self.api::<Pod>(), wc);
        let mut stream = std::pin::pin!(stream);
        let mut last: Option<Pod> = None;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = match tokio::time::timeout_at(deadline, stream.try_next()).await {
                Err(_) => return Ok(last),
                Ok(r) => r,
            };
            match next {
                Ok(Some(ev)) => {
                    let pods: Vec<Pod> = match ev {
                        watcher::Event::Apply(p) | watcher::Event::InitApply(p) => vec![p],
                        watcher::Event::Delete(_) => {
                            return Err(BackendError::Internal(format!(
                                "pod {name} was deleted while starting"
                            )));
                        }
                        watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
                    };
                    for p in pods {
                        let st = pod_status(Some(&p));
                        last = Some(p);
                        if matches!(
                            st,
                            SandboxStatus::Running
                                | SandboxStatus::Failed
                                | SandboxStatus::Succeeded
                        ) {
                            return Ok(last);
                        }
                    }
                }
                Ok(None) => return Ok(last),
                Err(e) => return Err(unavailable("watching the pod failed", e)),
            }
        }
    }

    fn record(
        &self,
        id: &SandboxId,
        svc: &Service,
        pod: Option<&Pod>,
        token: &str,
    ) -> Option<SandboxRecord> {
        let (user_id, thread_id) = owner(&svc.metadata)?;
        let sandbox_url =
            objects::sandbox_url(&self.cfg, id, &self.node_host, node_port(svc), token)?;
        Some(SandboxRecord {
            sandbox_id: id.clone(),
            user_id,
            thread_id,
            sandbox_url,
            status: pod_status(pod),
        })
    }

    async fn create_inner(
        &self,
        spec: &CreateSpec,
        made: &mut CreatedObjects,
    ) -> Result<SandboxRecord, BackendError> {
        let extra = validate_extra_mounts(&spec.extra_mounts, &spec.user_id, &self.cfg)?;
        let id = &spec.sandbox_id;
        // Reuse the token of an existing Secret so the URL of a live sandbox stays stable.
        let fresh = new_token()?;
        let probe_spec = SandboxSpec {
            id,
            user: &spec.user_id,
            thread: &spec.thread_id,
            token: &fresh,
            extra: &extra,
        };
        let (secret, created) = self
            .create_or_reuse(
                "creating the sandbox secret",
                &objects::secret(&self.cfg, &probe_spec),
                spec,
            )
            .await?;
        made.secret = created;
        let token = token_of(&secret).ok_or_else(|| {
            BackendError::Internal(format!("secret {} has no token", objects::secret_name(id)))
        })?;
        let s = SandboxSpec {
            token: &token,
            ..probe_spec
        };
        let desired = objects::pod(&self.cfg, &s);
        let (mut pod, mut created) = self
            .create_or_reuse("creating the sandbox pod", &desired, spec)
            .await?;
        if !created && made.secret {
            // A Pod left over from a partial delete holds another token (its probes and
            // environment): replace it so the new URL works.
            let name = objects::pod_name(id);
            self.delete_named::<Pod>("replacing a stale sandbox pod", &name)
                .await?;
            self.wait_deleted(&name).await?;
            (pod, created) = self
                .create_or_reuse("creating the sandbox pod", &desired, spec)
                .await?;
        }
        made.pod = created;
        let (svc, created) = self
            .create_or_reuse(
                "creating the sandbox service",
                &objects::service(&self.cfg, &s),
                spec,
            )
            .await?;
        made.service = created;
        if self.cfg.cfg.network_policy.enabled {
            let (_, created) = self
                .create_or_reuse(
                    "creating the sandbox network policy",
                    &objects::network_policy(&self.cfg, &s),
                    spec,
                )
                .await?;
            made.policy = created;
        }
        let pod = match pod_status(Some(&pod)) {
            SandboxStatus::Running => pod,
            _ => self
                .wait_ready(&objects::pod_name(id))
                .await?
                .unwrap_or(pod),
        };
        if pod_status(Some(&pod)) == SandboxStatus::Failed {
            return Err(BackendError::Internal(format!(
                "pod {} failed to start",
                objects::pod_name(id)
            )));
        }
        self.record(id, &svc, Some(&pod), &token).ok_or_else(|| {
            BackendError::Internal(format!(
                "service {} has no address yet",
                objects::service_name(id)
            ))
        })
    }

    async fn wait_deleted(&self, name: &str) -> Result<(), BackendError> {
        let limit = Duration::from_secs(self.cfg.cfg.ready_timeout_secs);
        let server_timeout =
            u32::try_from(self.timeout.as_secs().saturating_sub(1).max(1)).unwrap_or(1);
        let wc = watcher::Config::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(server_timeout);
        let mut stream = std::pin::pin!(watcher::watcher(self.api::<Pod>(), wc));
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = false;
        loop {
            match tokio::time::timeout_at(deadline, stream.try_next()).await {
                Err(_) => return Ok(()),
                Ok(Ok(Some(watcher::Event::Delete(_)))) => return Ok(()),
                Ok(Ok(Some(watcher::Event::InitApply(_)))) => seen = true,
                Ok(Ok(Some(watcher::Event::InitDone))) if !seen => return Ok(()),
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(unavailable("watching the pod deletion failed", e)),
            }
        }
    }
}

#[async_trait]
impl Backend for KubeBackend {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn capabilities(&self) -> serde_json::Value {
        serde_json::json!({
            "backend": "kubernetes",
            "namespace": self.cfg.cfg.namespace,
            "service_type": self.cfg.cfg.service_type.as_str(),
            // DeerFlow's keys: Paddock has no lark-cli init or broker image, so
            // `provision_lark_cli_runtime`/`_broker` change nothing and the gateway keeps
            // sending the lark-cli runtime and credential mounts itself.
            "lark_cli_init_image": false,
            "lark_cli_broker_image": false,
            "extra_mounts": !self.cfg.allowed_extra_mount_paths.is_empty(),
            "gateway_mounts": self
                .cfg
                .allowed_extra_mount_paths
                .iter()
                .any(|p| paddock_core::mount::GATEWAY_MOUNT_PATHS.contains(&p.as_str())),
        })
    }

    async fn create(&self, spec: &CreateSpec) -> Result<SandboxRecord, BackendError> {
        let mut made = CreatedObjects::default();
        match self.create_inner(spec, &mut made).await {
            Ok(r) => Ok(r),
            Err(e) => {
                if !matches!(e, BackendError::Invalid { .. } | BackendError::Conflict(_)) {
                    self.rollback(&spec.sandbox_id, &made).await;
                }
                Err(e)
            }
        }
    }

    async fn get(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, BackendError> {
        let Some(svc) = self
            .get_opt::<Service>("reading the sandbox service", &objects::service_name(id))
            .await?
        else {
            return Ok(None);
        };
        let pod = self
            .get_opt::<Pod>("reading the sandbox pod", &objects::pod_name(id))
            .await?;
        let Some(secret) = self
            .get_opt::<Secret>("reading the sandbox secret", &objects::secret_name(id))
            .await?
        else {
            return Ok(None);
        };
        let Some(token) = token_of(&secret) else {
            return Ok(None);
        };
        Ok(self.record(id, &svc, pod.as_ref(), &token))
    }

    async fn list(&self) -> Result<Vec<SandboxRecord>, BackendError> {
        let lp = ListParams::default().labels(MANAGED_SELECTOR);
        let (sa, pa, ka) = (
            self.api::<Service>(),
            self.api::<Pod>(),
            self.api::<Secret>(),
        );
        let (svcs, pods, secrets) = tokio::try_join!(
            self.call("listing sandbox services", sa.list(&lp)),
            self.call("listing sandbox pods", pa.list(&lp)),
            self.call("listing sandbox secrets", ka.list(&lp)),
        )?;
        let pods: HashMap<String, Pod> =
            pods.items.into_iter().map(|p| (p.name_any(), p)).collect();
        let tokens: HashMap<String, String> = secrets
            .items
            .iter()
            .filter_map(|s| Some((s.name_any(), token_of(s)?)))
            .collect();
        let mut out = Vec::new();
        for svc in &svcs.items {
            let Some(id) = svc
                .labels()
                .get("sandbox-id")
                .and_then(|v| SandboxId::new(v.clone()).ok())
            else {
                continue;
            };
            let Some(token) = tokens.get(&objects::secret_name(&id)) else {
                continue;
            };
            if let Some(r) = self.record(&id, svc, pods.get(&objects::pod_name(&id)), token) {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn destroy(&self, id: &SandboxId) -> Result<bool, BackendError> {
        let np = self
            .delete_named::<NetworkPolicy>("deleting the network policy", &objects::policy_name(id))
            .await?;
        let svc = self
            .delete_named::<Service>("deleting the service", &objects::service_name(id))
            .await?;
        let pod = self
            .delete_named::<Pod>("deleting the pod", &objects::pod_name(id))
            .await?;
        let secret = self
            .delete_named::<Secret>("deleting the secret", &objects::secret_name(id))
            .await?;
        if pod {
            // A re-create of the same id must not find the old Pod terminating.
            self.wait_deleted(&objects::pod_name(id)).await?;
        }
        Ok(np || svc || pod || secret)
    }

    async fn busy(&self, _id: &SandboxId) -> Result<bool, BackendError> {
        // Whether a Pod still runs commands is not visible through the Kubernetes API;
        // the idle reaper relies on request activity alone for this backend.
        Ok(false)
    }

    async fn shutdown(&self) {
        // Sandboxes are Pods that outlive Paddock; a restarted Paddock recovers them
        // from their labels.
        tracing::info!("kubernetes backend shut down; sandbox pods keep running");
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodStatus;

    use super::*;

    fn pod(phase: Option<&str>, ready: bool) -> Pod {
        let mut status = PodStatus {
            phase: phase.map(str::to_owned),
            ..PodStatus::default()
        };
        if ready {
            status.conditions = Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]);
        }
        Pod {
            status: Some(status),
            ..Pod::default()
        }
    }

    #[test]
    fn status_is_running_only_once_ready() {
        assert_eq!(pod_status(None), SandboxStatus::NotFound);
        assert_eq!(pod_status(Some(&Pod::default())), SandboxStatus::Pending);
        assert_eq!(
            pod_status(Some(&pod(Some("Pending"), false))),
            SandboxStatus::Pending
        );
        assert_eq!(
            pod_status(Some(&pod(Some("Running"), false))),
            SandboxStatus::Pending
        );
        assert_eq!(
            pod_status(Some(&pod(Some("Running"), true))),
            SandboxStatus::Running
        );
        assert_eq!(
            pod_status(Some(&pod(Some("Failed"), false))),
            SandboxStatus::Failed
        );
        assert_eq!(
            pod_status(Some(&pod(Some("Succeeded"), false))),
            SandboxStatus::Succeeded
        );
        assert_eq!(
            pod_status(Some(&pod(Some("Weird"), false))),
            SandboxStatus::Unknown
        );
    }
}
