//! A self-contained "internet" for network egress tests: network namespaces, veth links,
//! addresses from the documentation ranges, a real DNS server (dnsmasq), real HTTP and HTTPS
//! servers with a test CA, a PEP 503 package index and a git server over HTTPS — all on
//! this machine, none of it reachable from (or routed to) the host's own network.
//!
//! ```text
//!   client ns ──veth── server ns ──veth── internet ns
//!   10.77.0.2          10.77.0.1          192.0.2.1, 2001:db8:1::1 (gateway)
//!   (no route          192.0.2.2          192.0.2.53 (DNS), 198.51.100.0/24, 203.0.113.0/24,
//!    beyond the link)  2001:db8:1::2      2001:db8:100::/48, 2001:db8:113::/48 (sites),
//!                      127.0.0.1:8080     10.99.0.1, fd99::1 (private), 169.254.169.254,
//!                      (a loopback        fd00:ec2::254 (metadata)
//!                       service)
//! ```
//!
//! The server namespace is where a Paddock server or the egress proxy under test runs: its
//! only route leads to the internet namespace, and [`World::in_server`] runs a program there
//! in a private mount namespace whose `/etc/resolv.conf` names the world's DNS server
//! (`/etc/resolv.conf` belongs to the mount namespace, not the network namespace). The
//! client namespace plays a sandbox whose only way out is a proxy in the server namespace.
//!
//! Invariant: everything the world starts dies with it — processes are killed by pid (and get
//! SIGKILL from the kernel if the test process dies first), namespaces (and with them their
//! veths and addresses) are deleted, the directory removed, on drop as on a failed start;
//! namespaces left by a test process that was killed are swept by the next world.
//!
//! The module uses only `std`, so another crate's tests can include it with `#[path]`.
//! See docs/testing-network.md.

#![allow(dead_code)] // each test target that includes the module uses a part of it

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The gateway: the internet namespace's end of the server's link.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The gateway's IPv6 address.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// The server namespace's address on its link to the internet.
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The server namespace's IPv6 address on its link to the internet.
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
/// The DNS server.
pub const DNS_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// The DNS server's IPv6 address.
pub const DNS_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x53);
/// The server namespace's end of the client's link (where a proxy for the client listens).
pub const CLIENT_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The client namespace's address.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// A private network's host, in the internet namespace and answering HTTP: reachable through
/// the server's default route, so only a policy keeps it out.
pub const PRIVATE_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// A unique-local IPv6 host, answering HTTP.
pub const PRIVATE_V6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
/// The cloud metadata address, answering HTTP.
pub const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The IPv6 cloud metadata address (AWS), answering HTTP.
pub const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// The public addresses `rebind.test` answers with until a test switches it.
pub const REBIND_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 40);
/// The public IPv6 address `rebind.test` answers with until a test switches it.
pub const REBIND_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 0x40);
/// The port of the server namespace's loopback service (`127.0.0.1`, `::1`); every internet
/// address answers plain HTTP on it too, so a name switched from a public address to
/// loopback would reach the loopback service if nothing stopped it.
pub const LOOPBACK_PORT: u16 = 8080;

/// A name of the world with its addresses.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    /// The DNS name.
    pub name: &'static str,
    /// Its A record.
    pub v4: Ipv4Addr,
    /// Its AAAA record.
    pub v6: Ipv6Addr,
}

