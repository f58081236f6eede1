//! The local backend: each sandbox is a `LocalSandbox` (isolated process trees on this
//! host) whose agent API is served by this same process under a capability path
//! `/s/{secret}/...`, so `sandbox_url` works for unmodified AIO clients.
//!
//! Invariants: every live sandbox has a state file `{data_dir}/state/sandboxes/{id}.json`
//! (mode 0600: it holds the secret) written before the sandbox is announced, so after a
//! `kill -9` the restarted server serves the same ids at the same URLs over the same data.
//! Every request to a sandbox URL passes [`track`]: it marks the sandbox active for as long
//! as the request (or its streamed response) lasts, and an exec runs only with a permit of
//! its user's exec counter ([`crate::limits::UserExecLimits`]).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use paddock_agent::{AgentConfig, CapabilityRouter};
use paddock_core::mount::validate_custom_mounts;
use paddock_core::{
    Mount, MountPolicy, MountSpec, Sandbox, SandboxError, SandboxId, ThreadId, UserId,
};
use paddock_runtime::{LocalSandbox, Runtime};
use paddock_tools::ToolsConfig;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, CreateSpec, SandboxRecord, SandboxStatus};
use crate::limits::{ExecPermit, Guarded, Limit, UserExecLimits, UserExecs, is_exec_route};

/// How the local backend is set up.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Base of sandbox URLs (`http://127.0.0.1:8002`).
    pub public_url: String,
    /// Validation policy for extra mounts in create requests.
    pub mount_policy: MountPolicy,
    /// Custom mounts every sandbox gets (already validated).
    pub base_mounts: Vec<Mount>,
    /// The agent API's limits (the token is set per sandbox).
    pub agent: AgentConfig,
    /// The tool layer behind `/v1/tools/{name}`.
    pub tools: ToolsConfig,
    /// DeerFlow's state root (`DEER_FLOW_HOST_BASE_DIR`, canonical): users' data lives
    /// there, and the gateway's extra mounts must come from it.
    pub gateway_root: Option<PathBuf>,
    /// Most execs in flight per user across the user's sandboxes (0: no cap); more get 429
    /// naming `max_concurrent_execs_per_user`.
    pub max_concurrent_execs_per_user: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Persisted {
    sandbox_id: SandboxId,
    user_id: UserId,
    thread_id: ThreadId,
    token: String,
    extra_mounts: Vec<MountSpec>,
    created_at: u64,
}

struct Entry {
    state: Persisted,
    sandbox: Arc<LocalSandbox>,
    activity: Arc<Activity>,
}

/// When a sandbox's data plane was last used, and how many of its requests are in flight.
#[derive(Debug)]
struct Activity {
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn idle_secs(&self) -> u64 {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return 0;
        }
        now_secs().saturating_sub(self.last.load(Ordering::Relaxed))
    }
}

/// What [`track`] needs for one sandbox.
#[derive(Debug, Clone)]
struct Tracked {
    activity: Arc<Activity>,
    execs: Arc<AtomicU64>,
    user_execs: UserExecs,
    user: UserId,
}

