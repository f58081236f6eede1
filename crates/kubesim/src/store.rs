//! The simulator's object store and REST handlers: create/get/list/replace/patch/delete
//! and watch over namespaces, nodes, pods, services, persistentvolumeclaims, secrets,
//! configmaps and networkpolicies.
//!
//! Invariant: all state changes happen under one mutex, each taking the next
//! `resourceVersion` and appending one event to the bounded log (older versions answer
//! 410 Expired); a NodePort is allocated to at most one Service.

// Handlers return ready `Response`s as their error type: they are the HTTP answer, built
// once per failed request, so boxing them would only add an allocation.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::kubelet::Kubelet;
use crate::select;

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Run each Pod as a `paddock agent` process and serve NodePorts on 127.0.0.1.
    pub run_pods: bool,
    /// The `paddock` binary for `run_pods`.
    pub paddock_bin: PathBuf,
    /// Where PVC-backed volumes live: `{pv_root}/{claimName}/{subPath}`.
    pub pv_root: PathBuf,
    /// Added latency per request.
    pub latency: Duration,
    /// Fraction of requests answered 500.
    pub error_rate: f64,
    /// Delay before a (not run) Pod turns Running.
    pub pod_start: Duration,
    /// Namespaces that exist at start.
    pub namespaces: Vec<String>,
    /// Events kept for watches resuming from an old version.
    pub event_log: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            run_pods: false,
            paddock_bin: PathBuf::from("paddock"),
            pv_root: std::env::temp_dir().join("paddock-kubesim-pv"),
            latency: Duration::ZERO,
            error_rate: 0.0,
            pod_start: Duration::from_millis(100),
            namespaces: vec!["default".into(), "deer-flow".into()],
            event_log: 10_000,
        }
    }
}

/// A resource kind the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// URL plural.
    pub plural: &'static str,
    /// `kind`.
    pub kind: &'static str,
    /// `apiVersion`.
    pub api_version: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
}

const KINDS: &[Kind] = &[
    Kind {
        plural: "namespaces",
        kind: "Namespace",
        api_version: "v1",
        namespaced: false,
    },
    Kind {
        plural: "nodes",
        kind: "Node",
        api_version: "v1",
        namespaced: false,
    },
    Kind {
        plural: "pods",
        kind: "Pod",
        api_version: "v1",
        namespaced: true,
    },
    Kind {
        plural: "services",
        kind: "Service",
        api_version: "v1",
        namespaced: true,
    },
    Kind {
        plural: "persistentvolumeclaims",
        kind: "PersistentVolumeClaim",
        api_version: "v1",
        namespaced: true,
    },
    Kind {
        plural: "secrets",
        kind: "Secret",
        api_version: "v1",
        namespaced: true,
    },
    Kind {
        plural: "configmaps",
        kind: "ConfigMap",
        api_version: "v1",
        namespaced: true,
    },
    Kind {
        plural: "networkpolicies",
        kind: "NetworkPolicy",
        api_version: "networking.k8s.io/v1",
        namespaced: true,
    },
];

fn kind_of(group_version: &str, plural: &str) -> Option<Kind> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.plural == plural && k.api_version == group_version)
}

type Key = (&'static str, String, String);

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its resource version.
    pub rv: u64,
    /// The kind's plural.
    pub plural: &'static str,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object after the change.
    pub object: Value,
}

struct State0 {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    log: VecDeque<Event>,
    node_ports: BTreeSet<i64>,
    next_ip: u32,
}

/// The simulator's state.
pub struct Sim {
    pub(crate) opts: SimOptions,
    state: Mutex<State0>,
    events: broadcast::Sender<Event>,
    end: broadcast::Sender<()>,
    latency_ms: AtomicU64,
    error_ppm: AtomicU64,
    rng: AtomicU64,
    uid: AtomicU64,
    pub(crate) kubelet: Kubelet,
    /// Requests served, for assertions.
    pub requests: AtomicU64,
    rules: Mutex<Vec<FaultRule>>,
}

