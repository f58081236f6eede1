"""Fixtures for driving a real `paddock serve` with DeerFlow's own, unmodified client code.

DeerFlow is never copied into this repository: its harness package and its sandbox
benchmark are imported at run time from the read-only reference copy beside the repo
(`../shared/docs/reference/deerflow-main`, or $DEERFLOW_REFERENCE_DIR). When that copy is
missing every test fails (never skips) and says where it looked.

The process plays two DeerFlow roles at once, the way one DeerFlow host is deployed:
- the provisioner's operator: `paddock serve` is started with the environment DeerFlow's own
  provisioner (docker/provisioner/app.py) reads, PROVISIONER_API_KEY and
  DEER_FLOW_HOST_BASE_DIR=<tmp>/deer-flow;
- the gateway: DEER_FLOW_HOME=<tmp>/deer-flow (the same directory), a minimal config.yaml,
  and DeerFlow's AioSandboxProvider (RemoteSandboxBackend, since provisioner_url is set)
  creating thread dirs, skills views and lark-cli dirs there and sending the extra mounts.

Everything that is not DeerFlow's own code is listed in README.md (stubs and shims).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).resolve().parent
HARNESS_REL = Path("backend/packages/harness")
BENCH_REL = Path("backend/scripts/benchmark/sandbox/bench_provider.py")

# Variables DeerFlow's provisioner or Paddock read; the server gets only the ones set here, so
# whatever the calling shell exports cannot change what is tested.
_PROVISIONER_VARS = {
    "K8S_NAMESPACE", "SANDBOX_IMAGE", "LARK_CLI_INIT_IMAGE", "LARK_CLI_BROKER_IMAGE",
    "DEERFLOW_LARK_BROKER_DENY_SUBCOMMANDS", "THREADS_HOST_PATH", "DEER_FLOW_HOST_BASE_DIR",
    "SKILLS_HOST_PATH", "SKILLS_PVC_NAME", "USERDATA_PVC_NAME", "SKILLS_PVC_SUBPATH_TEMPLATE",
    "SANDBOX_CONTAINER_PORT", "SANDBOX_SERVICE_TYPE", "KUBECONFIG_PATH", "PROVISIONER_API_KEY",
    "NODE_HOST", "K8S_API_SERVER", "POD_NAMESPACE", "DEER_FLOW_HOME", "DEER_FLOW_CONFIG_PATH",
}

_SERVER_LOG: Path | None = None
LOG_TAIL_LINES = 80


# ── where DeerFlow's reference copy is ─────────────────────────────────────────────────


def deerflow_reference_dir() -> Path:
    env = os.environ.get("DEERFLOW_REFERENCE_DIR")
    if env:
        return Path(env)
    try:
        top = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--show-toplevel"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        top = str(HERE.parent.parent)
    return Path(top) / ".." / "shared" / "docs" / "reference" / "deerflow-main"


@pytest.fixture(scope="session")
def deerflow_ref() -> Path:
    ref = deerflow_reference_dir()
    missing = [str(ref / p) for p in (HARNESS_REL / "deerflow", BENCH_REL) if not (ref / p).exists()]
    if missing:
        pytest.fail(
            "DeerFlow's reference copy is missing, so DeerFlow's real client code cannot be "
            f"loaded: not found: {', '.join(missing)}. Expected the read-only copy at "
            "$(git rev-parse --show-toplevel)/../shared/docs/reference/deerflow-main "
            "(or set DEERFLOW_REFERENCE_DIR).",
            pytrace=False,
        )
    return ref.resolve()


# ── the paddock serve process ──────────────────────────────────────────────────────────


@dataclass
class Server:
    url: str
    api_key: str
    root: Path            # the temp dir holding everything below
    home: Path            # DEER_FLOW_HOST_BASE_DIR for the server, DEER_FLOW_HOME for the gateway
    data_dir: Path        # paddock's own --data-dir
    log: Path             # the server's stderr
    proc: subprocess.Popen = field(repr=False)

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", headers={"X-API-Key": self.api_key}, timeout=30, **kw)


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _descendants(pid: int) -> dict[int, str | None]:
    """Every process below `pid` now, with its start time (so a reused pid is not mistaken)."""
    children = _proc_children()
    out: dict[int, str | None] = {}
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out[p] = _start_time(p)
        todo.extend(children.get(p, []))
    return out


def log_tail(path: Path | None, since: int = 0, lines: int = LOG_TAIL_LINES) -> str:
    if path is None or not path.exists():
        return "(no paddock serve log)"
    with open(path, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    if not text.strip() and since:
        return log_tail(path, 0, lines)
    return "\n".join(text.splitlines()[-lines:]) or "(paddock serve wrote nothing to stderr)"


@pytest.fixture(scope="session")
def paddock() -> Server:
    global _SERVER_LOG
    binary = os.environ.get("PADDOCK_BIN")
    if not binary or not os.access(binary, os.X_OK):
        pytest.fail(f"PADDOCK_BIN must name the paddock binary (got {binary!r}); run tests/compat_deerflow/run.sh PADDOCK_BINARY", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="paddock-compat-deerflow-")).resolve()
    home = root / "deer-flow"
    home.mkdir()
    data_dir = root / "paddock-data"
    log = root / "paddock-serve.stderr.log"
    out = root / "paddock-serve.stdout.log"
    _SERVER_LOG = log
    key = "compat-deerflow-" + secrets.token_hex(12)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PADDOCK_") and k not in _PROVISIONER_VARS}
    env["PADDOCK_LOG"] = os.environ.get("PADDOCK_LOG", "info")
    # Exactly what a DeerFlow operator sets on its provisioner (docker/provisioner/app.py).
    env["PROVISIONER_API_KEY"] = key
    env["DEER_FLOW_HOST_BASE_DIR"] = str(home)

    with open(out, "wb") as out_f, open(log, "wb") as log_f:
        proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL, stdout=out_f, stderr=log_f, env=env,
        )
    url = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and url is None:
        for line in out.read_text(errors="replace").splitlines():
            if line.startswith("paddock serve listening on "):
                url = line.removeprefix("paddock serve listening on ").strip()
        if url is None:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    if url is None:
        proc.kill()
        proc.wait()
        pytest.fail(
            f"paddock serve did not print 'paddock serve listening on URL' (exit {proc.returncode}).\n"
            f"stdout:\n{out.read_text(errors='replace')}\nstderr tail:\n{log_tail(log)}",
            pytrace=False,
        )
    server = Server(url=url.rstrip("/"), api_key=key, root=root, home=home, data_dir=data_dir, log=log, proc=proc)
    yield server
    _stop_server(server)
    if os.environ.get("COMPAT_DEERFLOW_KEEP") == "1":
        print(f"\nkept {root} (COMPAT_DEERFLOW_KEEP=1)", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)


def _stop_server(server: Server) -> None:
    """SIGTERM the server by its pid, then make sure neither it nor anything it started lives on."""
    proc = server.proc
    before = _descendants(proc.pid)
    problems = []
    if proc.poll() is not None:
        problems.append(f"paddock serve had already exited with {proc.returncode} before teardown")
    else:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            problems.append("paddock serve did not exit within 20 s of SIGTERM (killed)")
        else:
            if proc.returncode != 0:
                problems.append(f"paddock serve exited with {proc.returncode} on SIGTERM (expected 0, a graceful shutdown)")
    deadline = time.monotonic() + 5
    survivors = {}
    while True:
        survivors = {p: st for p, st in before.items() if st is not None and _start_time(p) == st}
        if not survivors or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if survivors:
        desc = "; ".join(f"{p}: {_cmdline(p)}" for p in survivors)
        for p in survivors:  # only processes this server started (descendants seen above)
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        problems.append(f"processes started by paddock serve outlived it (killed now): {desc}")
    if problems:
        pytest.fail("; ".join(problems) + "\nserver stderr tail:\n" + log_tail(server.log), pytrace=False)


# ── DeerFlow's real code, loaded from the reference copy ───────────────────────────────


def _install_import_stubs() -> None:
    """Fake modules for imports on the provider's import path that cannot be installed.

    `deerflow_extension_api`: DeerFlow's extension contract package, pinned in its
    pyproject (deerflow-extension-api==0.1.2) but not published on PyPI. It is imported at
    module level by deerflow.extensions.{loader,registry}, which deerflow.config.app_config
    imports (for ExtensionSpec), and nothing on the sandbox path uses it beyond defining
    these names. The stub defines exactly the names those two modules import at import time;
    no extension is ever loaded (the config.yaml below has no `plugins:`).
    """
    if "deerflow_extension_api" in sys.modules:
        return
    stub = types.ModuleType("deerflow_extension_api")
    stub.__doc__ = "Minimal stand-in for the unpublished deerflow-extension-api package (see conftest.py)."
    stub.API_VERSION = "0.1.2"

    class ExtensionData:
        def __init__(self, name: str) -> None:
            self.name = name

    stub.ExtensionData = ExtensionData
    for name in ("ExtensionService", "MiddlewareContributor", "SystemModelCallObserver", "TaskLifecycleContributor", "ExtensionRegistry"):
        setattr(stub, name, type(name, (), {"__module__": "deerflow_extension_api"}))
    sys.modules["deerflow_extension_api"] = stub


@dataclass
class Exec:
    sandbox_id: str
    command: str
    output: str


@dataclass
class Http:
    method: str
    url: str
    payload: object
    status: int | None
    body: str


@dataclass
class DeerFlow:
    ref: Path
    bench: types.ModuleType                 # backend/scripts/benchmark/sandbox/bench_provider.py
    provider_module: types.ModuleType       # deerflow.community.aio_sandbox.aio_sandbox_provider
    aio_sandbox_cls: type                   # deerflow.community.aio_sandbox.aio_sandbox.AioSandbox
    paths: object                           # deerflow.config.paths.get_paths()
    server: Server
    execs: list[Exec] = field(default_factory=list)
    http: list[Http] = field(default_factory=list)   # RemoteSandboxBackend's provisioner calls
    providers: list[object] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.execs.clear()
            self.http.clear()

    def snapshot(self) -> tuple[list[Exec], list[Http]]:
        with self.lock:
            return list(self.execs), list(self.http)

    def provisioner_errors(self, http: list[Http] | None = None) -> list[str]:
        """Provisioner answers that were not 2xx (DELETE/GET 404 are DeerFlow's normal probes)."""
        http = self.snapshot()[1] if http is None else http
        seen = Counter()
        sample_payload = {}
        for h in http:
            path = h.url.removeprefix(self.server.url)
            if h.status is not None and (200 <= h.status < 300 or (h.status == 404 and h.method in ("GET", "DELETE"))):
                continue
            key = (h.method, path.split("/api/sandboxes/")[0] + ("/api/sandboxes/{id}" if "/api/sandboxes/" in path else ""), h.status, h.body)
            seen[key] += 1
            sample_payload.setdefault(key, h.payload)
        out = []
        for (method, path, status, body), n in seen.most_common():
            line = f"{n}x {method} {path} -> {status}: {body}"
            payload = sample_payload[(method, path, status, body)]
            if payload is not None:
                line += f"\n      request body (first of them): {payload}"
            out.append(line)
        return out

    def make_provider(self, **config):
        """An AioSandboxProvider built by DeerFlow's own benchmark factory (same shims)."""
        provider, _ = self.bench.PROVIDER_FACTORIES["aio-docker"]({"replicas": 3, "idle_timeout": 600, **config})
        return provider


@pytest.fixture(scope="session")
def deerflow(deerflow_ref: Path, paddock: Server) -> DeerFlow:
    home = paddock.home
    project = paddock.root / "deerflow-project"
    (project / "skills" / "public").mkdir(parents=True)
    config_path = project / "config.yaml"
    # The gateway's config.yaml, as an operator writes it for provisioner mode
    # (config.example.yaml, "Option 4"). bench_provider patches get_app_config only while
    # the provider is constructed; at acquire time DeerFlow reads the real config (skills
    # mounts, legacy-skills visibility in RemoteSandboxBackend._provisioner_create), so
    # without a config.yaml every create fails with FileNotFoundError before any HTTP call.
    config_path.write_text(
        "sandbox:\n"
        "  use: deerflow.community.aio_sandbox:AioSandboxProvider\n"
        f"  provisioner_url: {paddock.url}\n"
        f"  provisioner_api_key: {paddock.api_key}\n"
        "skills:\n"
        f"  path: {project / 'skills'}\n"
        "  container_path: /mnt/skills\n"
    )
    os.environ["DEER_FLOW_HOME"] = str(home)
    os.environ["DEER_FLOW_CONFIG_PATH"] = str(config_path)
    os.environ["DEER_FLOW_PROJECT_ROOT"] = str(project)
    # Gateway and provisioner see the same paths here (no Docker-in-Docker), so the gateway
    # side needs no DEER_FLOW_HOST_BASE_DIR; host_base_dir falls back to DEER_FLOW_HOME.
    os.environ.pop("DEER_FLOW_HOST_BASE_DIR", None)
    sys.dont_write_bytecode = True  # the reference copy is read-only

    _install_import_stubs()
    harness = str(deerflow_ref / HARNESS_REL)
    if harness not in sys.path:
        sys.path.insert(0, harness)
    provider_module = importlib.import_module("deerflow.community.aio_sandbox.aio_sandbox_provider")
    aio_sandbox_module = importlib.import_module("deerflow.community.aio_sandbox.aio_sandbox")
    from deerflow.config.paths import get_paths

    spec = importlib.util.spec_from_file_location("bench_provider", deerflow_ref / BENCH_REL)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_provider"] = bench  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(bench)

    df = DeerFlow(
        ref=deerflow_ref, bench=bench, provider_module=provider_module,
        aio_sandbox_cls=aio_sandbox_module.AioSandbox, paths=get_paths(), server=paddock,
    )
    assert Path(df.paths.base_dir) == home, (df.paths.base_dir, home)

    # Shim 1: how the provisioner URL and key reach the provider. bench_provider's
    # _make_aio_provider builds its stub config from a dict main() never fills with
    # provisioner_url, and never with a key; the lambda it installs as get_app_config calls
    # the module-level _stub_config at construction time, so wrapping that adds both.
    original_stub_config = bench._stub_config

    def stub_config_with_provisioner(sandbox_attrs=None):
        ns = original_stub_config(sandbox_attrs)
        ns.sandbox.provisioner_url = paddock.url
        ns.sandbox.provisioner_api_key = paddock.api_key
        return ns

    bench._stub_config = stub_config_with_provisioner

    # Shim 2: bench_provider's replica_pressure scenario reads `provider._boxes` (the
    # BoxLite provider's name); AioSandboxProvider keeps active sandboxes in `_sandboxes`.
    # That is a bug in DeerFlow's benchmark, not in the provider; an alias to the same dict
    # on each provider instance is the smallest fix. The factory wrapper also records each
    # provider so a failing test can be cleaned up.
    original_factory = bench.PROVIDER_FACTORIES["aio-docker"]

    def aio_factory(config):
        provider, used = original_factory(config)
        assert getattr(provider._backend, "provisioner_url", None) == paddock.url, (
            "the provider did not pick RemoteSandboxBackend with Paddock's URL: " + type(provider._backend).__name__
        )
        if not hasattr(provider, "_boxes"):
            provider._boxes = provider._sandboxes
        with df.lock:
            df.providers.append(provider)
        return provider, used

    bench.PROVIDER_FACTORIES["aio-docker"] = aio_factory

    # Recording wrapper (not a change of behaviour): every command DeerFlow runs and the
    # output it got back, so the tests can check outputs the benchmark itself ignores.
    original_execute = df.aio_sandbox_cls.execute_command

    def recording_execute_command(self, command, env=None, timeout=None):
        output = original_execute(self, command, env=env, timeout=timeout)
        with df.lock:
            df.execs.append(Exec(self.id, command, output))
        return output

    df.aio_sandbox_cls.execute_command = recording_execute_command

    # Recording wrapper around the `requests` module RemoteSandboxBackend calls (not a change
    # of behaviour): DeerFlow only keeps "422 Client Error" from a refused create, so the
    # status, Paddock's JSON reason and the request body are kept here for failure reports.
    remote_backend = importlib.import_module("deerflow.community.aio_sandbox.remote_backend")
    real_requests = remote_backend.requests

    class RecordingRequests:
        def __getattr__(self, name):
            return getattr(real_requests, name)

        def _call(self, method, url, **kw):
            try:
                resp = getattr(real_requests, method)(url, **kw)
            except Exception as exc:
                with df.lock:
                    df.http.append(Http(method.upper(), url, kw.get("json"), None, repr(exc)))
                raise
            with df.lock:
                df.http.append(Http(method.upper(), url, kw.get("json"), resp.status_code, resp.text[:1000]))
            return resp

        def get(self, url, **kw):
            return self._call("get", url, **kw)

        def post(self, url, **kw):
            return self._call("post", url, **kw)

        def delete(self, url, **kw):
            return self._call("delete", url, **kw)

    remote_backend.requests = RecordingRequests()
    yield df
    remote_backend.requests = real_requests
    df.aio_sandbox_cls.execute_command = original_execute
    bench.PROVIDER_FACTORIES["aio-docker"] = original_factory
    bench._stub_config = original_stub_config
    for provider in df.providers:
        try:
            provider.shutdown()
        except Exception:
            pass


# ── the server's log in every failure report ───────────────────────────────────────────


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    item._paddock_log_offset = _SERVER_LOG.stat().st_size if _SERVER_LOG and _SERVER_LOG.exists() else 0
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _SERVER_LOG is not None:
        since = getattr(item, "_paddock_log_offset", 0)
        report.sections.append(
            (f"paddock serve stderr (last {LOG_TAIL_LINES} lines since this test began; full log: {_SERVER_LOG})", log_tail(_SERVER_LOG, since))
        )