/// One request in flight (and, for an exec, its user's permit); dropped when the response
/// body ends.
#[derive(Debug)]
struct InFlight {
    activity: Arc<Activity>,
    _permit: Option<ExecPermit>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.last.store(now_secs(), Ordering::Relaxed);
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Isolated process trees on this host.
pub struct LocalBackend {
    rt: Arc<Runtime>,
    cfg: LocalConfig,
    caps: CapabilityRouter,
    entries: Mutex<HashMap<SandboxId, Entry>>,
    execs: Arc<AtomicU64>,
    user_execs: UserExecLimits,
    state_dir: PathBuf,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend")
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A hex string of `bytes` random bytes from the kernel.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn internal(what: &str, e: impl std::fmt::Display) -> BackendError {
    tracing::error!(error = %e, "{what}");
    BackendError::Internal(what.to_owned())
}

/// The 429 of an exec past its user's cap, in the shape of the route's surface (AIO
/// envelope or native), with `detail`, `limit` and `Retry-After`.
fn exec_refused(path: &str, t: &Tracked, in_flight: usize) -> Response {
    let limit = Limit::MaxConcurrentExecsPerUser;
    let detail = format!(
        "user '{}' has {in_flight} commands running (max_concurrent_execs_per_user = {}); \
         retry when one ends",
        t.user,
        t.user_execs.max()
    );
    let aio = path.starts_with("/v1/shell/") || path.starts_with("/v1/bash/");
    let surface = if aio {
        paddock_agent::Surface::Aio
    } else {
        paddock_agent::Surface::Native
    };
    let mut body = paddock_agent::ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        detail.clone(),
    )
    .on(surface)
    .body();
    body["detail"] = serde_json::Value::String(detail.clone());
    body["limit"] = serde_json::Value::String(limit.as_str().to_owned());
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    // The request log line carries the reason (one line per refusal, no extra one).
    resp.extensions_mut().insert(crate::error::ErrorReason {
        detail,
        field: None,
        limit: Some(limit.as_str()),
    });
    resp
}

/// Every request to a sandbox URL: activity for the reaper, the exec count, and the
/// user's exec permit for commands. Hot path: a few atomics and one boxed body.
async fn track(
    axum::extract::State(t): axum::extract::State<Tracked>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let permit = if is_exec_route(path) {
        match t.user_execs.try_acquire() {
            Ok(p) => Some(p),
            Err(in_flight) => return exec_refused(path, &t, in_flight),
        }
    } else {
        None
    };
    if permit.is_some() {
        t.execs.fetch_add(1, Ordering::Relaxed);
    }
    t.activity.last.store(now_secs(), Ordering::Relaxed);
    t.activity.in_flight.fetch_add(1, Ordering::AcqRel);
    let guard = InFlight {
        activity: t.activity.clone(),
        _permit: permit,
    };
    let resp = next.run(req).await;
    resp.map(|body| Guarded::wrap(body, guard))
}

impl LocalBackend {
    /// Opens the backend over `rt` and re-creates every sandbox recorded in the data dir.
    pub async fn open(rt: Arc<Runtime>, cfg: LocalConfig) -> Result<Self, BackendError> {
        let state_dir = rt.layout().root().join("state").join("sandboxes");
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| internal("could not create the state directory", e))?;
        let user_execs = UserExecLimits::new(cfg.max_concurrent_execs_per_user);
        let this = Self {
            rt,
            cfg,
            caps: CapabilityRouter::new(),
            user_execs,
            entries: Mutex::new(HashMap::new()),
            execs: Arc::new(AtomicU64::new(0)),
            state_dir,
        };
        this.recover().await?;
        Ok(this)
    }

    /// The data-plane router (`/s/{secret}/...`) to merge into the server.
    pub fn data_plane(&self) -> Router {
        self.caps.router()
    }

    fn state_path(&self, id: &SandboxId) -> PathBuf {
        self.state_dir.join(format!("{id}.json"))
    }