/// A targeted fault: the next `count` requests with this method whose path contains
/// `path_contains` get a 500.
#[derive(Debug, Clone)]
struct FaultRule {
    method: Method,
    path_contains: String,
    count: usize,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("opts", &self.opts).finish()
    }
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    paddock_core::time::iso8601(secs)
}

/// A Kubernetes `Status` error response.
pub fn status(code: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.into(),
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

fn not_found(kind: &Kind, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", kind.plural),
    )
}

fn invalid(kind: &Kind, name: &str, causes: &[String]) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("{} \"{name}\" is invalid: {}", kind.kind, causes.join(", ")),
        "reason": "Invalid",
        "details": {"name": name, "kind": kind.plural, "causes": causes.iter().map(|c| json!({"message": c})).collect::<Vec<_>>()},
        "code": 422,
    });
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
}

fn is_dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    (1..=max).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| is_dns_label(l, 63))
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl Sim {
    /// A simulator with one node (`sim-node`, InternalIP 127.0.0.1) and the configured
    /// namespaces.
    pub fn new(opts: SimOptions) -> Arc<Self> {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        let (events, _) = broadcast::channel(4096);
        let (end, _) = broadcast::channel(4);
        let sim = Arc::new(Self {
            latency_ms: AtomicU64::new(opts.latency.as_millis() as u64),
            error_ppm: AtomicU64::new((opts.error_rate.clamp(0.0, 1.0) * 1e6) as u64),
            opts,
            state: Mutex::new(State0 {
                objects: BTreeMap::new(),
                rv: 0,
                log: VecDeque::new(),
                node_ports: BTreeSet::new(),
                next_ip: 2,
            }),
            events,
            end,
            rng: AtomicU64::new(seed),
            uid: AtomicU64::new(0),
            kubelet: Kubelet::default(),
            requests: AtomicU64::new(0),
            rules: Mutex::new(Vec::new()),
        });
        for ns in sim.opts.namespaces.clone() {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}, "status": {"phase": "Active"}});
            sim.insert_new(&KINDS[0], None, obj);
        }
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "sim-node", "labels": {"kubernetes.io/hostname": "sim-node"}},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "sim-node"}],
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        });
        sim.insert_new(&KINDS[1], None, node);
        sim
    }

    /// Sets the added latency.
    pub fn set_latency(&self, d: Duration) {
        self.latency_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Sets the fraction of requests answered 500.
    pub fn set_error_rate(&self, rate: f64) {
        self.error_ppm
            .store((rate.clamp(0.0, 1.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Answers the next `count` requests of `method` whose path contains `path_contains`
    /// with a 500 (for testing what a client does when one step of a sequence fails).
    pub fn fail_next(&self, method: &str, path_contains: &str, count: usize) {
        if let (Ok(m), Ok(mut r)) = (Method::from_bytes(method.as_bytes()), self.rules.lock()) {
            r.push(FaultRule {
                method: m,
                path_contains: path_contains.to_owned(),
                count,
            });
        }
    }

    fn targeted_fault(&self, method: &Method, path: &str) -> bool {
        let Ok(mut rules) = self.rules.lock() else {
            return false;
        };
        let hit = rules
            .iter_mut()
            .find(|r| r.count > 0 && r.method == *method && path.contains(&r.path_contains));
        match hit {
            Some(r) => {
                r.count -= 1;
                true
            }
            None => false,
        }
    }

    fn roll(&self) -> u64 {
        // xorshift64: fault injection needs spread, not cryptographic strength.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        x % 1_000_000
    }

    pub(crate) fn end_watches(&self) {
        let _ = self.end.send(());
    }

    /// Kills every agent process now, without waiting for them.
    pub(crate) fn kill_all_now(&self) {
        self.kubelet.kill_all_now();
    }

    pub(crate) async fn kill_all(&self) {
        self.kubelet.kill_all().await;
    }

    fn next_uid(&self) -> String {
        let n = self.uid.fetch_add(1, Ordering::Relaxed) + 1;
        let r = self.roll();
        format!("{:08x}-0000-4000-8000-{:012x}", r, n)
    }

    /// Names of the objects of `plural` in `ns` (for assertions).
    pub fn names(&self, plural: &str, ns: &str) -> Vec<String> {
        match self.state.lock() {
            Ok(s) => s
                .objects
                .keys()
                .filter(|(p, n, _)| *p == plural && n == ns)
                .map(|(_, _, name)| name.clone())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The stored object.
    pub fn object(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let kind = KINDS.iter().find(|k| k.plural == plural)?;
        let s = self.state.lock().ok()?;
        s.objects
            .get(&(kind.plural, ns.to_owned(), name.to_owned()))
            .cloned()
    }

    fn record(&self, s: &mut State0, plural: &'static str, kind: &'static str, object: Value) {
        let ev = Event {
            rv: s.rv,
            plural,
            kind,
            object,
        };
        s.log.push_back(ev.clone());
        while s.log.len() > self.opts.event_log {
            s.log.pop_front();
        }
        let _ = self.events.send(ev);
    }

    fn stamp(&self, s: &mut State0, obj: &mut Value) {
        s.rv += 1;
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), Value::String(s.rv.to_string()));
        }
    }

    fn insert_new(&self, kind: &Kind, ns: Option<&str>, mut obj: Value) -> Value {
        let name = select::field(&obj, "metadata.name").unwrap_or_default();
        let uid = self.next_uid();
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("uid".into(), Value::String(uid));
            m.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
            m.insert("generation".into(), json!(1));
            if let Some(ns) = ns {
                m.insert("namespace".into(), Value::String(ns.to_owned()));
            }
        }
        obj["kind"] = Value::String(kind.kind.to_owned());
        obj["apiVersion"] = Value::String(kind.api_version.to_owned());
        let Ok(mut s) = self.state.lock() else {
            return obj;
        };
        self.stamp(&mut s, &mut obj);
        s.objects.insert(
            (kind.plural, ns.unwrap_or("").to_owned(), name),
            obj.clone(),
        );
        self.record(&mut s, kind.plural, "ADDED", obj.clone());
        obj
    }

    /// Applies `f` to the stored object and records a MODIFIED event; `None` when gone
    /// or when `uid` no longer matches (a re-created object of the same name).
    pub(crate) fn modify(
        &self,
        plural: &'static str,
        ns: &str,
        name: &str,
        uid: Option<&str>,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let mut s = self.state.lock().ok()?;
        let key = (plural, ns.to_owned(), name.to_owned());
        let mut obj = s.objects.get(&key)?.clone();
        if let Some(u) = uid
            && select::field(&obj, "metadata.uid").as_deref() != Some(u)
        {
            return None;
        }
        f(&mut obj);
        self.stamp(&mut s, &mut obj);
        s.objects.insert(key, obj.clone());
        self.record(&mut s, plural, "MODIFIED", obj.clone());
        Some(obj)
    }

    fn exists(&self, plural: &'static str, ns: &str, name: &str) -> bool {
        self.state
            .lock()
            .map(|s| {
                s.objects
                    .contains_key(&(plural, ns.to_owned(), name.to_owned()))
            })
            .unwrap_or(false)
    }

    /// Objects of `plural` in `ns` (every namespace when `None`) that match both
    /// selectors, with the current resource version.
    pub(crate) fn list_matching(
        &self,
        plural: &'static str,
        ns: Option<&str>,
        labels: &[select::Req],
        fields: &[select::Req],
    ) -> (Vec<Value>, u64) {
        let Ok(s) = self.state.lock() else {
            return (Vec::new(), 0);
        };
        let items = s
            .objects
            .iter()
            .filter(|((p, n, _), _)| *p == plural && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
            .filter(|v| object_matches(v, labels, fields))
            .cloned()
            .collect();
        (items, s.rv)
    }
}

fn object_matches(v: &Value, labels: &[select::Req], fields: &[select::Req]) -> bool {
    let l = select::labels(v);
    select::matches(labels, |k| l.get(k).cloned())
        && select::matches(fields, |k| select::field(v, k))
}

fn pod_causes(obj: &Value) -> Vec<String> {
    let mut causes = Vec::new();
    let spec = &obj["spec"];
    let volumes: Vec<String> = spec["volumes"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|v| v["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut seen_vol = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        if !is_dns_label(v, 63) {
            causes.push(format!("spec.volumes[{i}].name: Invalid value: {v:?}"));
        }
        if !seen_vol.insert(v.clone()) {
            causes.push(format!("spec.volumes[{i}].name: Duplicate value: {v:?}"));
        }
    }
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push("spec.containers: Required value".into());
    }
    for (ci, c) in containers.iter().enumerate() {
        if c["name"].as_str().is_none_or(|n| !is_dns_label(n, 63)) {
            causes.push(format!("spec.containers[{ci}].name: Invalid value"));
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            causes.push(format!("spec.containers[{ci}].image: Required value"));
        }
        let mut paths = BTreeSet::new();
        for (mi, m) in c["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let name = m["name"].as_str().unwrap_or_default();
            let path = m["mountPath"].as_str().unwrap_or_default();
            if !volumes.iter().any(|v| v == name) {
                causes.push(format!(
                    "spec.containers[{ci}].volumeMounts[{mi}].name: Not found: {name:?}"
                ));
            }
            if !path.starts_with('/') {
                causes.push(format!(
                    "spec.containers[{ci}].volumeMounts[{mi}].mountPath: Invalid value: {path:?}"
                ));
            }
            if !paths.insert(path.trim_end_matches('/').to_owned()) {
                causes.push(format!("spec.containers[{ci}].volumeMounts[{mi}].mountPath: Invalid value: {path:?}: must be unique"));
            }
        }
    }
    causes
}

fn query_map(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    Some((decode(k)?, decode(v)?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The simulator's router.
pub fn router(sim: Arc<Sim>) -> Router {
    Router::new().fallback(handle).with_state(sim)
}

struct Target {
    kind: Kind,
    ns: Option<String>,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest): (String, &[&str]) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".into(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    match rest {
        ["namespaces"] => Some(Target {
            kind: kind_of(&gv, "namespaces")?,
            ns: None,
            name: None,
        }),
        ["namespaces", ns] => Some(Target {
            kind: kind_of(&gv, "namespaces")?,
            ns: None,
            name: Some((*ns).into()),
        }),
        ["namespaces", ns, plural] => Some(Target {
            kind: kind_of(&gv, plural)?,
            ns: Some((*ns).into()),
            name: None,
        }),
        ["namespaces", ns, plural, name] => Some(Target {
            kind: kind_of(&gv, plural)?,
            ns: Some((*ns).into()),
            name: Some((*name).into()),
        }),
        [plural] => Some(Target {
            kind: kind_of(&gv, plural)?,
            ns: None,
            name: None,
        }),
        [plural, name] => {
            let k = kind_of(&gv, plural)?;
            (!k.namespaced).then(|| Target {
                kind: k,
                ns: None,
                name: Some((*name).into()),
            })
        }
        _ => None,
    }
}

async fn handle(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.requests.fetch_add(1, Ordering::Relaxed);
    let lat = sim.latency_ms.load(Ordering::Relaxed);
    if lat > 0 {
        tokio::time::sleep(Duration::from_millis(lat)).await;
    }
    let ppm = sim.error_ppm.load(Ordering::Relaxed);
    if ppm > 0 && sim.roll() < ppm {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "injected fault",
        );
    }
    let path = uri.path();
    if sim.targeted_fault(&method, path) {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "injected fault",
        );
    }
    match path {
        "/version" => {
            return axum::Json(json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-paddock-kubesim", "platform": "linux/amd64"})).into_response();
        }
        "/api" => return axum::Json(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        )
        .into_response(),
        "/apis" => {
            return axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": "networking.k8s.io", "versions": [{"groupVersion": "networking.k8s.io/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "networking.k8s.io/v1", "version": "v1"}}]})).into_response();
        }
        "/healthz" | "/readyz" | "/livez" => return "ok".into_response(),
        _ => {}
    }
    let Some(t) = parse_path(path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        );
    };
    let q = query_map(&uri);
    if t.kind.namespaced
        && let Some(ns) = &t.ns
        && !sim.exists("namespaces", "", ns)
        && method != Method::GET
    {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
        );
    }
    match (method, &t.name) {
        (Method::GET, None) => {
            let labels =
                match select::parse(q.get("labelSelector").map(String::as_str).unwrap_or("")) {
                    Ok(l) => l,
                    Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e),
                };
            let fields =
                match select::parse(q.get("fieldSelector").map(String::as_str).unwrap_or("")) {
                    Ok(l) => l,
                    Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e),
                };
            if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
                return watch(sim, t, q, labels, fields);
            }
            let (items, rv) = sim.list_matching(t.kind.plural, t.ns.as_deref(), &labels, &fields);
            axum::Json(json!({
                "kind": format!("{}List", t.kind.kind),
                "apiVersion": t.kind.api_version,
                "metadata": {"resourceVersion": rv.to_string()},
                "items": items,
            }))
            .into_response()
        }
        (Method::GET, Some(name)) => {
            match sim.object(t.kind.plural, t.ns.as_deref().unwrap_or(""), name) {
                Some(o) => axum::Json(o).into_response(),
                None => not_found(&t.kind, name),
            }
        }
        (Method::POST, None) => create(&sim, &t, &body).await,
        (Method::PUT, Some(name)) => replace(&sim, &t, name, &body),
        (Method::PATCH, Some(name)) => patch(&sim, &t, name, &headers, &body, &q).await,
        (Method::DELETE, Some(name)) => delete(&sim, &t, name).await,
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body must be a JSON object",
        )),
        Err(e) => Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("could not decode the body: {e}"),
        )),
    }
}

