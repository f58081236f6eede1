//! The egress proxy against a real (and entirely local) internet: network namespaces,
//! dnsmasq, HTTP/HTTPS servers with a test CA, a package index and a git server (see
//! `world.rs` and docs/testing-network.md). The proxy (`paddock_egress::serve` with the
//! `SystemResolver`) runs in the server namespace, resolving through the world's DNS
//! server; real clients (`curl`, `pip`, `git`) run in the client namespace, whose only way
//! out is that proxy.
//!
//! This target has its own `main` (`harness = false`) because the same binary is also the
//! proxy process started inside the server namespace (`<binary> proxy …`), driven over its
//! standard input. The cases share one world, run in order, and report like libtest.
//! Needs root; without it the run fails under `CI=true` and says it skipped otherwise.
//! By hand: `cargo test -p paddock-egress --test world -- --hold` keeps the world up.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod world;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use paddock_egress::{Limits, Mode, Policy, Resolve, Rule, SandboxEgress, SystemResolver, serve};
use world::{
    API, CLIENT_GATEWAY_V4, ELSEWHERE, FILES, GIT, LOOPBACK_PORT, METADATA_V4, METADATA_V6,
    PACKAGE, PACKAGE_MESSAGE, PRIVATE_V4, PRIVATE_V6, PYPI, REBIND_NAME, REBIND_V4, REBIND_V6,
    REPO_FILE, REPO_URL, SERVER_V4, SERVER_V6, World, run_bounded,
};

const PROXY_PORT: u16 = 3128;

fn proxy_url() -> String {
    format!("http://{CLIENT_GATEWAY_V4}:{PROXY_PORT}")
}

// ---------------------------------------------------------------------------------------
// The proxy process (runs in the server namespace).

