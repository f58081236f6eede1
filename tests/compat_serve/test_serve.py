"""`paddock serve` as DeerFlow uses it: the provisioner calls its RemoteSandboxBackend
makes (X-API-Key, the exact request fields), then an unmodified AIO SDK client given
only the returned sandbox_url execs and reads files."""

import os
import subprocess
import tempfile

import httpx
import pytest
from agent_sandbox import Sandbox

KEY = "compat-serve-key"


@pytest.fixture(scope="module")
def server():
    binary = os.environ["PADDOCK_BIN"]
    data = tempfile.mkdtemp(prefix="paddock-serve-compat-")
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--api-key", KEY],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    assert line.startswith("paddock serve listening on "), line
    base = line.removeprefix("paddock serve listening on ")
    yield base, data
    proc.terminate()
    assert proc.wait(timeout=20) == 0


def test_deerflow_provisioner_flow_and_aio_client(server):
    base, data = server
    h = {"X-API-Key": KEY}
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    assert httpx.get(f"{base}/api/sandboxes").status_code == 401
    body = {
        "sandbox_id": "a1b2c3d4e5f60718",
        "thread_id": "thread-42",
        "user_id": "user-7",
        "include_legacy_skills": False,
        "provision_lark_cli_runtime": False,
        "provision_lark_cli_broker": False,
    }
    r = httpx.post(f"{base}/api/sandboxes", json=body, headers=h, timeout=30)
    assert r.status_code == 200, r.text
    info = r.json()
    assert set(info) == {"sandbox_id", "sandbox_url", "status"}
    url = info["sandbox_url"]
    # DeerFlow's is_alive probe and readiness wait.
    got = httpx.get(f"{base}/api/sandboxes/{body['sandbox_id']}", headers=h, timeout=10).json()
    assert got["status"] == "Running"
    assert httpx.get(f"{url}/v1/sandbox", timeout=5).status_code == 200

    client = Sandbox(base_url=url, timeout=120)
    res = client.shell.exec_command(command="echo from-aio > /mnt/user-data/outputs/r.txt && cat /mnt/user-data/outputs/r.txt")
    assert res.success and "from-aio" in res.data.output, res
    client.file.write_file(file="/mnt/user-data/workspace/w.txt", content="written by the SDK\n")
    res = client.file.read_file(file="/mnt/user-data/workspace/w.txt")
    assert res.data.content == "written by the SDK\n", res
    res = client.bash.exec(command="cat w.txt; id -u")
    assert res.data.exit_code == 0 and "written by the SDK" in res.data.stdout, res
    ctx = client.sandbox.get_context()
    assert ctx.home_dir == "/mnt/user-data/workspace" or ctx is not None
    on_disk = os.path.join(data, "users/user-7/threads/thread-42/user-data/workspace/w.txt")
    assert open(on_disk).read() == "written by the SDK\n"

    listed = httpx.get(f"{base}/api/sandboxes", headers=h).json()
    assert listed["count"] == 1 and listed["sandboxes"][0]["sandbox_url"] == url
    r = httpx.delete(f"{base}/api/sandboxes/{body['sandbox_id']}", headers=h)
    assert r.json() == {"ok": True, "sandbox_id": body["sandbox_id"]}
    assert httpx.get(f"{url}/v1/sandbox").status_code == 404
    assert os.path.exists(on_disk), "user data outlives the sandbox"