    async fn recover(&self) -> Result<(), BackendError> {
        let rd = std::fs::read_dir(&self.state_dir)
            .map_err(|e| internal("could not read the state directory", e))?;
        let mut recovered = 0;
        for entry in rd.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let state: Persisted = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping an unreadable sandbox state file");
                    continue;
                }
            };
            match self.start(state.clone()).await {
                Ok(()) => recovered += 1,
                Err(e) => {
                    tracing::warn!(sandbox_id = %state.sandbox_id, error = %e, "could not recover sandbox")
                }
            }
        }
        if recovered > 0 {
            tracing::info!(recovered, "recovered sandboxes from the data dir");
        }
        Ok(())
    }

    /// The mounts of a sandbox: the operator's, then the request's. A request mount at one of
    /// DeerFlow's gateway paths is validated as DeerFlow's provisioner does (under the
    /// gateway's state root) and replaces the built-in mount at its path; any other is a
    /// custom mount under `allowed_host_roots`.
    fn mounts_for(&self, user: &UserId, extra: &[MountSpec]) -> Result<Vec<Mount>, BackendError> {
        let invalid = |e: paddock_core::mount::MountError| BackendError::Invalid {
            field: format!("extra_mounts[{}]", e.index),
            message: e.to_string(),
        };
        type Indexed<'a> = Vec<(usize, &'a MountSpec)>;
        let (gateway, custom): (Indexed<'_>, Indexed<'_>) =
            extra.iter().enumerate().partition(|(_, m)| {
                paddock_core::mount::gateway_container_path(&m.container_path).is_some()
            });
        let gateway = paddock_core::mount::validate_gateway_mounts(
            &gateway,
            user,
            self.cfg.gateway_root.as_deref(),
        )
        .map_err(invalid)?;
        let custom_specs: Vec<MountSpec> = custom.iter().map(|(_, m)| (*m).clone()).collect();
        let validated =
            validate_custom_mounts(&custom_specs, &self.cfg.mount_policy).map_err(|mut e| {
                // Name the mount by its index in the request.
                e.index = custom.get(e.index).map_or(e.index, |(i, _)| *i);
                invalid(e)
            })?;
        let mut all = self.cfg.base_mounts.clone();
        for (k, m) in validated.into_iter().chain(gateway).enumerate() {
            if all.iter().any(|b| b.container == m.container) {
                return Err(BackendError::Invalid {
                    field: format!("extra_mounts[{k}]"),
                    message: format!(
                        "mount {k} ({}): container_path is used by a configured mount",
                        m.container
                    ),
                });
            }
            all.push(m);
        }
        Ok(all)
    }

    /// Prepares the sandbox and serves its agent routes under its secret.
    async fn start(&self, state: Persisted) -> Result<(), BackendError> {
        let mounts = self.mounts_for(&state.user_id, &state.extra_mounts)?;
        let rt = self.rt.clone();
        let (u, t) = (state.user_id.clone(), state.thread_id.clone());
        let sandbox =
            tokio::task::spawn_blocking(move || LocalSandbox::prepare(rt, &u, &t, mounts))
                .await
                .map_err(|e| internal("sandbox preparation panicked", e))?
                .map_err(|e| match e {
                    SandboxError::InvalidArgument { field, message } => {
                        BackendError::Invalid { field, message }
                    }
                    // The thread cannot be served now (its data does not fit its disk
                    // quota, …): the message says why, without host paths.
                    SandboxError::Unavailable { message } => {
                        tracing::warn!(%message, "sandbox refused");
                        BackendError::Unavailable(message)
                    }
                    other => internal("could not prepare the sandbox", other),
                })?;
        let sandbox = Arc::new(sandbox);
        // The jail is built now, so the first command finds it ready.
        sandbox.start_jail();
        let dyn_sb: Arc<dyn Sandbox> = sandbox.clone();
        let agent = AgentConfig {
            token: None,
            tools: Some(self.cfg.tools.clone()),
            ..self.cfg.agent.clone()
        };
        let activity = Arc::new(Activity {
            last: AtomicU64::new(now_secs()),
            in_flight: AtomicUsize::new(0),
        });
        let tracked = Tracked {
            activity: activity.clone(),
            execs: self.execs.clone(),
            user_execs: self.user_execs.for_user(&state.user_id),
            user: state.user_id.clone(),
        };
        let router = paddock_agent::routes(dyn_sb, agent)
            .layer(middleware::from_fn_with_state(tracked, track));
        self.caps.insert(state.token.clone(), router);
        let id = state.sandbox_id.clone();
        let entry = Entry {
            state,
            sandbox,
            activity,
        };
        self.entries
            .lock()
            .map_err(|_| internal("lock poisoned", "entries"))?
            .insert(id, entry);
        Ok(())
    }

    fn record(&self, state: &Persisted) -> SandboxRecord {
        SandboxRecord {
            sandbox_id: state.sandbox_id.clone(),
            user_id: state.user_id.clone(),
            thread_id: state.thread_id.clone(),
            sandbox_url: format!(
                "{}/s/{}",
                self.cfg.public_url.trim_end_matches('/'),
                state.token
            ),
            status: SandboxStatus::Running,
        }
    }

    fn persist(&self, state: &Persisted) -> Result<(), BackendError> {
        let path = self.state_path(&state.sandbox_id);
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| internal("could not encode sandbox state", e))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| internal("could not write sandbox state", e))
    }

    fn entry_record(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, BackendError> {
        let entries = self
            .entries
            .lock()
            .map_err(|_| internal("lock poisoned", "entries"))?;
        Ok(entries.get(id).map(|e| self.record(&e.state)))
    }
}

