//! The pod-phase simulator and the optional "kubelet": with `run_pods`, each Pod's
//! container runs as a real `paddock agent` process and each NodePort is served on
//! 127.0.0.1 by a TCP proxy to the agents of the Pods its selector matches.
//!
//! Volumes: as a kubelet does, the simulator creates every `DirectoryOrCreate` hostPath
//! and every PVC subPath (`{pv_root}/{claimName}/{subPath}`) and refuses to start a Pod
//! whose `Directory` hostPath is missing. A container path maps to a host directory
//! through the mount with the longest mountPath above it.
//!
//! The agent's data dir: the agent keeps its layout under `--data-dir D`; the simulator
//! gives it a private directory `R` instead (one per Pod, removed with it) and mirrors
//! each volume mounted under `D` there with a symbolic link: `R/users/{u}/threads/{t}`
//! links to the directory holding the volume mounted at `D/users/{u}/threads/{t}/user-data`
//! (so the thread's `user-data` and `acp-workspace` are that directory's, as on a node), and
//! every other mount under `D` (`skills`, `users/{u}/skills/custom`, ...) links to its
//! volume's directory. A mount nested in an already linked one (`D/skills/legacy` inside
//! `D/skills`) is only seen when its directory is the matching subdirectory of the
//! parent's; otherwise it is skipped with a warning (no bind mounts here).
//!
//! The agent's config: `--config P` under a downwardAPI volume is materialised from the
//! Pod's annotation, with each `mounts.custom[].host_path` and `mounts.allowed_host_roots`
//! entry (container paths) mapped to its host directory.
//!
//! Invariant: an agent process lives exactly as long as its Pod object: deleting the Pod
//! kills it (and waits for it), and so does the simulator's shutdown; its private
//! directory goes with it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// The Pod's private directory (the agent's data dir and config).
    dir: PathBuf,
}

/// The private directory of one Pod's agent.
fn pod_dir(ns: &str, name: &str, uid: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("paddock-kubesim-{}", std::process::id()))
        .join(format!("{ns}.{name}.{uid}"))
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
    let dir = pod_dir(&ns, &name, &uid);
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
                dir,
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

/// The Pod's volume named by `mount` (a `volumeMounts` entry).
fn volume_of<'a>(pod: &'a Value, mount: &Value) -> Option<&'a Value> {
    let vname = mount["name"].as_str()?;
    pod["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"].as_str() == Some(vname))
}

/// The host directory behind `mount`: hostPath `path`, or `{pv_root}/{claimName}`, plus
/// the subPath; `None` for other volume kinds.
fn volume_host_dir(sim: &Sim, pod: &Value, mount: &Value) -> Option<PathBuf> {
    let vol = volume_of(pod, mount)?;
    let sub = mount["subPath"].as_str().unwrap_or("");
    let base = if let Some(p) = vol["hostPath"]["path"].as_str() {
        PathBuf::from(p)
    } else {
        let claim = vol["persistentVolumeClaim"]["claimName"].as_str()?;
        sim.opts.pv_root.join(claim)
    };
    Some(if sub.is_empty() { base } else { base.join(sub) })
}

/// `rest` when `path` is `prefix` or under it (`""` for `prefix` itself).
fn below<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let prefix = prefix.trim_end_matches('/');
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

/// The container's mounts, as `(mountPath, entry)`.
fn mounts_of(c: &Value) -> Vec<(String, &Value)> {
    c["volumeMounts"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| Some((m["mountPath"].as_str()?.to_owned(), m)))
                .collect()
        })
        .unwrap_or_default()
}

/// The mount with the longest mountPath at or above `path`, and the rest of the path.
fn mount_above<'a, 'p>(c: &'a Value, path: &'p str) -> Option<(&'a Value, &'p str)> {
    mounts_of(c)
        .into_iter()
        .filter_map(|(mp, m)| Some((mp.len(), m, below(path, &mp)?)))
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, m, rest)| (m, rest))
}

/// The host directory a container path lands in.
fn host_of(sim: &Sim, pod: &Value, c: &Value, path: &str) -> Option<PathBuf> {
    let (m, rest) = mount_above(c, path)?;
    let dir = volume_host_dir(sim, pod, m)?;
    Some(if rest.is_empty() { dir } else { dir.join(rest) })
}

