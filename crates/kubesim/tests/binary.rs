//! The `paddock-kubesim` program: it announces its address, answers kube-rs, injects the
//! configured faults, and exits cleanly on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

async fn start(extra: &[&str]) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_paddock-kubesim"))
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let line = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(out).lines().next_line(),
    )
    .await
    .expect("in time")
    .expect("read")
    .expect("a line");
    let url = line
        .strip_prefix("listening on ")
        .expect("announcement")
        .to_owned();
    (child, url)
}

fn client(url: &str) -> kube::Client {
    let mut cfg = kube::Config::new(url.parse().expect("url"));
    cfg.connect_timeout = Some(Duration::from_secs(2));
    cfg.read_timeout = Some(Duration::from_secs(5));
    kube::Client::try_from(cfg).expect("client")
}

async fn sigterm(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().expect("pid").to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(st.success());
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .expect("status")
}

#[tokio::test]
async fn serves_kube_rs_and_stops_on_sigterm() {
    let (mut child, url) = start(&[]).await;
    let v = client(&url).apiserver_version().await.expect("version");
    assert!(v.git_version.contains("kubesim"));
    assert!(sigterm(&mut child).await.success());
}

#[tokio::test]
async fn fault_flags() {
    let (mut child, url) = start(&["--error-rate", "1"]).await;
    match client(&url).apiserver_version().await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 500),
        other => panic!("expected a 500, got {other:?}"),
    }
    assert!(sigterm(&mut child).await.success());
    let (mut child, url) = start(&["--refuse-connections"]).await;
    let e = client(&url).apiserver_version().await.expect_err("refused");
    assert!(!matches!(e, kube::Error::Api(_)), "{e:?}");
    assert!(sigterm(&mut child).await.success());
    let (mut child, url) = start(&["--latency-ms", "300"]).await;
    let t = std::time::Instant::now();
    client(&url)
        .apiserver_version()
        .await
        .expect("slow but fine");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(sigterm(&mut child).await.success());
}
