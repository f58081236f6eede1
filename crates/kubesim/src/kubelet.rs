//! The pod-phase simulator and the optional "kubelet": with `run_pods`, each Pod's
//! container runs as a real `paddock agent` process and each NodePort is served on
//! 127.0.0.1 by a TCP proxy to the agents of the Pods its selector matches.
//!
//! Volume mapping: the agent keeps its data under `--data-dir D` as
//! `D/users/{u}/threads/{t}/user-data`; the simulator finds the volume mounted at that
//! path in the Pod, maps it to a host directory (hostPath `path`, or
//! `{pv_root}/{claimName}/{subPath}` for a PVC) and passes the directory above
//! `users/{u}/threads/{t}/user-data` as the agent's `--data-dir`, so the agent reads and
//! writes exactly where the Pod's volume points.
//!
//! Invariant: an agent process lives exactly as long as its Pod object: deleting the Pod
//! kills it (and waits for it), and so does the simulator's shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::select;
use crate::store::Sim;

type Key = (String, String);

struct Proc {
    child: Option<Child>,
    addr: Option<SocketAddr>,
    task: Option<JoinHandle<()>>,
}

/// Running agents and NodePort proxies.
#[derive(Default)]
pub struct Kubelet {
    procs: Mutex<HashMap<Key, Proc>>,
    proxies: Mutex<HashMap<Key, JoinHandle<()>>>,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet").finish()
    }
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_owned(), name.to_owned())
}

fn set_running(pod: &mut Value, ip: &str) {
    let now = pod["metadata"]["creationTimestamp"].clone();
    pod["status"] = json!({
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
        "containerStatuses": pod["spec"]["containers"].as_array().map(|cs| cs.iter().map(|c| json!({
            "name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true,
            "restartCount": 0, "state": {"running": {"startedAt": now}}
        })).collect::<Vec<_>>()),
    });
}

fn set_failed(pod: &mut Value, reason: &str, message: &str) {
    pod["status"] = json!({
        "phase": "Failed",
        "reason": reason,
        "message": message,
        "hostIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": "False", "reason": reason}],
    });
}

/// Called after a Pod is stored.
pub fn pod_created(sim: Arc<Sim>, ns: &str, pod: &Value) {
    let name = select::field(pod, "metadata.name").unwrap_or_default();
    let uid = select::field(pod, "metadata.uid").unwrap_or_default();
    let ns = ns.to_owned();
    if !sim.opts.run_pods {
        let delay = sim.opts.pod_start;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let ip = format!("10.244.0.{}", (uid.len() + name.len()) % 250 + 2);
            sim.modify("pods", &ns, &name, Some(&uid), |p| set_running(p, &ip));
        });
        return;
    }
    let k = key(&ns, &name);
    let pod = pod.clone();
    let sim2 = sim.clone();
    let task = tokio::spawn(async move {
        if let Err(msg) = run_pod(&sim2, &ns, &name, &uid, &pod).await {
            tracing::warn!(pod = %name, error = %msg, "pod failed");
            sim2.modify("pods", &ns, &name, Some(&uid), |p| {
                set_failed(p, "AgentFailed", &msg)
            });
        }
    });
    if let Ok(mut procs) = sim.kubelet.procs.lock() {
        procs.insert(
            k,
            Proc {
                child: None,
                addr: None,
                task: Some(task),
            },
        );
    }
}

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn volume_host_dir(sim: &Sim, pod: &Value, mount: &Value) -> Option<PathBuf> {
    let vname = mount["name"].as_str()?;
    let vol = pod["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"].as_str() == Some(vname))?;
    let sub = mount["subPath"].as_str().unwrap_or("");
    let base = if let Some(p) = vol["hostPath"]["path"].as_str() {
        PathBuf::from(p)
    } else {
        let claim = vol["persistentVolumeClaim"]["claimName"].as_str()?;
        sim.opts.pv_root.join(claim)
    };
    Some(if sub.is_empty() { base } else { base.join(sub) })
}