/// Makes the host side of every mount as a kubelet does: `DirectoryOrCreate` hostPaths
/// and PVC subPaths are created, a missing `Directory` hostPath refuses the Pod.
fn prepare_volumes(sim: &Sim, pod: &Value, c: &Value) -> Result<(), String> {
    for (path, m) in mounts_of(c) {
        let Some(vol) = volume_of(pod, m) else {
            continue;
        };
        let Some(host) = volume_host_dir(sim, pod, m) else {
            continue;
        };
        let kind = vol["hostPath"]["type"].as_str().unwrap_or("");
        if vol["hostPath"].is_object() && kind == "Directory" {
            let base = vol["hostPath"]["path"].as_str().unwrap_or_default();
            if !Path::new(base).is_dir() {
                return Err(format!(
                    "MountVolume.SetUp failed for {path}: hostPath type check failed: {base} is not a directory"
                ));
            }
        } else if !vol["hostPath"].is_object() || kind == "DirectoryOrCreate" {
            std::fs::create_dir_all(&host)
                .map_err(|e| format!("could not create {}: {e}", host.display()))?;
        }
        if m["subPath"].as_str().is_some_and(|s| !s.is_empty()) {
            std::fs::create_dir_all(&host)
                .map_err(|e| format!("could not create {}: {e}", host.display()))?;
        }
    }
    Ok(())
}

/// Builds the agent's private data dir `root` for `--data-dir D` (see the module docs).
fn agent_data_dir(
    sim: &Sim,
    pod: &Value,
    c: &Value,
    data_dir: &str,
    user: &str,
    thread: &str,
    root: &Path,
) -> Result<PathBuf, String> {
    let thread_rel = format!("users/{user}/threads/{thread}");
    let user_data_rel = format!("{thread_rel}/user-data");
    let mut under: Vec<(String, PathBuf)> = mounts_of(c)
        .into_iter()
        .filter_map(|(mp, m)| {
            let rel = below(&mp, data_dir)?;
            (!rel.is_empty()).then_some(())?;
            Some((rel.to_owned(), volume_host_dir(sim, pod, m)?))
        })
        .collect();
    let want = format!("{}/{user_data_rel}", data_dir.trim_end_matches('/'));
    let user_data = under
        .iter()
        .find(|(rel, _)| *rel == user_data_rel)
        .map(|(_, h)| h.clone())
        .ok_or_else(|| {
            format!("no hostPath or PVC volume is mounted at the agent's user-data path {want}")
        })?;
    let thread_host = match (user_data.file_name(), user_data.parent()) {
        (Some(n), Some(p)) if n == "user-data" => p.to_path_buf(),
        _ => {
            return Err(format!(
                "the user-data volume ({}) is not a directory named user-data",
                user_data.display()
            ));
        }
    };
    let data = root.join("data");
    let link = |rel: &str, target: &Path| -> Result<(), String> {
        let at = data.join(rel);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("could not create {}: {e}", parent.display()))?;
        }
        std::os::unix::fs::symlink(target, &at)
            .map_err(|e| format!("could not link {}: {e}", at.display()))
    };
    std::fs::create_dir_all(&data)
        .map_err(|e| format!("could not create {}: {e}", data.display()))?;
    link(&thread_rel, &thread_host)?;
    let mut links: Vec<(String, PathBuf)> = vec![(thread_rel, thread_host)];
    under.sort_by_key(|(rel, _)| rel.matches('/').count());
    for (rel, host) in under {
        if rel == user_data_rel {
            continue;
        }
        let inside = links
            .iter()
            .find_map(|(l, target)| Some((below(&rel, l)?, target)));
        if let Some((rest, target)) = inside {
            if target.join(rest) != host {
                tracing::warn!(
                    mount = %rel,
                    volume = %host.display(),
                    "the simulator cannot show a volume nested in another one under the agent's data dir; skipped"
                );
            }
            continue;
        }
        link(&rel, &host)?;
        links.push((rel, host));
    }
    Ok(data)
}

