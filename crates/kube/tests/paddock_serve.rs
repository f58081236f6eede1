//! The real `paddock` binary (`paddock serve` with `PADDOCK_BACKEND=kubernetes` and
//! DeerFlow's provisioner environment variables) against the simulator running Pods as
//! agent processes: DeerFlow's create → exec → delete → create → read-back sequence, and
//! DeerFlow's exact create payload (its seven gateway mounts and the lark-cli flags) with
//! what the agent in the Pod then sees.
//!
//! Skips loudly when `target/debug/paddock` is missing (fails under CI=true) or when the
//! build does not include the Kubernetes backend yet.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use paddock_kubesim::{SimOptions, SimServer};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

const KEY: &str = "serve-test-key";

fn paddock_bin() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/paddock");
    p.is_file().then_some(p)
}

async fn post(base: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/sandboxes"))
        .header("X-API-Key", KEY)
        .json(&body)
        .send()
        .await
        .expect("create");
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.expect("json")
}

async fn exec(url: &str, cmd: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/shell/exec"))
        .json(&json!({ "command": cmd }))
        .send()
        .await
        .expect("exec");
    assert!(r.status().is_success(), "exec status {}", r.status());
    r.text().await.expect("body")
}

/// `paddock serve` on a free port with the Kubernetes backend over `sim`, DeerFlow's state
/// root `base`; the child (killed on drop) and its base URL.
async fn start_serve(
    bin: &std::path::Path,
    sim: &SimServer,
    tmp: &std::path::Path,
    base: &std::path::Path,
) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            KEY,
            "--data-dir",
        ])
        .arg(tmp.join("paddock-data"))
        .env("PADDOCK_BACKEND", "kubernetes")
        .env("K8S_API_SERVER", sim.url())
        .env("NODE_HOST", "127.0.0.1")
        .env("DEER_FLOW_HOST_BASE_DIR", base)
        .env("KUBECONFIG_PATH", tmp.join("no-kubeconfig"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn paddock serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("paddock serve answers within 30 s")
        .expect("read stdout");
    let Some(line) = first else {
        let out = child.wait_with_output().await.expect("output");
        let err = String::from_utf8_lossy(&out.stderr);

        panic!("paddock serve exited before listening: {err}");
    };
    let addr = line
        .rsplit("http://")
        .next()
        .expect("address")
        .trim()
        .to_owned();
    (child, format!("http://{addr}"))
}

fn built_paddock() -> Option<PathBuf> {
    let bin = paddock_bin();
    if bin.is_none() {
        let msg = "target/debug/paddock is not built (cargo build -p paddock-cli)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
    }
    bin
}

#[tokio::test]
async fn paddock_serve_with_the_kubernetes_backend() {
    let Some(bin) = built_paddock() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let base = tmp.path().join("deer-flow");
    std::fs::create_dir_all(&base).expect("base");
    let sim = SimServer::start(
        "127.0.0.1:0".parse().expect("addr"),
        SimOptions {
            run_pods: true,
            paddock_bin: bin.clone(),
            ..SimOptions::default()
        },
    )
    .await
    .expect("sim");
    let (mut child, api) = start_serve(&bin, &sim, tmp.path(), &base).await;
    let req = json!({"sandbox_id": "serve-1", "thread_id": "thread-42", "user_id": "user-7"});
    let created = post(&api, req.clone()).await;
    assert_eq!(created["status"], "Running", "{created}");
    let url = created["sandbox_url"].as_str().expect("url").to_owned();
    let out = exec(
        &url,
        "echo from-a-pod > /mnt/user-data/workspace/f.txt && cat /mnt/user-data/workspace/f.txt",
    )
    .await;
    assert!(out.contains("from-a-pod"), "{out}");
    let host_file = base.join("users/user-7/threads/thread-42/user-data/workspace/f.txt");
    assert_eq!(
        std::fs::read_to_string(&host_file).expect("on the host"),
        "from-a-pod\n"
    );
    let r = reqwest::Client::new()
        .delete(format!("{api}/api/sandboxes/serve-1"))
        .header("X-API-Key", KEY)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    assert!(sim.sim.names("pods", "deer-flow").is_empty());
    let again = post(&api, req).await;
    let out = exec(
        again["sandbox_url"].as_str().expect("url"),
        "cat /mnt/user-data/workspace/f.txt",
    )
    .await;
    assert!(out.contains("from-a-pod"), "{out}");
    child.kill().await.expect("stop paddock serve");
    sim.shutdown().await;
}

async fn agent_call(url: &str, route: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{url}{route}"))
        .json(&body)
        .send()
        .await
        .expect("agent request");
    let status = r.status();
    let mut v: Value = r.json().await.expect("json");
    v["http_status"] = json!(status.as_u16());
    v
}

fn write_file(path: &std::path::Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// DeerFlow's gateway (`AioSandboxProvider` with `RemoteSandboxBackend`) sends its seven
/// `extra_mounts` with every create. Against the Kubernetes backend they are accepted as
/// DeerFlow's provisioner accepts them: the gateway's custom skills and ACP workspace
/// replace Paddock's (also at the agent's mirrors), the lark-cli `config` is read-only
/// with its writable `locks` inside, and the agent in the Pod sees all of it.
#[tokio::test]
async fn deerflows_exact_create_payload() {
    let Some(bin) = built_paddock() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let base = tmp.path().join("deer-flow");
    // DeerFlow's state root as its gateway lays it out before a create.
    let u = base.join("users/user-7");
    let lark = u.join("integrations/lark-cli");
    write_file(
        &base.join("skills_view/public/demo/SKILL.md"),
        "public skill\n",
    );
    write_file(
        &u.join("skills_view/custom/mine/SKILL.md"),
        "custom skill\n",
    );
    write_file(
        &u.join("skills_view/integrations/lark/SKILL.md"),
        "lark skill\n",
    );
    write_file(
        &u.join("threads/thread-42/acp-workspace/result.md"),
        "acp result\n",
    );
    write_file(&lark.join("config/config.json"), "{\"appId\": \"x\"}\n");
    std::fs::create_dir_all(lark.join("config/locks")).expect("locks");
    std::fs::create_dir_all(lark.join("data")).expect("data");
    write_file(
        &base.join("integrations/lark-cli/sandbox-cli/lark-cli"),
        "#!/bin/sh\n",
    );
    {
        use std::os::unix::fs::PermissionsExt;
        for d in [
            lark.clone(),
            lark.join("config"),
            lark.join("config/locks"),
            lark.join("data"),
        ] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        }
    }
    let sim = SimServer::start(
        "127.0.0.1:0".parse().expect("addr"),
        SimOptions {
            run_pods: true,
            paddock_bin: bin.clone(),
            ..SimOptions::default()
        },
    )
    .await
    .expect("sim");
    let (mut child, api) = start_serve(&bin, &sim, tmp.path(), &base).await;

    let caps: Value = reqwest::Client::new()
        .get(format!("{api}/api/capabilities"))
        .header("X-API-Key", KEY)
        .send()
        .await
        .expect("capabilities")
        .json()
        .await
        .expect("json");
    assert_eq!(caps["lark_cli_init_image"], false, "{caps}");
    assert_eq!(caps["lark_cli_broker_image"], false, "{caps}");
    assert_eq!(caps["backend"], "kubernetes", "{caps}");

    let b = base.to_string_lossy().into_owned();
    let l = lark.to_string_lossy().into_owned();
    let mounts = [
        (
            format!("{b}/users/user-7/threads/thread-42/acp-workspace"),
            "/mnt/acp-workspace",
            true,
        ),
        (
            format!("{b}/users/user-7/skills_view/custom"),
            "/mnt/skills/custom",
            true,
        ),
        (
            format!("{b}/users/user-7/skills_view/integrations"),
            "/mnt/skills/integrations",
            true,
        ),
        (
            format!("{l}/config"),
            "/mnt/integrations/lark-cli/config",
            true,
        ),
        (
            format!("{l}/config/locks"),
            "/mnt/integrations/lark-cli/config/locks",
            false,
        ),
        (
            format!("{l}/data"),
            "/mnt/integrations/lark-cli/data",
            false,
        ),
        (
            format!("{b}/integrations/lark-cli/sandbox-cli"),
            "/mnt/integrations/lark-cli/runtime",
            true,
        ),
    ];
    // The body exactly as RemoteSandboxBackend._provisioner_create builds it.
    let body = json!({
        "sandbox_id": "a1b2c3d4e5f60718",
        "thread_id": "thread-42",
        "user_id": "user-7",
        "include_legacy_skills": true,
        "provision_lark_cli_runtime": true,
        "provision_lark_cli_broker": false,
        "extra_mounts": mounts
            .iter()
            .map(|(h, c, ro)| json!({"host_path": h, "container_path": c, "read_only": ro}))
            .collect::<Vec<_>>(),
    });
    let created = post(&api, body.clone()).await;
    assert_eq!(created["status"], "Running", "{created}");
    let url = created["sandbox_url"].as_str().expect("url").to_owned();

    // The Pod: each gateway mount is a volume of its host path; the built-in custom skills
    // and ACP volumes are gone, replaced at DeerFlow's path and at the agent's mirror.
    let pod = sim
        .sim
        .object("pods", "deer-flow", "sandbox-a1b2c3d4e5f60718")
        .expect("pod");
    let vols = pod["spec"]["volumes"].as_array().expect("volumes");
    let vol = |name: &str| vols.iter().find(|v| v["name"] == name);
    assert!(
        vol("skills-custom").is_none() && vol("acp-workspace").is_none(),
        "{vols:?}"
    );
    for (i, (host, _, ro)) in mounts.iter().enumerate() {
        let v = vol(&format!("extra-{i}")).unwrap_or_else(|| panic!("extra-{i}: {vols:?}"));
        assert_eq!(v["hostPath"]["path"], json!(host));
        assert_eq!(
            v["hostPath"]["type"],
            if *ro {
                "Directory"
            } else {
                "DirectoryOrCreate"
            }
        );
    }
    assert_eq!(
        vol("skills").expect("skills")["hostPath"]["path"],
        json!(format!("{b}/skills_view"))
    );
    let vms = pod["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts");
    let at = |path: &str| {
        vms.iter()
            .position(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing at {path}: {vms:?}"))
    };
    for (path, volume) in [
        ("/mnt/skills/custom", "extra-1"),
        ("/var/lib/paddock/users/user-7/skills/custom", "extra-1"),
        ("/mnt/acp-workspace", "extra-0"),
        (
            "/var/lib/paddock/users/user-7/threads/thread-42/acp-workspace",
            "extra-0",
        ),
        ("/mnt/skills/integrations", "extra-2"),
        ("/mnt/integrations/lark-cli/config", "extra-3"),
        ("/mnt/integrations/lark-cli/config/locks", "extra-4"),
        ("/mnt/integrations/lark-cli/data", "extra-5"),
        ("/mnt/integrations/lark-cli/runtime", "extra-6"),
        ("/mnt/skills/legacy", "skills-legacy"),
    ] {
        assert_eq!(vms[at(path)]["name"], volume, "{path}");
    }
    let config = &vms[at("/mnt/integrations/lark-cli/config")];
    let locks = &vms[at("/mnt/integrations/lark-cli/config/locks")];
    assert_eq!(config["readOnly"], true);
    assert!(
        locks["readOnly"].is_null() || locks["readOnly"] == false,
        "{locks}"
    );
    assert!(
        at("/mnt/integrations/lark-cli/config") < at("/mnt/integrations/lark-cli/config/locks"),
        "config/locks must be mounted after config"
    );

    // The kubelet made the mountpoints the read-only skills directory lacked.
    for d in ["custom", "legacy", "integrations"] {
        assert!(base.join("skills_view").join(d).is_dir(), "skills_view/{d}");
    }

    // The agent in the Pod: the gateway's custom skills at /mnt/skills/custom, through the
    // file API and through a command; the global projection under /mnt/skills/public.
    let read = |file: &str| agent_call(&url, "/v1/file/read", json!({ "file": file }));
    let r = read("/mnt/skills/custom/mine/SKILL.md").await;
    assert_eq!(r["data"]["content"], "custom skill\n", "{r}");
    let out = exec(
        &url,
        "cat /mnt/skills/custom/mine/SKILL.md /mnt/skills/public/demo/SKILL.md",
    )
    .await;
    assert!(
        out.contains("custom skill") && out.contains("public skill"),
        "{out}"
    );
    let r = read("/mnt/acp-workspace/result.md").await;
    assert_eq!(r["data"]["content"], "acp result\n", "{r}");
    let r = read("/mnt/integrations/lark-cli/config/config.json").await;
    assert_eq!(r["data"]["content"], "{\"appId\": \"x\"}\n", "{r}");
    // Writable locks inside the read-only config.
    let write = |file: &str| {
        agent_call(
            &url,
            "/v1/file/write",
            json!({ "file": file, "content": "held\n" }),
        )
    };
    let w = write("/mnt/integrations/lark-cli/config/locks/api.lock").await;
    assert_eq!(w["success"], true, "{w}");
    assert_eq!(
        std::fs::read_to_string(lark.join("config/locks/api.lock")).expect("on the host"),
        "held\n"
    );
    let w = write("/mnt/integrations/lark-cli/config/evil.json").await;
    assert_ne!(w["success"], true, "a write into the read-only config: {w}");
    assert!(
        w.to_string().contains("read-only") || w.to_string().contains("read_only"),
        "{w}"
    );
    assert!(!lark.join("config/evil.json").exists());
    let w = write("/mnt/integrations/lark-cli/data/token.json").await;
    assert_eq!(w["success"], true, "{w}");
    let w = write("/mnt/skills/custom/mine/SKILL.md").await;
    assert_ne!(
        w["success"], true,
        "a write into the read-only custom skills: {w}"
    );
    assert_eq!(
        std::fs::read_to_string(u.join("skills_view/custom/mine/SKILL.md")).expect("skill"),
        "custom skill\n"
    );
    // The sandbox's mount table lists the gateway's mounts with their access.
    let info: Value = reqwest::Client::new()
        .get(format!("{url}/v1/sandbox"))
        .send()
        .await
        .expect("info")
        .json()
        .await
        .expect("json");
    let table: Vec<(String, bool)> = info["data"]["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["path"].as_str().expect("path").to_owned(),
                m["read_only"].as_bool().expect("read_only"),
            )
        })
        .collect();
    for (path, ro) in [
        ("/mnt/acp-workspace", true),
        ("/mnt/skills", true),
        ("/mnt/skills/custom", true),
        ("/mnt/integrations/lark-cli/config", true),
        ("/mnt/integrations/lark-cli/config/locks", false),
        ("/mnt/integrations/lark-cli/data", false),
        ("/mnt/integrations/lark-cli/runtime", true),
        ("/mnt/user-data", false),
    ] {
        assert!(
            table.contains(&(path.to_owned(), ro)),
            "{path} (read_only {ro}) missing from {table:?}"
        );
    }

    // Idempotent with the same payload; delete leaves the gateway's directories alone.
    let again = post(&api, body).await;
    assert_eq!(again["sandbox_url"], json!(url));
    let r = reqwest::Client::new()
        .delete(format!("{api}/api/sandboxes/a1b2c3d4e5f60718"))
        .header("X-API-Key", KEY)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    assert!(lark.join("config/locks/api.lock").is_file());
    assert!(u.join("skills_view/custom/mine/SKILL.md").is_file());
    child.kill().await.expect("stop paddock serve");
    sim.shutdown().await;
}