async fn secret_value(sim: &Sim, ns: &str, r: &Value) -> Result<String, String> {
    let sname = r["name"].as_str().unwrap_or_default();
    let skey = r["key"].as_str().unwrap_or_default();
    for _ in 0..50 {
        if let Some(s) = sim.object("secrets", ns, sname) {
            let raw = s["data"][skey]
                .as_str()
                .ok_or_else(|| format!("secret {sname} has no key {skey}"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .map_err(|e| format!("secret {sname}/{skey} is not base64: {e}"))?;
            return String::from_utf8(bytes)
                .map_err(|_| format!("secret {sname}/{skey} is not UTF-8"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "CreateContainerConfigError: secret {sname:?} not found"
    ))
}

async fn run_pod(
    sim: &Arc<Sim>,
    ns: &str,
    name: &str,
    uid: &str,
    pod: &Value,
) -> Result<(), String> {
    let c = &pod["spec"]["containers"][0];
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let command = strs(&c["command"]);
    let mut args = strs(&c["args"]);
    if command.first().map(String::as_str) != Some("paddock") {
        return Err(format!(
            "the simulator only runs `paddock` containers, got command {command:?}"
        ));
    }
    args.splice(0..0, command[1..].iter().cloned());
    if args.first().map(String::as_str) != Some("agent") {
        return Err("the container does not run `paddock agent`".into());
    }
    let data_dir = arg_after(&args, "--data-dir").unwrap_or_else(|| "/var/lib/paddock".into());
    let user = arg_after(&args, "--user").unwrap_or_else(|| "default".into());
    let thread = arg_after(&args, "--thread").unwrap_or_else(|| "default".into());
    let rel = format!("users/{user}/threads/{thread}/user-data");
    let want = format!("{}/{rel}", data_dir.trim_end_matches('/'));
    let mount = c["volumeMounts"]
        .as_array()
        .and_then(|ms| {
            ms.iter()
                .find(|m| m["mountPath"].as_str() == Some(want.as_str()))
        })
        .ok_or_else(|| format!("no volume is mounted at the agent's user-data path {want}"))?;
    let host = volume_host_dir(sim, pod, mount)
        .ok_or("the user-data volume cannot be mapped to a host directory")?;
    let host_s = host.to_string_lossy().into_owned();
    let host_data_dir = host_s
        .strip_suffix(&format!("/{rel}"))
        .ok_or_else(|| format!("the user-data volume ({host_s}) does not end in {rel}"))?
        .to_owned();
    std::fs::create_dir_all(&host).map_err(|e| format!("could not create {host_s}: {e}"))?;
    // Rewrite the two host-specific arguments; everything else runs as the Pod says.
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--listen" if i + 1 < args.len() => args[i + 1] = "127.0.0.1:0".into(),
            "--data-dir" if i + 1 < args.len() => args[i + 1] = host_data_dir.clone(),
            _ => {}
        }
        i += 1;
    }
    let mut cmd = Command::new(&sim.opts.paddock_bin);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for e in c["env"].as_array().cloned().unwrap_or_default() {
        let Some(n) = e["name"].as_str() else {
            continue;
        };
        if let Some(v) = e["value"].as_str() {
            cmd.env(n, v);
        } else if !e["valueFrom"]["secretKeyRef"].is_null() {
            cmd.env(
                n,
                secret_value(sim, ns, &e["valueFrom"]["secretKeyRef"]).await?,
            );
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", sim.opts.paddock_bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let k = key(ns, name);
    {
        let mut procs = sim.kubelet.procs.lock().map_err(|_| "lock poisoned")?;
        match procs.get_mut(&k) {
            Some(p) => p.child = Some(child),
            // Deleted while starting: the child is dropped, which kills it.
            None => return Ok(()),
        }
    }
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| "the agent did not start within 30s".to_owned())?
        .map_err(|e| format!("could not read the agent's output: {e}"))?
        .ok_or("the agent exited before listening")?;
    let addr: SocketAddr = line
        .strip_prefix("listening on http://")
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| format!("unexpected agent output {line:?}"))?;
    // Keep draining stdout so the agent never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    if let Ok(mut procs) = sim.kubelet.procs.lock()
        && let Some(p) = procs.get_mut(&k)
    {
        p.addr = Some(addr);
    }
    let probe = &c["readinessProbe"]["httpGet"];
    let path = probe["path"].as_str().unwrap_or("/v1/sandbox").to_owned();
    let headers: Vec<(String, String)> = probe["httpHeaders"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter_map(|h| {
                    Some((
                        h["name"].as_str()?.to_owned(),
                        h["value"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    for _ in 0..300 {
        if http_get_ok(addr, &path, &headers).await {
            sim.modify("pods", ns, name, Some(uid), |p| set_running(p, "127.0.0.1"));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the readiness probe never succeeded".into())
}

/// One HTTP/1.1 GET, as the kubelet's probe does: success is a 2xx or 3xx status.
async fn http_get_ok(addr: SocketAddr, path: &str, headers: &[(String, String)]) -> bool {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
    else {
        return false;
    };
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
        Ok(Ok(n)) if n >= 12 => matches!(buf[9], b'2' | b'3'),
        _ => false,
    }
}

/// Called after a Service is stored: serves its NodePorts on 127.0.0.1.
pub async fn service_created(sim: Arc<Sim>, ns: &str, svc: &Value) {
    if !sim.opts.run_pods {
        return;
    }
    let name = select::field(svc, "metadata.name").unwrap_or_default();
    let selector: Vec<select::Req> = svc["spec"]["selector"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some(select::Req::Eq(k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let Some(port) = svc["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .and_then(|p| u16::try_from(p).ok())
    else {
        return;
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(service = %name, port, error = %e, "could not serve the NodePort");
            return;
        }
    };
    let ns_owned = ns.to_owned();
    let sim2 = sim.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let (pods, _) = sim2.list_matching("pods", Some(&ns_owned), &selector, &[]);
            let target = sim2.kubelet.procs.lock().ok().and_then(|procs| {
                pods.iter().find_map(|p| {
                    let n = select::field(p, "metadata.name")?;
                    procs.get(&key(&ns_owned, &n))?.addr
                })
            });
            tokio::spawn(async move {
                let Some(addr) = target else { return };
                if let Ok(mut out) = TcpStream::connect(addr).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    if let Ok(mut p) = sim.kubelet.proxies.lock() {
        p.insert(key(ns, &name), task);
    }
}

impl Kubelet {
    pub(crate) fn service_deleted(&self, ns: &str, name: &str) {
        if let Some(t) = self
            .proxies
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&key(ns, name)))
        {
            t.abort();
        }
    }

    pub(crate) async fn pod_deleted(&self, ns: &str, name: &str) {
        let proc_ = self
            .procs
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&key(ns, name)));
        if let Some(mut p) = proc_ {
            if let Some(t) = p.task.take() {
                t.abort();
            }
            if let Some(mut c) = p.child.take() {
                let _ = c.kill().await;
            }
        }
    }

    /// Every agent's process, its Pod forgotten and its startup task stopped.
    fn take_all(&self) -> Vec<Child> {
        let all: Vec<Proc> = self
            .procs
            .lock()
            .map(|mut p| p.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        let mut children = Vec::new();
        for mut p in all {
            if let Some(t) = p.task.take() {
                t.abort();
            }
            children.extend(p.child.take());
        }
        children
    }

    /// Kills every agent without waiting (for a simulator dropped without `shutdown`); the
    /// processes get SIGKILL now and are reaped by tokio in the background.
    pub(crate) fn kill_all_now(&self) {
        for mut c in self.take_all() {
            let _ = c.start_kill();
        }
    }

    pub(crate) async fn kill_all(&self) {
        for mut c in self.take_all() {
            let _ = c.kill().await;
        }
        if let Ok(mut p) = self.proxies.lock() {
            for (_, t) in p.drain() {
                t.abort();
            }
        }
    }
}