/// Materialises the agent's `--config P` (a downwardAPI file of a Pod annotation) into
/// `root`, its container paths mapped to host directories.
fn agent_config(
    sim: &Sim,
    pod: &Value,
    c: &Value,
    path: &str,
    root: &Path,
) -> Result<PathBuf, String> {
    let (m, rest) =
        mount_above(c, path).ok_or_else(|| format!("the agent's config {path} is on no volume"))?;
    let vol = volume_of(pod, m).ok_or_else(|| format!("no volume for {path}"))?;
    let field = vol["downwardAPI"]["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["path"].as_str() == Some(rest)))
        .and_then(|i| i["fieldRef"]["fieldPath"].as_str())
        .ok_or_else(|| {
            format!("the simulator reads agent configs only from downwardAPI files ({path})")
        })?;
    let key = field
        .strip_prefix("metadata.annotations['")
        .and_then(|k| k.strip_suffix("']"))
        .ok_or_else(|| format!("unsupported downwardAPI field {field}"))?;
    let text = pod["metadata"]["annotations"][key]
        .as_str()
        .ok_or_else(|| format!("the Pod has no annotation {key}"))?;
    let mut conf: Value = serde_json::from_str(text)
        .map_err(|e| format!("the simulator reads agent configs as JSON: {e}"))?;
    let map = |v: &mut Value| -> Result<(), String> {
        let p = v.as_str().unwrap_or_default().to_owned();
        let host = host_of(sim, pod, c, &p)
            .ok_or_else(|| format!("the agent's config names {p:?}, which is on no volume"))?;
        *v = Value::String(host.to_string_lossy().into_owned());
        Ok(())
    };
    if let Some(roots) = conf["mounts"]["allowed_host_roots"].as_array_mut() {
        roots.iter_mut().try_for_each(map)?;
    }
    if let Some(custom) = conf["mounts"]["custom"].as_array_mut() {
        for m in custom {
            map(&mut m["host_path"])?;
        }
    }
    let file = root.join("agent-config.json");
    std::fs::write(&file, conf.to_string())
        .map_err(|e| format!("could not write {}: {e}", file.display()))?;
    Ok(file)
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
    prepare_volumes(sim, pod, c)?;
    let root = pod_dir(ns, name, uid);
    let host_data_dir = agent_data_dir(sim, pod, c, &data_dir, &user, &thread, &root)?;
    let config = match arg_after(&args, "--config") {
        Some(p) => Some(agent_config(sim, pod, c, &p, &root)?),
        None => None,
    };
    // Rewrite the host-specific arguments; everything else runs as the Pod says.
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--listen" if i + 1 < args.len() => args[i + 1] = "127.0.0.1:0".into(),
            "--data-dir" if i + 1 < args.len() => {
                args[i + 1] = host_data_dir.to_string_lossy().into_owned();
            }
            "--config" if i + 1 < args.len() => {
                if let Some(f) = &config {
                    args[i + 1] = f.to_string_lossy().into_owned();
                }
            }
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
            remove_pod_dir(&p.dir);
        }
    }

    /// Every agent's process and private directory, its Pod forgotten and its startup task
    /// stopped.
    fn take_all(&self) -> Vec<(Option<Child>, PathBuf)> {
        let all: Vec<Proc> = self
            .procs
            .lock()
            .map(|mut p| p.drain().map(|(_, v)| v).collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for mut p in all {
            if let Some(t) = p.task.take() {
                t.abort();
            }
            out.push((p.child.take(), p.dir));
        }
        out
    }

    /// Kills every agent without waiting (for a simulator dropped without `shutdown`); the
    /// processes get SIGKILL now and are reaped by tokio in the background.
    pub(crate) fn kill_all_now(&self) {
        for (c, dir) in self.take_all() {
            if let Some(mut c) = c {
                let _ = c.start_kill();
            }
            remove_pod_dir(&dir);
        }
    }

    pub(crate) async fn kill_all(&self) {
        for (c, dir) in self.take_all() {
            if let Some(mut c) = c {
                let _ = c.kill().await;
            }
            remove_pod_dir(&dir);
        }
        if let Ok(mut p) = self.proxies.lock() {
            for (_, t) in p.drain() {
                t.abort();
            }
        }
    }
}

/// Removes a Pod's private directory (its links, never what they point to).
fn remove_pod_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove a pod's directory");
    }
    // The per-process parent goes with its last Pod (fails harmlessly while others live).
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}
