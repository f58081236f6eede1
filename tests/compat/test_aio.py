"""The agent-sandbox SDK (0.0.30), unmodified, drives Paddock's agent through every AIO
route DeerFlow uses. A failure here is a wire incompatibility in Paddock."""

import base64
import concurrent.futures
import uuid

import httpx
import pytest
from agent_sandbox import Sandbox
from agent_sandbox.core.api_error import ApiError
from agent_sandbox.errors.unprocessable_entity_error import UnprocessableEntityError

WS = "/mnt/user-data/workspace"


# ------------------------------------------------------------------ sandbox


def test_get_context(client: Sandbox):
    ctx = client.sandbox.get_context()
    assert ctx.home_dir == WS
    assert ctx.version
    assert ctx.detail.system.home_dir == WS
    assert isinstance(ctx.detail.utils, list)


def test_bearer_form_reaches_the_same_sandbox(bearer_client: Sandbox, client: Sandbox, workdir: str):
    client.file.write_file(file=f"{workdir}/b.txt", content="via capability")
    res = bearer_client.file.read_file(file=f"{workdir}/b.txt")
    assert res.data.content == "via capability"


def test_auth_is_required(origin: str, token: str):
    if not token:
        pytest.skip("server runs without a token")
    r = httpx.get(f"{origin}/v1/sandbox")
    assert r.status_code == 401
    assert "detail" in r.json()
    r = httpx.get(f"{origin}/s/wrong-{token}/v1/sandbox")
    assert r.status_code == 404
    r = httpx.get(f"{origin}/v1/sandbox", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


# ------------------------------------------------------------------ shell


def test_shell_exec(client: Sandbox):
    res = client.shell.exec_command(command="echo hello; echo oops >&2")
    assert res.success is True
    assert res.data.status == "completed"
    assert res.data.exit_code == 0
    assert "hello" in res.data.output and "oops" in res.data.output
    assert res.data.session_id
    assert res.data.console and res.data.console[0].command.startswith("echo hello")


def test_shell_exec_deerflow_shape(client: Sandbox):
    # Exactly what DeerFlow sends: command + no_change_timeout.
    res = client.shell.exec_command(command="pwd", no_change_timeout=600)
    assert res.data.output.strip() == WS
    res = client.shell.exec_command(command="exit 7")
    assert res.data.exit_code == 7


def test_shell_session_keeps_cwd_and_env(client: Sandbox, workdir: str):
    sid = f"s-{uuid.uuid4().hex[:8]}"
    created = client.shell.create_session(id=sid)
    assert created.data.session_id == sid
    assert created.data.working_dir
    client.shell.exec_command(command=f"cd {workdir} && export GREETING=hi-there", id=sid)
    res = client.shell.exec_command(command='pwd; echo "$GREETING"', id=sid)
    assert res.data.output.split() == [workdir, "hi-there"]
    # Another session is not affected.
    other = client.shell.exec_command(command='pwd; echo "[$GREETING]"')
    assert other.data.output.split() == [WS, "[]"]
    # A command that exits keeps the previous state.
    client.shell.exec_command(command="cd /; exit 3", id=sid)
    res = client.shell.exec_command(command="pwd", id=sid)
    assert res.data.output.strip() in (workdir, "/")
    # create again returns the existing session
    again = client.shell.create_session(id=sid)
    assert again.data.session_id == sid
    client.shell.cleanup_session(sid)
    with pytest.raises(ApiError) as err:
        client.shell.cleanup_session(sid)
    assert err.value.status_code == 404


def test_shell_sessions_run_concurrently(client: Sandbox):
    def run(i: int) -> float:
        res = client.shell.exec_command(command="sleep 1; echo done", id=f"par-{i}-{uuid.uuid4().hex[:6]}")
        assert res.data.output.strip() == "done"
        return 0.0

    import time

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(run, range(4)))
    assert time.monotonic() - started < 3.5, "different sessions must not be serialised"


def test_shell_exec_dir(client: Sandbox, workdir: str):
    res = client.shell.exec_command(command="pwd", exec_dir=workdir)
    assert res.data.output.strip() == workdir


def test_shell_hard_timeout(client: Sandbox):
    res = client.shell.exec_command(command="sleep 30", hard_timeout=1)
    assert res.data.status == "hard_timeout"


# ------------------------------------------------------------------ bash


def test_bash_exec_separates_streams(client: Sandbox):
    res = client.bash.exec(command='echo "$FOO"; echo err >&2; exit 5', env={"FOO": "bar"}, hard_timeout=600.0)
    assert res.success
    assert res.data.stdout == "bar\n"
    assert res.data.stderr == "err\n"
    assert res.data.exit_code == 5
    assert res.data.status == "completed"


def test_bash_exec_bad_env_key_is_422(client: Sandbox):
    with pytest.raises(UnprocessableEntityError) as err:
        client.bash.exec(command="true", env={"BAD-KEY": "x"})
    assert err.value.status_code == 422


# ------------------------------------------------------------------ files


def test_write_then_read(client: Sandbox, workdir: str):
    p = f"{workdir}/notes/a.txt"
    w = client.file.write_file(file=p, content="l1\nl2\nl3\nl4\n")
    assert w.success and w.data.file == p
    r = client.file.read_file(file=p)
    assert r.data.content == "l1\nl2\nl3\nl4\n"
    # DeerFlow's mapping of 1-based inclusive 2..3: start_line=1, end_line=3.
    r = client.file.read_file(file=p, start_line=1, end_line=3)
    assert r.data.content == "l2\nl3"


