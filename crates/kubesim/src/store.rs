//! The simulator's object store: every object of the kinds it serves (namespaces, nodes,
//! pods, services, persistentvolumeclaims, secrets, configmaps, networkpolicies), the
//! current `resourceVersion` and the event log watches replay from.
//!
//! Invariant: all state changes happen under one mutex ([`Store`]), each taking the next
//! `resourceVersion` and appending one event to the bounded log (older versions answer
//! 410 Expired).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::faults::Faults;
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

pub(crate) const KINDS: &[Kind] = &[
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

pub(crate) fn kind_of(group_version: &str, plural: &str) -> Option<Kind> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.plural == plural && k.api_version == group_version)
}

pub(crate) type Key = (&'static str, String, String);

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

/// Everything behind the store's one mutex.
pub(crate) struct Store {
    /// Objects by (plural, namespace or "", name).
    pub(crate) objects: BTreeMap<Key, Value>,
    /// The last `resourceVersion` handed out.
    pub(crate) rv: u64,
    /// The latest events, oldest first, for watches resuming from a version.
    pub(crate) log: VecDeque<Event>,
    /// NodePorts held by Services.
    pub(crate) node_ports: BTreeSet<i64>,
    /// The next Service cluster IP, as an offset in 10.96.0.0/16.
    pub(crate) next_ip: u32,
}

/// The simulator's state.
pub struct Sim {
    pub(crate) opts: SimOptions,
    pub(crate) state: Mutex<Store>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) end: broadcast::Sender<()>,
    pub(crate) faults: Faults,
    rng: AtomicU64,
    uid: AtomicU64,
    pub(crate) kubelet: Kubelet,
    /// Requests served, for assertions.
    pub requests: AtomicU64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("opts", &self.opts).finish()
    }
}

pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    paddock_core::time::iso8601(secs)
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
            faults: Faults::new(&opts),
            opts,
            state: Mutex::new(Store {
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

    /// A pseudo-random number below 1,000,000.
    pub(crate) fn roll(&self) -> u64 {
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

    fn record(&self, s: &mut Store, plural: &'static str, kind: &'static str, object: Value) {
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

    fn stamp(&self, s: &mut Store, obj: &mut Value) {
        s.rv += 1;
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), Value::String(s.rv.to_string()));
        }
    }

    pub(crate) fn insert_new(&self, kind: &Kind, ns: Option<&str>, mut obj: Value) -> Value {
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

    /// Whether the object exists (`false` when the store is unusable).
    pub(crate) fn exists(&self, plural: &'static str, ns: &str, name: &str) -> bool {
        self.contains(plural, ns, name).unwrap_or(false)
    }

    /// Whether the object exists; `None` when the store is unusable (a poisoned lock).
    pub(crate) fn contains(&self, plural: &'static str, ns: &str, name: &str) -> Option<bool> {
        self.state
            .lock()
            .map(|s| {
                s.objects
                    .contains_key(&(plural, ns.to_owned(), name.to_owned()))
            })
            .ok()
    }

    /// Removes the object and records a DELETED event (the object with the next
    /// `resourceVersion` and a `deletionTimestamp`); `Ok(None)` when it does not exist,
    /// `Err` when the store is unusable (a poisoned lock).
    pub(crate) fn remove(
        &self,
        plural: &'static str,
        ns: &str,
        name: &str,
    ) -> Result<Option<Value>, StoreUnusable> {
        let mut s = self.state.lock().map_err(|_| StoreUnusable)?;
        let key = (plural, ns.to_owned(), name.to_owned());
        Ok(match s.objects.remove(&key) {
            Some(mut obj) => {
                s.rv += 1;
                obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                self.record(&mut s, plural, "DELETED", obj.clone());
                Some(obj)
            }
            None => None,
        })
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

/// The store's lock was poisoned by a panic while held.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreUnusable;

/// Whether `v` matches both selectors.
pub(crate) fn object_matches(v: &Value, labels: &[select::Req], fields: &[select::Req]) -> bool {
    let l = select::labels(v);
    select::matches(labels, |k| l.get(k).cloned())
        && select::matches(fields, |k| select::field(v, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20);
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }
}