fn remove_file_if_exists(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn capabilities(&self) -> serde_json::Value {
        serde_json::json!({
            "backend": "local",
            "isolation": self.rt.isolation().as_str(),
            // DeerFlow's keys: no lark-cli init or broker image is configured here, so the
            // gateway keeps mounting the lark-cli runtime and credentials itself.
            "lark_cli_init_image": false,
            "lark_cli_broker_image": false,
            "extra_mounts": !self.cfg.mount_policy.allowed_host_roots.is_empty(),
            "gateway_mounts": self.cfg.gateway_root.is_some(),
        })
    }

    async fn create(&self, spec: &CreateSpec) -> Result<SandboxRecord, BackendError> {
        {
            let entries = self
                .entries
                .lock()
                .map_err(|_| internal("lock poisoned", "entries"))?;
            if let Some(e) = entries.get(&spec.sandbox_id) {
                if e.state.user_id != spec.user_id || e.state.thread_id != spec.thread_id {
                    return Err(BackendError::Conflict(format!(
                        "sandbox '{}' already belongs to another user or thread",
                        spec.sandbox_id
                    )));
                }
                return Ok(self.record(&e.state));
            }
        }
        let token =
            random_hex(24).map_err(|e| internal("no randomness for the sandbox secret", e))?;
        let state = Persisted {
            sandbox_id: spec.sandbox_id.clone(),
            user_id: spec.user_id.clone(),
            thread_id: spec.thread_id.clone(),
            token,
            extra_mounts: spec.extra_mounts.clone(),
            created_at: now_secs(),
        };
        self.start(state.clone()).await?;
        if let Err(e) = self.persist(&state) {
            // Not announced: roll back what start made.
            self.caps.remove(&state.token);
            if let Ok(mut entries) = self.entries.lock() {
                entries.remove(&state.sandbox_id);
            }
            return Err(e);
        }
        Ok(self.record(&state))
    }

    async fn get(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, BackendError> {
        self.entry_record(id)
    }

    async fn list(&self) -> Result<Vec<SandboxRecord>, BackendError> {
        let entries = self
            .entries
            .lock()
            .map_err(|_| internal("lock poisoned", "entries"))?;
        Ok(entries.values().map(|e| self.record(&e.state)).collect())
    }

    async fn destroy(&self, id: &SandboxId) -> Result<bool, BackendError> {
        let entry = self
            .entries
            .lock()
            .map_err(|_| internal("lock poisoned", "entries"))?
            .remove(id);
        let existed = entry.is_some();
        if let Some(e) = entry {
            self.caps.remove(&e.state.token);
            let sb = e.sandbox.clone();
            tokio::task::spawn_blocking(move || sb.kill_all())
                .await
                .map_err(|e| internal("killing sandbox processes panicked", e))?;
        }
        remove_file_if_exists(&self.state_path(id))
            .map_err(|e| internal("could not remove sandbox state", e))?;
        Ok(existed)
    }

    async fn busy(&self, id: &SandboxId) -> Result<bool, BackendError> {
        let entries = self
            .entries
            .lock()
            .map_err(|_| internal("lock poisoned", "entries"))?;
        Ok(entries
            .get(id)
            .is_some_and(|e| !e.sandbox.running().is_empty()))
    }

    fn idle_secs(&self, id: &SandboxId) -> Option<u64> {
        let entries = self.entries.lock().ok()?;
        Some(entries.get(id)?.activity.idle_secs())
    }

    fn age_secs(&self, id: &SandboxId) -> Option<u64> {
        let entries = self.entries.lock().ok()?;
        Some(now_secs().saturating_sub(entries.get(id)?.state.created_at))
    }

    fn exec_count(&self) -> u64 {
        self.execs.load(Ordering::Relaxed)
    }

    fn exec_limit_refusals(&self) -> u64 {
        self.user_execs.refusals()
    }

    async fn shutdown(&self) {
        let sandboxes: Vec<Arc<LocalSandbox>> = match self.entries.lock() {
            Ok(e) => e.values().map(|e| e.sandbox.clone()).collect(),
            Err(_) => return,
        };
        let _ = tokio::task::spawn_blocking(move || {
            for sb in sandboxes {
                sb.kill_all();
            }
        })
        .await;
    }
}