fn validate(sim: &Sim, t: &Target, obj: &mut Value, ns: &str) -> Result<(), Response> {
    let name = select::field(obj, "metadata.name").unwrap_or_default();
    let name_ok = match t.kind.plural {
        "services" | "namespaces" => is_dns_label(&name, 63),
        _ => is_dns_subdomain(&name) && !name.is_empty(),
    };
    if !name_ok {
        return Err(invalid(
            &t.kind,
            &name,
            &[format!(
                "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.'"
            )],
        ));
    }
    if let Some(body_ns) = select::field(obj, "metadata.namespace")
        && t.kind.namespaced
        && body_ns != ns
    {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if t.kind.plural == "pods" {
        let causes = pod_causes(obj);
        if !causes.is_empty() {
            return Err(invalid(&t.kind, &name, &causes));
        }
        obj["status"] = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}], "qosClass": "Burstable"});
    }
    if t.kind.plural == "persistentvolumeclaims" {
        obj["status"] = json!({"phase": "Bound"});
    }
    if t.kind.plural == "services" {
        allocate_ports(sim, &t.kind, &name, obj)?;
    }
    Ok(())
}

/// Whether 127.0.0.1:`port` can be bound now. In kubelet mode NodePorts are served on the
/// host's loopback, so a port another process (or another simulator in the same test run)
/// already serves must not be handed out: requests would reach the wrong sandbox.
fn host_port_free(port: i64) -> bool {
    u16::try_from(port).is_ok_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
}