/// The package index (`https://pypi.test/simple/`).
pub const PYPI: Site = Site {
    name: "pypi.test",
    v4: Ipv4Addr::new(198, 51, 100, 10),
    v6: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10),
};
/// Where the index's files are (`https://files.pypi.test/packages/…`).
pub const FILES: Site = Site {
    name: "files.pypi.test",
    v4: Ipv4Addr::new(198, 51, 100, 11),
    v6: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x11),
};
/// The git server (`https://git.test/repo.git`).
pub const GIT: Site = Site {
    name: "git.test",
    v4: Ipv4Addr::new(203, 0, 113, 20),
    v6: Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 0x20),
};
/// An API (a JSON echo over HTTP and HTTPS).
pub const API: Site = Site {
    name: "api.test",
    v4: Ipv4Addr::new(203, 0, 113, 30),
    v6: Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 0x30),
};
/// Another public site (a JSON echo), for "a name nobody listed".
pub const ELSEWHERE: Site = Site {
    name: "elsewhere.test",
    v4: Ipv4Addr::new(198, 51, 100, 99),
    v6: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x99),
};
/// A name for the private hosts.
pub const PRIVATE: Site = Site {
    name: "private.test",
    v4: PRIVATE_V4,
    v6: PRIVATE_V6,
};
/// A name for the metadata addresses.
pub const METADATA: Site = Site {
    name: "metadata.test",
    v4: METADATA_V4,
    v6: METADATA_V6,
};
/// The name whose answer [`World::set_rebind`] switches.
pub const REBIND_NAME: &str = "rebind.test";
/// The sites with fixed answers.
pub const SITES: [Site; 7] = [PYPI, FILES, GIT, API, ELSEWHERE, PRIVATE, METADATA];

/// The package in the index.
pub const PACKAGE: &str = "paddock_world_pkg";
/// What the package's `MESSAGE` says.
pub const PACKAGE_MESSAGE: &str = "installed from the world's index";
/// The git repository.
pub const REPO_URL: &str = "https://git.test/repo.git";
/// Its one file's name and content.
pub const REPO_FILE: (&str, &str) = ("README", "a repository of the egress test world\n");

const SERVE_PY: &str = include_str!("serve.py");
const PREFIX: &str = "pdkw";
static WORLDS: AtomicU32 = AtomicU32::new(0);

/// Why the world cannot be built here, before anything was changed.
pub fn can_run() -> Result<(), String> {
    let status = fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if uid != "0" {
        return Err("the egress test world needs root (network namespaces, veths)".into());
    }
    if fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6").is_ok_and(|s| s.trim() == "1")
    {
        return Err("IPv6 is disabled on this host; the world's IPv6 cases need it".into());
    }
    if !Path::new("/etc/resolv.conf").is_file() {
        return Err(
            "/etc/resolv.conf is missing (the server namespace's own is bind-mounted over it)"
                .into(),
        );
    }
    Ok(())
}

fn err(step: &str, detail: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("egress test world: {step}: {detail}"))
}

/// Runs `cmd` with no input, collecting its output, killing it after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let mut child = cmd.spawn()?;
    let reader = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let errs = reader(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} did not finish within {limit:?}"),
            ));
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: errs.join().unwrap_or_default(),
    })
}