/// `proxy --listen ADDR --this-host A,B,…`: serves one sandbox's egress on ADDR and takes
/// commands on stdin, one per line, answering one line each:
/// `policy MODE [RULE…]`, `denials`, `counts`, `resolve NAME`. Ends when stdin closes.
fn proxy_main(args: &[String]) -> ExitCode {
    let mut listen: Option<SocketAddr> = None;
    let mut this_host: Vec<IpAddr> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => listen = it.next().and_then(|v| v.parse().ok()),
            "--this-host" => {
                this_host = it
                    .next()
                    .map(|v| v.split(',').filter_map(|a| a.parse().ok()).collect())
                    .unwrap_or_default()
            }
            other => {
                eprintln!("proxy: unknown argument {other}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(listen) = listen else {
        eprintln!("proxy: --listen ADDR is required");
        return ExitCode::from(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .expect("bind");
    let limits = Limits {
        head_timeout: Duration::from_secs(5),
        resolve_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let egress = Arc::new(SandboxEgress::new(
        "world-client",
        Policy::of(Mode::None),
        this_host,
        limits,
    ));
    rt.spawn(serve(listener, egress.clone(), Arc::new(SystemResolver)));
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        let reply = match words.next() {
            Some("policy") => match parse_policy(words) {
                Ok(p) => {
                    egress.set_policy(p);
                    "ok".to_owned()
                }
                Err(e) => format!("error {e}"),
            },
            Some("denials") => serde_json::to_string(&egress.recent_denials()).unwrap(),
            Some("counts") => serde_json::to_string(&egress.counts()).unwrap(),
            Some("resolve") => {
                let name = words.next().unwrap_or_default().to_owned();
                match rt.block_on(SystemResolver.resolve(&name, 0)) {
                    Ok(a) => a.iter().map(|a| format!("{a} ")).collect(),
                    Err(e) => format!("error {e}"),
                }
            }
            _ => format!("error unknown command {line:?}"),
        };
        writeln!(out, "{}", reply.trim_end()).unwrap();
        out.flush().unwrap();
    }
    ExitCode::SUCCESS
}

fn parse_policy<'a>(mut words: impl Iterator<Item = &'a str>) -> Result<Policy, String> {
    let mode: Mode = serde_json::from_value(serde_json::Value::String(
        words.next().unwrap_or_default().to_owned(),
    ))
    .map_err(|e| e.to_string())?;
    let allow = words
        .map(|r| r.parse::<Rule>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    Ok(Policy { mode, allow })
}

/// The proxy process, seen from the test.
struct Proxy {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Proxy {
    fn start(w: &World) -> Proxy {
        let this_host = [
            IpAddr::V4(SERVER_V4),
            IpAddr::V6(SERVER_V6),
            IpAddr::V4(CLIENT_GATEWAY_V4),
        ]
        .map(|a| a.to_string())
        .join(",");
        let mut child = w
            .in_server(std::env::current_exe().unwrap())
            .arg("proxy")
            .args(["--listen", &format!("{CLIENT_GATEWAY_V4}:{PROXY_PORT}")])
            .args(["--this-host", &this_host])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let p = Proxy {
            child,
            stdin,
            lines,
        };
        let first = p.lines.recv_timeout(Duration::from_secs(20));
        assert_eq!(first.as_deref(), Ok("ready"), "the proxy did not start");
        p
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.lines
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("the proxy did not answer {cmd:?}: {e}"))
    }

    fn policy(&mut self, mode: &str, rules: &[&str]) {
        let r = self.ask(&format!("policy {mode} {}", rules.join(" ")));
        assert_eq!(r, "ok", "policy {mode} {rules:?}");
    }

    fn denials(&mut self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ask("denials")).unwrap()
    }

    fn counts(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.ask("counts")).unwrap()
    }

    fn resolve(&mut self, name: &str) -> BTreeSet<IpAddr> {
        let r = self.ask(&format!("resolve {name}"));
        assert!(!r.starts_with("error"), "resolve {name}: {r}");
        r.split_whitespace().map(|a| a.parse().unwrap()).collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Clients (run in the client namespace).

/// Fields drop in order: the proxy ends before the world.
struct Ctx {
    proxy: Proxy,
    world: World,
    curl: std::path::PathBuf,
    git: std::path::PathBuf,
    n: u32,
}

/// What curl saw.
#[derive(Debug)]
struct Fetch {
    /// The final response's status (0: none).
    code: u16,
    /// The proxy's answer to CONNECT (0: no CONNECT).
    connect: u16,
    headers: String,
    body: String,
    exit: Option<i32>,
    stderr: String,
    took: Duration,
}

impl Fetch {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

fn client_env(c: &mut Command, home: &Path) {
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("LANG", "C.UTF-8");
}

impl Ctx {
    fn scratch(&mut self) -> std::path::PathBuf {
        self.n += 1;
        let d = self.world.dir().join(format!("client-{}", self.n));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// `curl` in the client namespace; `-x` the proxy unless `extra` says otherwise.
    fn curl(&mut self, extra: &[&str], url: &str) -> Fetch {
        let d = self.scratch();
        let mut c = self.world.in_client(&self.curl);
        client_env(&mut c, &d);
        c.args(["-sS", "--max-time", "10", "--cacert"])
            .arg(self.world.ca())
            .args(["-x", &proxy_url(), "-D"])
            .arg(d.join("headers"))
            .arg("-o")
            .arg(d.join("body"))
            .args(["-w", "%{http_code} %{http_connect}"])
            .args(extra)
            .arg(url);
        let t = Instant::now();
        let out = run_bounded(&mut c, Duration::from_secs(20)).unwrap();
        let took = t.elapsed();
        let w = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut codes = w.split_whitespace().map(|c| c.parse().unwrap_or(0));
        Fetch {
            code: codes.next().unwrap_or(0),
            connect: codes.next().unwrap_or(0),
            headers: std::fs::read_to_string(d.join("headers")).unwrap_or_default(),
            body: std::fs::read_to_string(d.join("body")).unwrap_or_default(),
            exit: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took,
        }
    }

    /// Fetches `url` through the proxy and checks it was answered by one of `at` (the
    /// world's echo names the address a request arrived on).
    fn reaches(&mut self, extra: &[&str], url: &str, at: &[IpAddr]) -> serde_json::Value {
        let before: usize = at.iter().map(|a| self.world.hits(*a)).sum();
        let f = self.curl(extra, url);
        assert_eq!(f.code, 200, "{url} through the proxy: {f:?}");
        let body = f.json();
        let local: IpAddr = body["local"].as_str().unwrap().parse().unwrap();
        assert!(
            at.contains(&local),
            "{url} was answered by {local}, not {at:?}"
        );
        let after: usize = at.iter().map(|a| self.world.hits(*a)).sum();
        assert!(
            after > before,
            "{url}: the world saw no connection on {at:?}"
        );
        body
    }

    /// Fetches `url` through the proxy and checks the proxy refused it with `verdict`
    /// (`deny blocked=metadata`, …) and that none of `untouched` saw a connection.
    fn denied(&mut self, extra: &[&str], url: &str, verdict: &str, untouched: &[IpAddr]) {
        let before: Vec<usize> = untouched.iter().map(|a| self.world.hits(*a)).collect();
        let f = self.curl(extra, url);
        assert!(
            f.code == 403 || f.connect == 403,
            "{url} should be refused: {f:?}"
        );
        assert!(
            f.headers
                .lines()
                .any(|l| l.trim_end() == format!("X-Paddock-Egress: {verdict}")),
            "{url}: expected X-Paddock-Egress: {verdict}: {f:?}"
        );
        let after: Vec<usize> = untouched.iter().map(|a| self.world.hits(*a)).collect();
        assert_eq!(before, after, "{url} reached {untouched:?}");
    }

    fn pip_install(&mut self) -> (std::process::Output, std::path::PathBuf) {
        let d = self.scratch();
        let target = d.join("site");
        let mut c = self.world.in_client(self.world.python());
        client_env(&mut c, &d);
        c.env("PIP_CONFIG_FILE", "/dev/null")
            .env("HTTPS_PROXY", proxy_url())
            .args(["-m", "pip", "install", "--no-cache-dir", "--no-input"])
            .args(["--disable-pip-version-check", "--no-deps", "--retries", "0"])
            .args(["--timeout", "10", "--target"])
            .arg(&target)
            .args(["--index-url", &format!("https://{}/simple/", PYPI.name)])
            .arg("--cert")
            .arg(self.world.ca())
            .arg(PACKAGE);
        (
            run_bounded(&mut c, Duration::from_secs(60)).unwrap(),
            target,
        )
    }

    fn git_clone(&mut self, proxy: bool) -> (std::process::Output, std::path::PathBuf, Duration) {
        let d = self.scratch();
        let dest = d.join("repo");
        let mut c = self.world.in_client(&self.git);
        client_env(&mut c, &d);
        if proxy {
            c.env("https_proxy", proxy_url());
        }
        c.env("GIT_SSL_CAINFO", self.world.ca())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args(["-c", "http.lowSpeedLimit=1", "-c", "http.lowSpeedTime=10"])
            .args(["clone", "-q", REPO_URL])
            .arg(&dest);
        let t = Instant::now();
        let out = run_bounded(&mut c, Duration::from_secs(60)).unwrap();
        (out, dest, t.elapsed())
    }
}

fn v4(a: std::net::Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn v6(a: std::net::Ipv6Addr) -> IpAddr {
    IpAddr::V6(a)
}

fn loopbacks() -> [IpAddr; 2] {
    [
        "127.0.0.1".parse().unwrap(),
        std::net::Ipv6Addr::LOCALHOST.into(),
    ]
}

// ---------------------------------------------------------------------------------------
// Cases.

/// The world is what the other cases assume: the server namespace's only routes lead into
/// the world; its DNS server answers the test names (A and AAAA) through the bound
/// resolv.conf; and the targets the proxy must never reach *are* reachable from the server
/// namespace when nothing filters — so each denial below is the policy's doing.
fn the_world_is_closed_and_its_targets_answer(cx: &mut Ctx) {
    let srv = cx.world.server_ns();
    let routes = |v: &str| {
        let out = run_bounded(
            Command::new(find("ip")).args([v, "-n", &srv, "route", "show"]),
            Duration::from_secs(10),
        )
        .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let r4 = routes("-4");
    for l in r4.lines() {
        assert!(
            l.starts_with("default via 192.0.2.1 dev wan0")
                || l.starts_with("192.0.2.0/24 dev wan0")
                || l.starts_with("10.77.0.0/30 dev cli0"),
            "unexpected IPv4 route in the server namespace: {l}"
        );
    }
    let r6 = routes("-6");
    for l in r6.lines() {
        assert!(
            l.starts_with("default via 2001:db8:1::1 dev wan0")
                || l.starts_with("2001:db8:1::/64 dev wan0")
                || l.starts_with("fe80::/64 dev"),
            "unexpected IPv6 route in the server namespace: {l}"
        );
    }
    // The host's resolver is untouched; the server namespace's is the world's.
    assert!(
        !std::fs::read_to_string("/etc/resolv.conf")
            .unwrap_or_default()
            .contains("192.0.2.53")
    );
    for s in [PYPI, FILES, GIT, API] {
        let want: BTreeSet<IpAddr> = [v4(s.v4), v6(s.v6)].into();
        assert_eq!(cx.world.resolve(s.name).unwrap(), want, "{}", s.name);
        assert_eq!(cx.proxy.resolve(s.name), want, "SystemResolver: {}", s.name);
    }
    assert!(cx.world.resolve("pypi.org").unwrap().is_empty());
    // Directly from the server namespace (no proxy), every target answers.
    let direct = |cx: &mut Ctx, url: &str| {
        let mut c = cx.world.in_server(&cx.curl);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(cx.world.ca())
            .arg(url);
        let out = run_bounded(&mut c, Duration::from_secs(20)).unwrap();
        assert!(out.status.success(), "{url}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(direct(cx, "https://pypi.test/simple/").contains(PACKAGE));
    for (url, addr) in [
        ("http://10.99.0.1/".to_owned(), v4(PRIVATE_V4)),
        ("http://[fd99::1]/".to_owned(), v6(PRIVATE_V6)),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            v4(METADATA_V4),
        ),
        ("http://[fd00:ec2::254]/".to_owned(), v6(METADATA_V6)),
        (format!("http://127.0.0.1:{LOOPBACK_PORT}/"), loopbacks()[0]),
        (format!("http://[::1]:{LOOPBACK_PORT}/"), loopbacks()[1]),
    ] {
        let before = cx.world.hits(addr);
        let body = direct(cx, &url);
        assert!(
            body.contains(&format!("\"local\": \"{addr}\"")),
            "{url}: {body}"
        );
        assert_eq!(cx.world.hits(addr), before + 1, "{url}");
    }
}

/// An allowlist reaches exactly its names and ports: other names (resolvable or not), other
/// ports of a listed name and the listed names' addresses written as literals get a 403 with
/// the rule that decided, before any DNS query or connection.
fn allowlist_reaches_listed_names_and_nothing_else(cx: &mut Ctx) {
    cx.proxy.policy(
        "allowlist",
        &[
            "pypi.test:443",
            "files.pypi.test:443",
            "git.test:443",
            "api.test:80",
        ],
    );
    let body = cx.reaches(&[], "http://api.test/v1?q=1", &[v4(API.v4), v6(API.v6)]);
    assert_eq!(body["host"], "api.test");
    assert_eq!(body["path"], "/v1?q=1");
    assert_eq!(body["tls"], false);
    let f = cx.curl(&[], "https://pypi.test/simple/");
    assert_eq!((f.connect, f.code), (200, 200), "{f:?}");
    assert!(f.body.contains(PACKAGE), "{f:?}");
    let api = [v4(API.v4), v6(API.v6)];
    let elsewhere = [v4(ELSEWHERE.v4), v6(ELSEWHERE.v6)];
    let queries = |cx: &Ctx| ["elsewhere.test", "nowhere.test"].map(|n| cx.world.dns_queries(n));
    let q0 = queries(cx);
    assert!(
        cx.world.dns_queries(PYPI.name) > 0,
        "the DNS log counts queries"
    );
    cx.denied(&[], "https://api.test/", "deny not_listed", &api);
    cx.denied(&[], "http://elsewhere.test/", "deny not_listed", &elsewhere);
    cx.denied(
        &[],
        "https://elsewhere.test/",
        "deny not_listed",
        &elsewhere,
    );
    cx.denied(&[], "https://nowhere.test/", "deny not_listed", &[]);
    cx.denied(&[], "http://203.0.113.30/", "deny not_listed", &api);
    cx.denied(&[], "http://[2001:db8:113::30]/", "deny not_listed", &api);
    cx.denied(&["-p"], "http://api.test:8080/", "deny not_listed", &api);
    cx.denied(
        &[],
        "http://10.99.0.1/",
        "deny blocked=private",
        &[v4(PRIVATE_V4)],
    );
    let d = cx.proxy.denials();
    let names: Vec<&str> = d.iter().filter_map(|x| x["name"].as_str()).collect();
    for n in ["api.test", "elsewhere.test", "nowhere.test", "203.0.113.30"] {
        assert!(names.contains(&n), "{n} not among the denials {d:?}");
    }
    // Names refused by the allowlist were never resolved: the DNS server saw no query.
    assert_eq!(queries(cx), q0, "an unlisted name was looked up");
    let nowhere = d.iter().find(|x| x["name"] == "nowhere.test").unwrap();
    assert!(nowhere["addr"].is_null(), "{nowhere}");
    assert_eq!(nowhere["reason"], "deny not_listed");
}

/// Real tools, unchanged, through the proxy: `pip install` from the world's index (whose
/// files are on a second name, which must be listed too) and `git clone` over HTTPS.
fn pip_and_git_work_through_an_allowlist(cx: &mut Ctx) {
    cx.proxy.policy(
        "allowlist",
        &["pypi.test:443", "files.pypi.test:443", "git.test:443"],
    );
    let files = [v4(FILES.v4), v6(FILES.v6)];
    let before: usize = files.iter().map(|a| cx.world.hits(*a)).sum();
    let (out, target) = cx.pip_install();
    assert!(out.status.success(), "pip install: {out:?}");
    let after: usize = files.iter().map(|a| cx.world.hits(*a)).sum();
    assert!(after > before, "the wheel came from files.pypi.test");
    let check = run_bounded(
        Command::new(cx.world.python())
            .env("PYTHONPATH", &target)
            .args(["-c", &format!("import {PACKAGE} as p; print(p.MESSAGE)")]),
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        PACKAGE_MESSAGE,
        "{check:?}"
    );

    let (out, dest, _) = cx.git_clone(true);
    assert!(out.status.success(), "git clone: {out:?}");
    assert_eq!(
        std::fs::read_to_string(dest.join(REPO_FILE.0)).unwrap(),
        REPO_FILE.1
    );
    let git_requests = cx.world.requests(v4(GIT.v4)).len() + cx.world.requests(v6(GIT.v6)).len();
    assert!(git_requests >= 2, "git spoke smart HTTP to git.test");

    // Without files.pypi.test listed, the index is read but the wheel is refused.
    cx.proxy.policy("allowlist", &["pypi.test:443"]);
    let before: usize = files.iter().map(|a| cx.world.hits(*a)).sum();
    let (out, _) = cx.pip_install();
    assert!(
        !out.status.success(),
        "pip install without files.pypi.test: {out:?}"
    );
    let after: usize = files.iter().map(|a| cx.world.hits(*a)).sum();
    assert_eq!(before, after, "files.pypi.test was reached");
    let d = cx.proxy.denials();
    assert!(
        d.iter()
            .any(|x| x["name"] == "files.pypi.test" && x["reason"] == "deny not_listed"),
        "{d:?}"
    );
}

/// `open` reaches any public (here: documentation-range) address by name or literal, in
/// IPv4 and IPv6, and never a blocked range — in any of its forms — nor the server's own
/// addresses, though every one of them answers from the server namespace.
fn open_mode_reaches_public_addresses_and_no_blocked_range(cx: &mut Ctx) {
    cx.proxy.policy("open", &[]);
    cx.reaches(&[], "https://api.test/", &[v4(API.v4), v6(API.v6)]);
    cx.reaches(
        &[],
        "http://elsewhere.test/",
        &[v4(ELSEWHERE.v4), v6(ELSEWHERE.v6)],
    );
    cx.reaches(&[], "http://203.0.113.30/", &[v4(API.v4)]);
    cx.reaches(&[], "http://[2001:db8:113::30]/", &[v6(API.v6)]);
    cx.reaches(
        &["-p"],
        "http://[2001:db8:100::99]:8080/",
        &[v6(ELSEWHERE.v6)],
    );
    let f = cx.curl(&[], "https://pypi.test/simple/paddock-world-pkg/");
    assert_eq!(f.code, 200, "{f:?}");

    let private = [v4(PRIVATE_V4), v6(PRIVATE_V6)];
    let metadata = [v4(METADATA_V4), v6(METADATA_V6)];
    let lo = loopbacks();
    let port = LOOPBACK_PORT;
    let cases: Vec<(String, &str, Vec<IpAddr>)> = vec![
        (
            "http://10.99.0.1/".into(),
            "deny blocked=private",
            private.into(),
        ),
        (
            "http://private.test/".into(),
            "deny blocked=private",
            private.into(),
        ),
        (
            "http://[fd99::1]/".into(),
            "deny blocked=unique_local",
            private.into(),
        ),
        (
            "http://[::ffff:10.99.0.1]/".into(),
            "deny blocked=private",
            private.into(),
        ),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "deny blocked=metadata",
            metadata.into(),
        ),
        (
            "http://metadata.test/".into(),
            "deny blocked=metadata",
            metadata.into(),
        ),
        (
            "http://[fd00:ec2::254]/".into(),
            "deny blocked=metadata",
            metadata.into(),
        ),
        (
            "http://[::ffff:169.254.169.254]/".into(),
            "deny blocked=metadata",
            metadata.into(),
        ),
        (
            "http://[::ffff:a9fe:a9fe]/".into(),
            "deny blocked=metadata",
            metadata.into(),
        ),
        (
            "http://[64:ff9b::a9fe:a9fe]/".into(),
            "deny blocked=metadata",
            metadata.into(),
        ),
        (
            format!("http://127.0.0.1:{port}/"),
            "deny blocked=loopback",
            lo.into(),
        ),
        (
            format!("http://127.1.2.3:{port}/"),
            "deny blocked=loopback",
            lo.into(),
        ),
        (
            format!("http://[::1]:{port}/"),
            "deny blocked=loopback",
            lo.into(),
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            "deny blocked=loopback",
            lo.into(),
        ),
        (
            format!("http://localhost:{port}/"),
            "deny blocked=loopback",
            lo.into(),
        ),
        (
            format!("http://0.0.0.0:{port}/"),
            "deny blocked=unspecified",
            lo.into(),
        ),
        (
            format!("http://[::]:{port}/"),
            "deny blocked=unspecified",
            lo.into(),
        ),
        (
            format!("http://{SERVER_V4}:{PROXY_PORT}/"),
            "deny this_host",
            vec![],
        ),
        (
            format!("http://[{SERVER_V6}]:{PROXY_PORT}/"),
            "deny this_host",
            vec![],
        ),
        (
            format!("http://{CLIENT_GATEWAY_V4}:{PROXY_PORT}/"),
            "deny blocked=private",
            vec![],
        ),
    ];
    for (url, verdict, untouched) in &cases {
        cx.denied(&[], url, verdict, untouched);
        // The same through CONNECT (how https and every other protocol arrive).
        cx.denied(&["-p"], url, verdict, untouched);
    }
    // An operator's explicit range opens it (and only it).
    cx.proxy.policy("open", &["10.99.0.0/16:80"]);
    cx.reaches(&[], "http://10.99.0.1/", &[v4(PRIVATE_V4)]);
    cx.denied(
        &[],
        "http://169.254.169.254/",
        "deny blocked=metadata",
        &metadata,
    );
}

/// DNS rebinding: `rebind.test` answers a public address, then loopback or metadata (A or
/// AAAA, plain or IPv4-mapped). Each request is decided on the address it resolved to at
/// that moment; a mixed answer connects only to the allowed address. The loopback service
/// listens on the port used, so a wrong decision would reach it.
fn dns_rebinding_is_decided_on_the_address_used(cx: &mut Ctx) {
    let url = format!("http://{REBIND_NAME}:{LOOPBACK_PORT}/");
    let public = [v4(REBIND_V4), v6(REBIND_V6)];
    let lo = loopbacks();
    let metadata = [v4(METADATA_V4), v6(METADATA_V6)];
    for policy in [("open", vec![]), ("allowlist", vec!["rebind.test"])] {
        cx.proxy.policy(policy.0, &policy.1);
        cx.world.set_rebind(&public).unwrap();
        cx.reaches(&[], &url, &public);
        cx.reaches(&["-p"], &url, &public);
        let switches: [(Vec<IpAddr>, &str); 6] = [
            (vec![lo[0]], "deny blocked=loopback"),
            (vec![lo[1]], "deny blocked=loopback"),
            (
                vec!["::ffff:127.0.0.1".parse().unwrap()],
                "deny blocked=loopback",
            ),
            (vec![metadata[0]], "deny blocked=metadata"),
            (vec![metadata[1]], "deny blocked=metadata"),
            (
                vec!["::ffff:169.254.169.254".parse().unwrap()],
                "deny blocked=metadata",
            ),
        ];
        for (answer, verdict) in switches {
            cx.world.set_rebind(&answer).unwrap();
            assert_eq!(
                cx.proxy.resolve(REBIND_NAME),
                answer.iter().copied().collect()
            );
            let untouched: Vec<IpAddr> = lo.iter().chain(&metadata).copied().collect();
            cx.denied(&[], &url, verdict, &untouched);
            cx.denied(&["-p"], &url, verdict, &untouched);
            let last = cx.proxy.denials().pop().unwrap();
            assert_eq!(last["name"], REBIND_NAME);
            assert_eq!(last["addr"], answer[0].to_string(), "{last}");
        }
        // Back to public: reached again.
        cx.world.set_rebind(&public).unwrap();
        cx.reaches(&[], &url, &public);
        // A mixed answer: only the public address is ever connected to.
        cx.world
            .set_rebind(&[v4(PRIVATE_V4), lo[0], v4(REBIND_V4)])
            .unwrap();
        let untouched = [v4(PRIVATE_V4), lo[0]];
        let before: Vec<usize> = untouched.iter().map(|a| cx.world.hits(*a)).collect();
        for _ in 0..3 {
            cx.reaches(&[], &url, &[v4(REBIND_V4)]);
        }
        let after: Vec<usize> = untouched.iter().map(|a| cx.world.hits(*a)).collect();
        assert_eq!(
            before, after,
            "a blocked address of a mixed answer was reached"
        );
    }
    cx.world.set_rebind(&public).unwrap();
}

/// `none` refuses everything; a new policy applies to the next connection at once, and the
/// counters see both verdicts.
fn mode_none_and_policy_changes_apply_at_once(cx: &mut Ctx) {
    cx.proxy.policy("none", &[]);
    let api = [v4(API.v4), v6(API.v6)];
    let c0 = cx.proxy.counts();
    cx.denied(&[], "http://api.test/", "deny mode=none", &api);
    cx.denied(&[], "https://api.test/", "deny mode=none", &api);
    cx.denied(&[], "http://203.0.113.30/", "deny mode=none", &api);
    cx.proxy.policy("allowlist", &["*.test:80"]);
    cx.reaches(&[], "http://api.test/", &api);
    cx.denied(&[], "https://api.test/", "deny not_listed", &api);
    cx.proxy.policy("none", &[]);
    cx.denied(&[], "http://api.test/", "deny mode=none", &api);
    let c1 = cx.proxy.counts();
    let d = |k: &str| c1[k].as_u64().unwrap() - c0[k].as_u64().unwrap();
    assert_eq!((d("allowed"), d("denied")), (1, 5), "{c0} -> {c1}");
}

/// A client that ignores the proxy variables gets nothing, at once: the client namespace
/// has no route beyond its link and no resolver that answers.
fn a_client_that_ignores_the_proxy_fails_fast(cx: &mut Ctx) {
    cx.proxy.policy("open", &[]);
    for (url, exit, says) in [
        // No route: ENETUNREACH at once.
        ("http://198.51.100.10/", 7, "Couldn't connect"),
        ("http://[2001:db8:100::10]/", 7, "Couldn't connect"),
        // No resolver that answers.
        ("https://pypi.test/", 6, "Could not resolve host"),
    ] {
        let f = cx.curl(&["--noproxy", "*"], url);
        assert_eq!(f.exit, Some(exit), "{url}: {f:?}");
        assert!(f.stderr.contains(says), "{url}: {f:?}");
        assert!(f.took < Duration::from_secs(3), "{url} took {:?}", f.took);
    }
    let (out, _, took) = cx.git_clone(false);
    assert!(
        !out.status.success(),
        "git clone without the proxy: {out:?}"
    );
    assert!(took < Duration::from_secs(5), "git failed after {took:?}");
}

type Case = fn(&mut Ctx);

const CASES: &[(&str, Case)] = &[
    (
        "the_world_is_closed_and_its_targets_answer",
        the_world_is_closed_and_its_targets_answer,
    ),
    (
        "allowlist_reaches_listed_names_and_nothing_else",
        allowlist_reaches_listed_names_and_nothing_else,
    ),
    (
        "pip_and_git_work_through_an_allowlist",
        pip_and_git_work_through_an_allowlist,
    ),
    (
        "open_mode_reaches_public_addresses_and_no_blocked_range",
        open_mode_reaches_public_addresses_and_no_blocked_range,
    ),
    (
        "dns_rebinding_is_decided_on_the_address_used",
        dns_rebinding_is_decided_on_the_address_used,
    ),
    (
        "mode_none_and_policy_changes_apply_at_once",
        mode_none_and_policy_changes_apply_at_once,
    ),
    (
        "a_client_that_ignores_the_proxy_fails_fast",
        a_client_that_ignores_the_proxy_fails_fast,
    ),
];

/// `--hold`: the world stays up, and lines from stdin drive its proxy and `rebind.test`.
fn hold_loop(cx: &mut Ctx) {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            break;
        }
        if let Some(addrs) = line.strip_prefix("rebind") {
            let addrs: Result<Vec<IpAddr>, _> = addrs.split_whitespace().map(str::parse).collect();
            match addrs.map(|a| cx.world.set_rebind(&a)) {
                Ok(Ok(())) => println!("ok"),
                Ok(Err(e)) => println!("error {e}"),
                Err(e) => println!("error {e}"),
            }
            continue;
        }
        println!("{}", cx.proxy.ask(line));
    }
}

fn find(name: &str) -> std::path::PathBuf {
    world::find_tool(name).unwrap_or_else(|| panic!("{name} is not installed"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("proxy") {
        return proxy_main(&args[1..]);
    }
    if args.iter().any(|a| a == "--list") {
        for (name, _) in CASES {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let hold = args.iter().any(|a| a == "--hold");
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let chosen: Vec<&(&str, Case)> = CASES
        .iter()
        .filter(|(n, _)| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        *n == f.as_str()
                    } else {
                        n.contains(f.as_str())
                    }
                })
        })
        .collect();
    let filtered = CASES.len() - chosen.len();
    let started = Instant::now();
    if chosen.is_empty() && !hold {
        println!(
            "\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; {filtered} filtered out; finished in 0.00s\n"
        );
        return ExitCode::SUCCESS;
    }
    if let Err(why) = world::can_run() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            eprintln!("error: {why}; CI must run the egress world cases");
            return ExitCode::FAILURE;
        }
        println!("\nrunning 0 tests\nskipped: {why}\n");
        return ExitCode::SUCCESS;
    }
    let world = match World::up() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let up = started.elapsed();
    let proxy = match catch_unwind(AssertUnwindSafe(|| Proxy::start(&world))) {
        Ok(p) => p,
        Err(_) => return ExitCode::FAILURE,
    };
    let mut cx = Ctx {
        proxy,
        world,
        curl: find("curl"),
        git: find("git"),
        n: 0,
    };
    if hold {
        println!(
            "the egress test world is up ({:.1}s): namespaces {} (internet), {} (server), {} (client)",
            up.as_secs_f64(),
            cx.world.internet_ns(),
            cx.world.server_ns(),
            cx.world.client_ns(),
        );
        println!(
            "directory {} (CA: ca.pem, logs: *.log)",
            cx.world.dir().display()
        );
        println!(
            "a proxy (mode none) listens on {}; commands: `policy MODE [RULE…]`, `denials`, \
             `counts`, `resolve NAME`, `rebind ADDR…`; an empty line or end of input ends the world",
            proxy_url()
        );
        hold_loop(&mut cx);
        return ExitCode::SUCCESS;
    }
    println!(
        "\nrunning {} tests (world up in {:.2}s)",
        chosen.len(),
        up.as_secs_f64()
    );
    let mut failed = Vec::new();
    for (name, case) in &chosen {
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| case(&mut cx)));
        let verdict = if r.is_ok() { "ok" } else { "FAILED" };
        println!(
            "test {name} ... {verdict} ({:.2}s)",
            t.elapsed().as_secs_f64()
        );
        if r.is_err() {
            failed.push(*name);
        }
    }
    drop(cx);
    let passed = chosen.len() - failed.len();
    if !failed.is_empty() {
        println!("\nfailures:");
        for f in &failed {
            println!("    {f}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {filtered} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