fn allocate_ports(sim: &Sim, kind: &Kind, name: &str, obj: &mut Value) -> Result<(), Response> {
    let ty = obj["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_owned();
    if obj["spec"].is_null() {
        obj["spec"] = json!({});
    }
    let Ok(mut s) = sim.state.lock() else {
        return Err(status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "state lock poisoned",
        ));
    };
    let ip = s.next_ip;
    s.next_ip += 1;
    obj["spec"]["clusterIP"] = json!(format!("10.96.{}.{}", (ip >> 8) & 255, ip & 255));
    obj["spec"]["type"] = json!(ty);
    let mut taken: Vec<i64> = Vec::new();
    let ports = obj["spec"]["ports"].as_array_mut();
    let Some(ports) = ports else {
        return Err(invalid(kind, name, &["spec.ports: Required value".into()]));
    };
    for (i, p) in ports.iter_mut().enumerate() {
        if p["targetPort"].is_null() {
            p["targetPort"] = p["port"].clone();
        }
        if p["protocol"].is_null() {
            p["protocol"] = json!("TCP");
        }
        if ty != "NodePort" && ty != "LoadBalancer" {
            continue;
        }
        let np = match p["nodePort"].as_i64() {
            Some(n) => {
                if !(30000..=32767).contains(&n) {
                    return Err(invalid(
                        kind,
                        name,
                        &[format!(
                            "spec.ports[{i}].nodePort: Invalid value: {n}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                        )],
                    ));
                }
                if s.node_ports.contains(&n) || taken.contains(&n) {
                    return Err(invalid(
                        kind,
                        name,
                        &[format!(
                            "spec.ports[{i}].nodePort: Invalid value: {n}: provided port is already allocated"
                        )],
                    ));
                }
                n
            }
            None => {
                let start = 30000 + (sim.roll() % 2768) as i64;
                let found = (0..2768)
                    .map(|o| 30000 + (start - 30000 + o) % 2768)
                    .find(|n| {
                        !s.node_ports.contains(n)
                            && !taken.contains(n)
                            && (!sim.opts.run_pods || host_port_free(*n))
                    });
                match found {
                    Some(n) => n,
                    None => {
                        return Err(status(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "InternalError",
                            "range of valid NodePorts is full",
                        ));
                    }
                }
            }
        };
        taken.push(np);
        p["nodePort"] = json!(np);
    }
    s.node_ports.extend(taken);
    obj["status"] = json!({"loadBalancer": {}});
    Ok(())
}

fn release_ports(sim: &Sim, obj: &Value) {
    if let (Some(ports), Ok(mut s)) = (obj["spec"]["ports"].as_array(), sim.state.lock()) {
        for p in ports {
            if let Some(n) = p["nodePort"].as_i64() {
                s.node_ports.remove(&n);
            }
        }
    }
}

async fn create(sim: &Arc<Sim>, t: &Target, body: &Bytes) -> Response {
    let mut obj = match parse_body(body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let ns = t.ns.clone().unwrap_or_default();
    if obj["metadata"].is_null() {
        obj["metadata"] = json!({});
    }
    if select::field(&obj, "metadata.name").is_none()
        && let Some(prefix) = select::field(&obj, "metadata.generateName")
    {
        let suffix: String = (0..5)
            .map(|_| {
                let c = b"bcdfghjklmnpqrstvwxz2456789"[(sim.roll() % 27) as usize];
                c as char
            })
            .collect();
        obj["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
    }
    let name = select::field(&obj, "metadata.name").unwrap_or_default();
    if sim.exists(t.kind.plural, &ns, &name) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", t.kind.plural),
        );
    }
    if let Err(r) = validate(sim, t, &mut obj, &ns) {
        return r;
    }
    // Re-check under the store lock: two creates of one name race only here.
    let stored = {
        let key = (t.kind.plural, ns.clone(), name.clone());
        let taken = sim
            .state
            .lock()
            .map(|s| s.objects.contains_key(&key))
            .unwrap_or(true);
        if taken {
            if t.kind.plural == "services" {
                release_ports(sim, &obj);
            }
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", t.kind.plural),
            );
        }
        sim.insert_new(&t.kind, t.kind.namespaced.then_some(ns.as_str()), obj)
    };
    match t.kind.plural {
        "pods" => crate::kubelet::pod_created(sim.clone(), &ns, &stored),
        "services" => crate::kubelet::service_created(sim.clone(), &ns, &stored).await,
        _ => {}
    }
    (StatusCode::CREATED, axum::Json(stored)).into_response()
}

fn replace(sim: &Sim, t: &Target, name: &str, body: &Bytes) -> Response {
    let obj = match parse_body(body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let ns = t.ns.clone().unwrap_or_default();
    let Some(current) = sim.object(t.kind.plural, &ns, name) else {
        return not_found(&t.kind, name);
    };
    if let Some(rv) = select::field(&obj, "metadata.resourceVersion")
        && select::field(&current, "metadata.resourceVersion").as_deref() != Some(rv.as_str())
    {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                t.kind.plural
            ),
        );
    }
    let keep = current["metadata"].clone();
    match sim.modify(t.kind.plural, &ns, name, None, |o| {
        let status_keep = o["status"].clone();
        *o = obj;
        o["metadata"]["uid"] = keep["uid"].clone();
        o["metadata"]["creationTimestamp"] = keep["creationTimestamp"].clone();
        o["metadata"]["namespace"] = keep["namespace"].clone();
        o["metadata"]["name"] = json!(name);
        o["kind"] = json!(t.kind.kind);
        o["apiVersion"] = json!(t.kind.api_version);
        if o["status"].is_null() {
            o["status"] = status_keep;
        }
    }) {
        Some(o) => axum::Json(o).into_response(),
        None => not_found(&t.kind, name),
    }
}