def test_write_append_and_base64(client: Sandbox, workdir: str):
    p = f"{workdir}/bin.dat"
    payload = bytes(range(256))
    client.file.write_file(file=p, content=base64.b64encode(payload).decode(), encoding="base64")
    client.file.write_file(file=p, content=base64.b64encode(b"\x00tail").decode(), encoding="base64", append=True)
    data = b"".join(client.file.download_file(path=p))
    assert data == payload + b"\x00tail"
    t = f"{workdir}/t.txt"
    client.file.write_file(file=t, content="a")
    client.file.write_file(file=t, content="b", append=True)
    assert client.file.read_file(file=t).data.content == "ab"


def test_read_errors(client: Sandbox, workdir: str):
    with pytest.raises(ApiError) as err:
        client.file.read_file(file=f"{workdir}/missing.txt")
    assert err.value.status_code == 404
    assert err.value.body["success"] is False
    assert f"{workdir}/missing.txt" in err.value.body["message"]
    with pytest.raises(ApiError) as err:
        client.file.read_file(file="/etc/passwd")
    assert err.value.status_code == 403
    with pytest.raises(ApiError) as err:
        client.file.read_file(file=f"{WS}/../../../etc/passwd")
    assert err.value.status_code == 403


def test_read_only_skills(client: Sandbox):
    with pytest.raises(ApiError) as err:
        client.file.write_file(file="/mnt/skills/x.md", content="x")
    assert err.value.status_code == 403
    assert "read-only" in err.value.body["message"]


def test_upload_and_download(client: Sandbox, workdir: str):
    blob = bytes(range(256)) * 4096  # 1 MiB
    up = client.file.upload_file(file=("blob.bin", blob), path=f"{workdir}/up/blob.bin")
    assert up.success and up.data.success
    assert up.data.file_size == len(blob)
    assert up.data.file_path == f"{workdir}/up/blob.bin"
    got = b"".join(client.file.download_file(path=f"{workdir}/up/blob.bin"))
    assert got == blob
    # Without a path the file lands in uploads under its own name.
    up = client.file.upload_file(file=("plain.txt", b"hi"))
    assert up.data.file_path == "/mnt/user-data/uploads/plain.txt"


def test_download_errors(client: Sandbox):
    with pytest.raises(ApiError) as err:
        b"".join(client.file.download_file(path="/mnt/user-data/workspace/none.bin"))
    assert err.value.status_code == 404


def test_find_files(client: Sandbox, workdir: str):
    for rel in ["a.py", "pkg/b.py", "pkg/deep/c.py", "readme.md"]:
        client.file.write_file(file=f"{workdir}/{rel}", content="x")
    res = client.file.find_files(path=workdir, glob="*.py")
    assert sorted(res.data.files) == sorted(f"{workdir}/{r}" for r in ["a.py", "pkg/b.py", "pkg/deep/c.py"])
    res = client.file.find_files(path=workdir, glob="**/*.md")
    assert res.data.files == [f"{workdir}/readme.md"]


def test_list_path(client: Sandbox, workdir: str):
    for rel in ["a.txt", "sub/b.txt", ".hidden"]:
        client.file.write_file(file=f"{workdir}/{rel}", content="xyz")
    res = client.file.list_path(path=workdir)
    names = sorted(f.name for f in res.data.files)
    assert names == ["a.txt", "sub"]
    sub = next(f for f in res.data.files if f.name == "sub")
    assert sub.is_directory
    a = next(f for f in res.data.files if f.name == "a.txt")
    assert a.size == 3 and a.extension == "txt" and a.modified_time
    # DeerFlow's include_dirs glob mode.
    res = client.file.list_path(path=workdir, recursive=True, show_hidden=False)
    paths = sorted(f.path for f in res.data.files)
    assert paths == [f"{workdir}/a.txt", f"{workdir}/sub", f"{workdir}/sub/b.txt"]
    assert res.data.directory_count == 1 and res.data.file_count == 2


def test_grep_files(client: Sandbox, workdir: str):
    client.file.write_file(file=f"{workdir}/x.txt", content="alpha\nBeta\nbeta gamma\n")
    client.file.write_file(file=f"{workdir}/y.md", content="beta\n")
    res = client.file.grep_files(
        path=workdir,
        pattern="beta",
        case_insensitive=True,
        fixed_strings=False,
        max_results=max(4 * 100, 100 + 50),
        max_file_size="1M",
        recursive=True,
    )
    got = sorted((m.file, m.line_number, m.line_content) for m in res.data.matches)
    assert got == [
        (f"{workdir}/x.txt", 2, "Beta"),
        (f"{workdir}/x.txt", 3, "beta gamma"),
        (f"{workdir}/y.md", 1, "beta"),
    ]
    res = client.file.grep_files(path=workdir, pattern="beta", include=["*.md"])
    assert [m.file for m in res.data.matches] == [f"{workdir}/y.md"]
    with pytest.raises(UnprocessableEntityError):
        client.file.grep_files(path=workdir, pattern="(unclosed")


def test_unknown_field_is_named(raw: httpx.Client):
    r = raw.post("v1/file/read", json={"file": "/mnt/user-data/workspace/x", "bogus": 1})
    assert r.status_code == 422
    body = r.json()
    assert body["success"] is False and "bogus" in body["message"]
    assert body["detail"][0]["loc"] == ["body", "bogus"]
    r = raw.post("v1/file/read", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["success"] is False
    r = raw.post("v1/file/read", content=b"file=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = raw.post("v1/file/read", json={"file": 3})
    assert r.status_code == 422 and "file" in r.json()["message"]