/// Runs a setup step: it must succeed within 60 s; its standard output.
fn step(what: &str, cmd: &mut Command) -> io::Result<String> {
    let out = run_bounded(cmd, Duration::from_secs(60)).map_err(|e| err(what, e))?;
    if !out.status.success() {
        return Err(err(
            what,
            format!(
                "{:?} failed ({}): {}",
                cmd,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The absolute path of a tool, from PATH or the usual system directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The programs the world uses.
#[derive(Debug, Clone)]
struct Tools {
    ip: PathBuf,
    unshare: PathBuf,
    setpriv: PathBuf,
    mount: PathBuf,
    kill: PathBuf,
    getent: PathBuf,
    openssl: PathBuf,
    git: PathBuf,
    dnsmasq: PathBuf,
    python: PathBuf,
}

impl Tools {
    fn find() -> io::Result<Tools> {
        let need =
            |n: &str| find_tool(n).ok_or_else(|| err("tools", format!("{n} is not installed")));
        let dnsmasq = match find_tool("dnsmasq") {
            Some(p) => p,
            None => {
                install_dnsmasq()?;
                need("dnsmasq")?
            }
        };
        let python = need("python3")?;
        let real = step(
            "python3",
            Command::new(&python).args(["-c", "import ssl, sys; print(sys.executable)"]),
        )?;
        Ok(Tools {
            ip: need("ip")?,
            unshare: need("unshare")?,
            setpriv: need("setpriv")?,
            mount: need("mount")?,
            kill: need("kill")?,
            getent: need("getent")?,
            openssl: need("openssl")?,
            git: need("git")?,
            dnsmasq,
            python: PathBuf::from(real.trim()),
        })
    }
}

/// Installs Debian's dnsmasq-base (the binary alone: no service is started).
fn install_dnsmasq() -> io::Result<()> {
    let apt = find_tool("apt-get")
        .ok_or_else(|| err("tools", "dnsmasq is not installed and there is no apt-get"))?;
    step("apt-get update", Command::new(&apt).args(["update", "-qq"]))?;
    step(
        "apt-get install dnsmasq-base",
        Command::new(&apt)
            .args(["install", "-y", "-qq", "dnsmasq-base"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(())
}

/// A started service: killed by pid when the world ends; its standard input is held open
/// (the Python servers exit when it closes).
struct Service {
    name: &'static str,
    child: Child,
    _stdin: Option<ChildStdin>,
}

/// The world. Dropping it ends every process it started and deletes its namespaces.
pub struct World {
    tag: String,
    dir: PathBuf,
    tools: Tools,
    namespaces: Vec<String>,
    services: Vec<Service>,
    dns_pid: Option<u32>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("tag", &self.tag)
            .field("dir", &self.dir)
            .finish()
    }
}

impl World {
    /// Builds the world (needs root; see [`can_run`]). Fails with the step that failed,
    /// having undone what it did.
    pub fn up() -> io::Result<World> {
        can_run().map_err(|e| err("preconditions", e))?;
        let tools = Tools::find()?;
        sweep_stale(&tools);
        let n = WORLDS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{PREFIX}{}.{n}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| err("directory", e))?;
        let mut w = World {
            tag,
            dir,
            tools,
            namespaces: Vec::new(),
            services: Vec::new(),
            dns_pid: None,
        };
        // On an error `w` is dropped here, which undoes whatever was done.
        w.build()?;
        Ok(w)
    }

    /// The internet namespace's name (`ip netns` name).
    pub fn internet_ns(&self) -> String {
        format!("{}-inet", self.tag)
    }

    /// The server namespace's name.
    pub fn server_ns(&self) -> String {
        format!("{}-srv", self.tag)
    }

    /// The client namespace's name.
    pub fn client_ns(&self) -> String {
        format!("{}-cli", self.tag)
    }

    /// The world's directory (certificates, logs, content); removed with the world.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The test CA's certificate (PEM): clients trust it to reach the world's HTTPS sites.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The resolv.conf that names the world's DNS server.
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }

    /// The real Python interpreter (with pip), not a shim.
    pub fn python(&self) -> &Path {
        &self.tools.python
    }

    /// A command that runs `program` in the server namespace, in a private mount namespace
    /// whose `/etc/resolv.conf` is the world's (so `getaddrinfo` asks the world's DNS
    /// server). The program gets SIGKILL if the thread that spawned it dies; its pid is
    /// the command's (every step execs), so it is ended with `Child::kill`.
    pub fn in_server(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(&self.tools.ip);
        c.args(["netns", "exec"])
            .arg(self.server_ns())
            .arg(&self.tools.unshare)
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"m=$1; shift; "$m" --bind "$0" /etc/resolv.conf && exec "$@""#)
            .arg(self.resolv_conf())
            .arg(&self.tools.mount)
            .arg(&self.tools.setpriv)
            .args(["--pdeathsig", "KILL"])
            .arg(program);
        c
    }

    /// A command that runs `program` in the client namespace (whose only link leads to the
    /// server namespace's [`CLIENT_GATEWAY_V4`]).
    pub fn in_client(&self, program: impl AsRef<OsStr>) -> Command {
        self.in_ns(&self.client_ns(), program)
    }

    /// A command that runs `program` in the internet namespace.
    pub fn in_internet(&self, program: impl AsRef<OsStr>) -> Command {
        self.in_ns(&self.internet_ns(), program)
    }

    fn in_ns(&self, ns: &str, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(&self.tools.ip);
        c.args(["netns", "exec", ns])
            .arg(&self.tools.setpriv)
            .args(["--pdeathsig", "KILL"])
            .arg(program);
        c
    }

    /// The addresses `name` resolves to in the server namespace (`getaddrinfo` with the
    /// world's resolv.conf); empty when it does not resolve.
    pub fn resolve(&self, name: &str) -> io::Result<BTreeSet<IpAddr>> {
        let out = run_bounded(
            self.in_server(&self.tools.getent).args(["ahosts", name]),
            Duration::from_secs(10),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect())
    }

    /// Switches what `rebind.test` resolves to (A and AAAA records from `addrs`) and waits
    /// until the server namespace's resolver answers with exactly that.
    pub fn set_rebind(&self, addrs: &[IpAddr]) -> io::Result<()> {
        let text: String = addrs
            .iter()
            .map(|a| format!("{a} {REBIND_NAME}\n"))
            .collect();
        let tmp = self.dir.join("rebind.hosts.new");
        fs::write(&tmp, text)?;
        fs::rename(&tmp, self.dir.join("rebind.hosts"))?;
        let pid = self.dns_pid.ok_or_else(|| err("rebind", "no DNS server"))?;
        // SIGHUP: dnsmasq clears its cache and re-reads its hosts files.
        step(
            "reload dnsmasq",
            Command::new(&self.tools.kill).args(["-HUP", &pid.to_string()]),
        )?;
        let want: BTreeSet<IpAddr> = addrs.iter().copied().collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.resolve(REBIND_NAME)?;
            if got == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(err(
                    "rebind",
                    format!("{REBIND_NAME} resolves to {got:?}, not {want:?}"),
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The connections every service of the world accepted on `addr` so far.
    pub fn hits(&self, addr: IpAddr) -> usize {
        let needle = format!("conn {addr} ");
        self.log_lines()
            .iter()
            .filter(|l| l.starts_with(&needle))
            .count()
    }

    /// The requests every service received on `addr` so far: `req <addr> <host> <method>
    /// <path> <headers as JSON>`.
    pub fn requests(&self, addr: IpAddr) -> Vec<String> {
        let needle = format!("req {addr} ");
        self.log_lines()
            .into_iter()
            .filter(|l| l.starts_with(&needle))
            .collect()
    }

    /// The queries the DNS server got for `name` so far (any type, from anywhere).
    pub fn dns_queries(&self, name: &str) -> usize {
        let needle = format!(" {name} from ");
        fs::read_to_string(self.dir.join("dns.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(": query[") && l.contains(&needle))
            .count()
    }

    fn log_lines(&self) -> Vec<String> {
        ["internet.log", "loopback.log"]
            .iter()
            .filter_map(|f| fs::read_to_string(self.dir.join(f)).ok())
            .flat_map(|s| s.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    fn build(&mut self) -> io::Result<()> {
        self.network()?;
        self.certificates()?;
        self.content()?;
        self.start_dns()?;
        self.start_web()?;
        Ok(())
    }

    fn network(&mut self) -> io::Result<()> {
        let (inet, srv, cli) = (self.internet_ns(), self.server_ns(), self.client_ns());
        for ns in [&inet, &srv, &cli] {
            step(
                "create namespace",
                Command::new(&self.tools.ip).args(["netns", "add", ns]),
            )?;
            self.namespaces.push(ns.clone());
        }
        // No namespace forwards (the client reaches the server namespace and nothing beyond),
        // and no address waits for duplicate detection (none can be duplicated here).
        for ns in [&inet, &srv, &cli] {
            step(
                "namespace settings",
                Command::new(&self.tools.ip)
                    .args(["netns", "exec", ns, "sh", "-c"])
                    .arg(
                        "cd /proc/sys/net && echo 0 > ipv4/ip_forward && \
                         echo 0 > ipv6/conf/all/forwarding && \
                         echo 0 > ipv6/conf/all/accept_dad && \
                         echo 0 > ipv6/conf/default/accept_dad",
                    ),
            )?;
        }
        for line in network_plan(&inet, &srv, &cli) {
            step(
                "configure the network",
                Command::new(&self.tools.ip).args(line.split_whitespace()),
            )?;
        }
        fs::write(
            self.resolv_conf(),
            format!("nameserver {DNS_V4}\nnameserver {DNS_V6}\noptions timeout:1 attempts:2\n"),
        )?;
        Ok(())
    }

    fn certificates(&self) -> io::Result<()> {
        let d = &self.dir;
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        step(
            "test CA",
            Command::new(&self.tools.openssl)
                .args(["req", "-x509"])
                .args(key)
                .arg("-keyout")
                .arg(d.join("ca.key"))
                .arg("-out")
                .arg(d.join("ca.pem"))
                .args(["-days", "2", "-subj", "/CN=Paddock egress test world CA"])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
        )?;
        step(
            "site key",
            Command::new(&self.tools.openssl)
                .args(["req", "-new"])
                .args(key)
                .arg("-keyout")
                .arg(d.join("site.key"))
                .arg("-out")
                .arg(d.join("site.csr"))
                .args(["-subj", &format!("/CN={}", PYPI.name)]),
        )?;
        let mut san: Vec<String> = SITES.iter().map(|s| format!("DNS:{}", s.name)).collect();
        san.push(format!("DNS:{REBIND_NAME}"));
        for s in SITES {
            san.push(format!("IP:{}", s.v4));
            san.push(format!("IP:{}", s.v6));
        }
        fs::write(
            d.join("site.ext"),
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n\
                 authorityKeyIdentifier=keyid\nsubjectAltName={}\n",
                san.join(",")
            ),
        )?;
        step(
            "site certificate",
            Command::new(&self.tools.openssl)
                .args(["x509", "-req", "-in"])
                .arg(d.join("site.csr"))
                .arg("-CA")
                .arg(d.join("ca.pem"))
                .arg("-CAkey")
                .arg(d.join("ca.key"))
                .args(["-set_serial", "2", "-days", "2", "-out"])
                .arg(d.join("site.pem"))
                .arg("-extfile")
                .arg(d.join("site.ext")),
        )?;
        Ok(())
    }

    fn content(&self) -> io::Result<()> {
        let d = &self.dir;
        fs::write(d.join("serve.py"), SERVE_PY)?;
        step(
            "package index",
            Command::new(&self.tools.python)
                .arg(d.join("serve.py"))
                .arg("index")
                .arg("--out")
                .arg(d)
                .args(["--name", PACKAGE, "--version", "1.0"])
                .args(["--message", PACKAGE_MESSAGE])
                .args(["--index-host", PYPI.name, "--files-host", FILES.name]),
        )?;
        // A repository with one commit, served bare over smart HTTP.
        let work = d.join("repo-work");
        fs::create_dir_all(&work)?;
        fs::write(work.join(REPO_FILE.0), REPO_FILE.1)?;
        let git = |args: &[&str], cwd: &Path| {
            let mut c = Command::new(&self.tools.git);
            c.args(args)
                .current_dir(cwd)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_AUTHOR_NAME", "world")
                .env("GIT_AUTHOR_EMAIL", "world@git.test")
                .env("GIT_COMMITTER_NAME", "world")
                .env("GIT_COMMITTER_EMAIL", "world@git.test");
            c
        };
        step(
            "git init",
            &mut git(&["init", "-q", "-b", "main", "."], &work),
        )?;
        step("git add", &mut git(&["add", REPO_FILE.0], &work))?;
        step(
            "git commit",
            &mut git(&["commit", "-q", "-m", "world"], &work),
        )?;
        fs::create_dir_all(d.join("git"))?;
        step(
            "git bare",
            &mut git(&["clone", "-q", "--bare", "repo-work", "git/repo.git"], d),
        )?;
        Ok(())
    }

    fn hosts_file(&self) -> String {
        let mut s = String::new();
        for site in SITES {
            s.push_str(&format!(
                "{} {}\n{} {}\n",
                site.v4, site.name, site.v6, site.name
            ));
        }
        s
    }

    fn start_dns(&mut self) -> io::Result<()> {
        let d = self.dir.clone();
        fs::write(d.join("hosts"), self.hosts_file())?;
        fs::write(
            d.join("rebind.hosts"),
            format!("{REBIND_V4} {REBIND_NAME}\n{REBIND_V6} {REBIND_NAME}\n"),
        )?;
        let mut c = self.in_internet(&self.tools.dnsmasq);
        c.arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--no-poll")
            // Root keeps the parent-death signal (a change of uid would clear it).
            .arg("--user=root")
            .arg("--group=root")
            .arg("--pid-file=")
            .arg("--bind-interfaces")
            .arg(format!("--listen-address={DNS_V4},{DNS_V6}"))
            // Every name the hosts files do not have is NXDOMAIN: nothing is forwarded.
            .arg("--local=/#/")
            .arg(format!("--addn-hosts={}", d.join("hosts").display()))
            .arg(format!("--addn-hosts={}", d.join("rebind.hosts").display()))
            .arg("--log-queries")
            .arg(format!("--log-facility={}", d.join("dns.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(d.join("dns.stderr"))?));
        let child = c.spawn().map_err(|e| err("start dnsmasq", e))?;
        self.dns_pid = Some(child.id());
        self.services.push(Service {
            name: "dnsmasq",
            child,
            _stdin: None,
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.resolve(PYPI.name)?.contains(&IpAddr::V4(PYPI.v4)) {
                return Ok(());
            }
            if let Some(s) = self
                .services
                .last_mut()
                .and_then(|s| s.child.try_wait().ok()?)
            {
                return Err(err(
                    "start dnsmasq",
                    format!(
                        "exited ({s}): {}",
                        fs::read_to_string(d.join("dns.stderr")).unwrap_or_default()
                    ),
                ));
            }
            if Instant::now() > deadline {
                return Err(err("start dnsmasq", "no answer within 10 s"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `serve.py serve` with `cmd` (already placed in a namespace) and waits for it.
    fn start_python(&mut self, name: &'static str, mut cmd: Command) -> io::Result<()> {
        let log = fs::File::create(self.dir.join(format!("{name}.stderr")))?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().map_err(|e| err(name, e))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        self.services.push(Service {
            name,
            child,
            _stdin: stdin,
        });
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ = BufReader::new(out).read_line(&mut line);
            }
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(l) if l.trim() == "ready" => Ok(()),
            other => Err(err(
                name,
                format!(
                    "did not start ({other:?}): {}",
                    fs::read_to_string(self.dir.join(format!("{name}.stderr"))).unwrap_or_default()
                ),
            )),
        }
    }

    fn start_web(&mut self) -> io::Result<()> {
        let d = self.dir.clone();
        let backend = step(
            "git exec path",
            Command::new(&self.tools.git).arg("--exec-path"),
        )?;
        let backend = Path::new(backend.trim()).join("git-http-backend");
        let mut web = self.in_internet(&self.tools.python);
        web.arg(d.join("serve.py"))
            .arg("serve")
            .arg("--root")
            .arg(&d)
            .arg("--log")
            .arg(d.join("internet.log"))
            .args(["--http", "[::]:80"])
            .args(["--http", &format!("[::]:{LOOPBACK_PORT}")])
            .args(["--https", "[::]:443"])
            .arg("--cert")
            .arg(d.join("site.pem"))
            .arg("--key")
            .arg(d.join("site.key"))
            .arg("--git")
            .arg(format!("{}={}", GIT.name, d.join("git").display()))
            .arg("--git-backend")
            .arg(&backend);
        self.start_python("internet", web)?;
        fs::create_dir_all(d.join("loopback-root"))?;
        let mut lo = self.in_server(&self.tools.python);
        lo.arg(d.join("serve.py"))
            .arg("serve")
            .arg("--root")
            .arg(d.join("loopback-root"))
            .arg("--log")
            .arg(d.join("loopback.log"))
            .args(["--http", &format!("127.0.0.1:{LOOPBACK_PORT}")])
            .args(["--http", &format!("[::1]:{LOOPBACK_PORT}")]);
        self.start_python("loopback", lo)
    }
}

/// The `ip` commands that wire the world's namespaces (created beforehand): the veths, with
/// their ends created directly in their namespaces (no interface of the world ever exists
/// in the host's namespace), the addresses, and the server's only routes.
fn network_plan(inet: &str, srv: &str, cli: &str) -> Vec<String> {
    let mut p = vec![
        format!("link add wan0 netns {srv} type veth peer name srv0 netns {inet}"),
        format!("link add cli0 netns {srv} type veth peer name eth0 netns {cli}"),
        format!("-n {inet} link set lo up"),
        format!("-n {inet} link set srv0 up"),
        format!("-n {inet} addr add {GATEWAY_V4}/24 dev srv0"),
        format!("-n {inet} -6 addr add {GATEWAY_V6}/64 dev srv0 nodad"),
        format!("-n {srv} link set lo up"),
        format!("-n {srv} link set wan0 up"),
        format!("-n {srv} link set cli0 up"),
        format!("-n {srv} addr add {SERVER_V4}/24 dev wan0"),
        format!("-n {srv} -6 addr add {SERVER_V6}/64 dev wan0 nodad"),
        format!("-n {srv} addr add {CLIENT_GATEWAY_V4}/30 dev cli0"),
        format!("-n {srv} route add default via {GATEWAY_V4} dev wan0"),
        format!("-n {srv} -6 route add default via {GATEWAY_V6} dev wan0"),
        format!("-n {cli} link set lo up"),
        format!("-n {cli} link set eth0 up"),
        format!("-n {cli} addr add {CLIENT_V4}/30 dev eth0"),
    ];
    // The internet's hosts: addresses on its loopback, reached through the gateway.
    for (a4, a6) in SITES
        .iter()
        .map(|s| (s.v4, s.v6))
        .chain([(DNS_V4, DNS_V6), (REBIND_V4, REBIND_V6)])
    {
        p.push(format!("-n {inet} addr add {a4}/32 dev lo"));
        p.push(format!("-n {inet} -6 addr add {a6}/128 dev lo"));
    }
    p
}

impl Drop for World {
    fn drop(&mut self) {
        for s in &mut self.services {
            if let Err(e) = s.child.kill()
                && e.kind() != io::ErrorKind::InvalidInput
            {
                eprintln!("egress test world: ending {}: {e}", s.name);
            }
            let _ = s.child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            end_namespace(&self.tools, ns);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Kills what still runs in `ns` (processes a world started there), then deletes it (its
/// veths and addresses go with it).
fn end_namespace(tools: &Tools, ns: &str) {
    if let Ok(out) = run_bounded(
        Command::new(&tools.ip).args(["netns", "pids", ns]),
        Duration::from_secs(10),
    ) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if pid.parse::<u32>().is_ok() {
                let _ = run_bounded(
                    Command::new(&tools.kill).args(["-KILL", pid]),
                    Duration::from_secs(5),
                );
            }
        }
    }
    match run_bounded(
        Command::new(&tools.ip).args(["netns", "del", ns]),
        Duration::from_secs(10),
    ) {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "egress test world: deleting namespace {ns}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("egress test world: deleting namespace {ns}: {e}"),
    }
}

/// Deletes the namespaces and directories of worlds whose test process is gone.
fn sweep_stale(tools: &Tools) {
    let Ok(out) = run_bounded(
        Command::new(&tools.ip).args(["netns", "list"]),
        Duration::from_secs(10),
    ) else {
        return;
    };
    let owner_gone = |name: &str| {
        name.strip_prefix(PREFIX)
            .and_then(|r| r.split('.').next())
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if owner_gone(name) {
            eprintln!("egress test world: removing {name}, left by a test process that died");
            end_namespace(tools, name);
        }
    }
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner_gone(&name) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}