async fn patch(
    sim: &Arc<Sim>,
    t: &Target,
    name: &str,
    headers: &HeaderMap,
    body: &Bytes,
    q: &BTreeMap<String, String>,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ns = t.ns.clone().unwrap_or_default();
    let patch = if ct.starts_with("application/apply-patch") {
        // kube-rs and kubectl send apply patches as JSON (a YAML subset).
        match parse_body(body) {
            Ok(p) => p,
            Err(r) => return r,
        }
    } else if ct.starts_with("application/merge-patch+json")
        || ct.starts_with("application/strategic-merge-patch+json")
    {
        match serde_json::from_slice::<Value>(body) {
            Ok(p) => p,
            Err(e) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("could not decode the patch: {e}"),
                );
            }
        }
    } else {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {ct:?})"
            ),
        );
    };
    if !sim.exists(t.kind.plural, &ns, name) {
        if ct.starts_with("application/apply-patch") {
            if q.get("fieldManager").is_none_or(String::is_empty) {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                );
            }
            let mut obj = patch;
            obj["metadata"]["name"] = json!(name);
            return create(sim, t, &Bytes::from(obj.to_string())).await;
        }
        return not_found(&t.kind, name);
    }
    match sim.modify(t.kind.plural, &ns, name, None, |o| {
        let keep = o["metadata"].clone();
        merge_patch(o, &patch);
        for k in ["uid", "creationTimestamp", "namespace", "name"] {
            o["metadata"][k] = keep[k].clone();
        }
    }) {
        Some(o) => axum::Json(o).into_response(),
        None => not_found(&t.kind, name),
    }
}

