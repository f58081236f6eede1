//! The tenancy suite's harness: a real `paddock serve` (the built binary, a loopback port the
//! OS picks, a private data directory, a config file written by the test), several users'
//! sandboxes created through the provisioner API, commands run through each sandbox's URL,
//! and readings of the server process (`/proc/{pid}`) to check what tenants made it spend.

#![allow(dead_code)] // each case module uses its own part of the harness

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The suite needs what the runtime's isolation needs (root, namespaces, cgroups); CI runs
/// as root, so there a missing feature fails the suite instead of skipping it.
pub fn can_run() -> bool {
    // SAFETY-free check: the effective uid from /proc.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "the tenancy suite must run as root in CI"
        );
        eprintln!("SKIPPED: the tenancy suite needs root (CI runs it as root)");
    }
    root
}

/// A running `paddock serve`; dropping it kills the server by its pid and waits for it.
pub struct Serve {
    child: Child,
    pub base: String,
    pub key: String,
    pub data: PathBuf,
    pub client: reqwest::Client,
    log: Arc<Mutex<Vec<String>>>,
    _tmp: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SIGTERM first so the server ends its sandboxes, then make sure.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sandbox as its holder sees it: the URL the create returned.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub id: String,
    pub url: String,
}

/// What one command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Ran {
    pub output: String,
    pub exit_code: Option<i64>,
    pub raw: Value,
}

impl Serve {
    /// Starts `paddock serve` with `config` (YAML; `data_dir` and `listen` are supplied) and
    /// waits until it listens.
    pub fn start(config: &str) -> Serve {
        Self::start_with(config, &[], &[])
    }

    /// [`Serve::start`] with more arguments and environment variables for the server.
    pub fn start_with(config: &str, args: &[&str], envs: &[(&str, &str)]) -> Serve {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let cfg_path = tmp.path().join("paddock.yaml");
        std::fs::write(&cfg_path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_paddock"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&cfg_path)
            .arg("--data-dir")
            .arg(&data)
            .env_remove("PADDOCK_API_KEY")
            .env_remove("PROVISIONER_API_KEY")
            .env_remove("PADDOCK_CONFIG")
            .env("PADDOCK_LOG", "info")
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start paddock serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("paddock serve listening on http://"),
            "{line:?}"
        );
        let base = line
            .trim()
            .trim_start_matches("paddock serve listening on ")
            .to_owned();
        let log = Arc::new(Mutex::new(Vec::new()));
        // Drain both pipes so the server never blocks on them; keep the log (bounded).
        std::thread::spawn(move || for _ in out.lines().map_while(Result::ok) {});
        let err = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                let mut g = sink.lock().unwrap();
                if g.len() < 200_000 {
                    g.push(l);
                }
            }
        });
        let key = args
            .iter()
            .position(|a| *a == "--api-key")
            .map(|i| args[i + 1].to_owned())
            .or_else(|| {
                envs.iter()
                    .find(|(k, _)| *k == "PADDOCK_API_KEY")
                    .map(|(_, v)| (*v).to_owned())
            })
            .unwrap_or_else(|| {
                std::fs::read_to_string(data.join("api-key"))
                    .unwrap()
                    .trim()
                    .to_owned()
            });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Serve {
            child,
            base,
            key,
            data,
            client,
            log,
            _tmp: tmp,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log lines so far (stderr).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Open file descriptors of the server process now.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The server's threads now.
    pub fn threads(&self) -> usize {
        self.status_field("Threads:").unwrap_or(0) as usize
    }

    /// The server's peak resident memory so far, in bytes (`VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        self.status_field("VmHWM:").unwrap_or(0) * 1024
    }

    /// The server's resident memory now, in bytes (`VmRSS`).
    pub fn rss(&self) -> u64 {
        self.status_field("VmRSS:").unwrap_or(0) * 1024
    }

    fn status_field(&self, name: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// A provisioner API call; returns the status and the JSON body.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("X-API-Key", &self.key);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Creates (or finds) the sandbox of `user`'s `thread`; panics on anything but success.
    pub async fn sandbox(&self, user: &str, thread: &str) -> Sandbox {
        let (s, v) = self.try_sandbox(user, thread).await;
        assert_eq!(s, 200, "create {user}/{thread}: {v}");
        Sandbox {
            id: v["sandbox_id"].as_str().unwrap().to_owned(),
            url: v["sandbox_url"].as_str().unwrap().to_owned(),
        }
    }

    /// A create of `user`'s `thread`, whatever it answers.
    pub async fn try_sandbox(&self, user: &str, thread: &str) -> (u16, Value) {
        let id = format!("{user}-{thread}");
        self.api(
            reqwest::Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": id, "thread_id": thread, "user_id": user})),
        )
        .await
    }

    /// Runs `command` through the sandbox's AIO shell route.
    pub async fn run(&self, sb: &Sandbox, command: &str) -> Ran {
        let (status, v) = self
            .post_json(sb, "/v1/shell/exec", json!({"command": command}))
            .await;
        assert_eq!(status, 200, "{command}: {v}");
        Ran {
            output: v["data"]["output"].as_str().unwrap_or_default().to_owned(),
            exit_code: v["data"]["exit_code"].as_i64(),
            raw: v,
        }
    }

    /// A JSON POST to a route of the sandbox's agent API.
    pub async fn post_json(&self, sb: &Sandbox, route: &str, body: Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{route}", sb.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// The data directory of `user`'s `thread` on the host.
pub fn thread_dir(data: &Path, user: &str, thread: &str) -> PathBuf {
    data.join("users").join(user).join("threads").join(thread)
}

/// Polls `f` until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A host process seen from outside the sandboxes.
#[derive(Debug, Clone)]
pub struct HostProcess {
    pub pid: u32,
    pub uid: u32,
    pub rss: u64,
    pub cmdline: String,
}

/// Host processes whose command line contains `marker` (the test's own excluded).
pub fn host_processes(marker: &str) -> Vec<HostProcess> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if !cmdline.contains(marker) {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        found.push(HostProcess {
            pid,
            uid: field("Uid:") as u32,
            rss: field("VmRSS:") * 1024,
            cmdline,
        });
    }
    found
}