async fn delete(sim: &Arc<Sim>, t: &Target, name: &str) -> Response {
    let ns = t.ns.clone().unwrap_or_default();
    let removed = {
        let Ok(mut s) = sim.state.lock() else {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "state lock poisoned",
            );
        };
        let key = (t.kind.plural, ns.clone(), name.to_owned());
        match s.objects.remove(&key) {
            Some(mut obj) => {
                s.rv += 1;
                obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                sim.record(&mut s, t.kind.plural, "DELETED", obj.clone());
                Some(obj)
            }
            None => None,
        }
    };
    let Some(obj) = removed else {
        return not_found(&t.kind, name);
    };
    match t.kind.plural {
        "services" => {
            release_ports(sim, &obj);
            sim.kubelet.service_deleted(&ns, name);
        }
        "pods" => sim.kubelet.pod_deleted(&ns, name).await,
        _ => {}
    }
    axum::Json(obj).into_response()
}

fn watch(
    sim: Arc<Sim>,
    t: Target,
    q: BTreeMap<String, String>,
    labels: Vec<select::Req>,
    fields: Vec<select::Req>,
) -> Response {
    let plural = t.kind.plural;
    let ns = t.ns.clone();
    let named = t.name.clone();
    let from: Option<u64> = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse().ok());
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let mut live = sim.events.subscribe();
    let mut end = sim.end.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let relevant = move |ev: &Event| {
        ev.plural == plural
            && ns.as_deref().is_none_or(|n| {
                select::field(&ev.object, "metadata.namespace").as_deref() == Some(n)
            })
            && named
                .as_deref()
                .is_none_or(|n| select::field(&ev.object, "metadata.name").as_deref() == Some(n))
            && object_matches(&ev.object, &labels, &fields)
    };
    let line =
        |ty: &str, obj: &Value| Bytes::from(format!("{}\n", json!({"type": ty, "object": obj})));
    // Replay: from the log when resuming, else the current state as ADDED events.
    let (backlog, mut last) = {
        let Ok(s) = sim.state.lock() else {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "state lock poisoned",
            );
        };
        match from {
            Some(rv) => {
                let oldest = s.log.front().map(|e| e.rv).unwrap_or(s.rv + 1);
                if rv + 1 < oldest && rv < s.rv {
                    let expired = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("too old resource version: {rv} ({})", oldest - 1), "reason": "Expired", "code": 410});
                    let body = line("ERROR", &expired);
                    return Response::builder()
                        .status(StatusCode::OK)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from(body))
                        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
                }
                let evs: Vec<Bytes> = s
                    .log
                    .iter()
                    .filter(|e| e.rv > rv && relevant(e))
                    .map(|e| line(e.kind, &e.object))
                    .collect();
                (evs, s.rv)
            }
            None => {
                let evs: Vec<Bytes> = s
                    .objects
                    .iter()
                    .filter(|((p, _, _), v)| {
                        *p == plural
                            && relevant(&Event {
                                rv: 0,
                                plural,
                                kind: "ADDED",
                                object: (*v).clone(),
                            })
                    })
                    .map(|(_, v)| line("ADDED", v))
                    .collect();
                (evs, s.rv)
            }
        }
    };
    tokio::spawn(async move {
        for b in backlog {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = end.recv() => return,
                _ = tick.tick(), if bookmarks => {
                    let kind_s = t.kind.kind;
                    let obj = json!({"kind": kind_s, "apiVersion": t.kind.api_version, "metadata": {"resourceVersion": last.to_string()}});
                    if tx.send(line("BOOKMARK", &obj)).await.is_err() { return; }
                }
                ev = live.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last { continue; }
                        last = ev.rv;
                        if relevant(&ev) && tx.send(line(ev.kind, &ev.object)).await.is_err() {
                            return;
                        }
                    }
                    // A watcher too slow for the event rate is cut off, as the API server does.
                    Err(_) => return,
                },
                () = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn pod_validation_names_every_problem() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "volumes": [{"name": "a"}],
            "containers": [{"name": "c", "image": "i", "volumeMounts": [
                {"name": "a", "mountPath": "/x"}, {"name": "a", "mountPath": "/x/"}, {"name": "b", "mountPath": "/y"}]}]}});
        let causes = pod_causes(&pod);
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert!(causes[0].contains("must be unique"));
        assert!(causes[1].contains("Not found: \"b\""));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20);
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }

    #[test]
    fn query_decoding() {
        let q = query_map(
            &"/x?labelSelector=a%3Db%2Cc%20in%20(d)&watch=true"
                .parse()
                .expect("uri"),
        );
        assert_eq!(q["labelSelector"], "a=b,c in (d)");
        assert_eq!(q["watch"], "true");
    }
}
