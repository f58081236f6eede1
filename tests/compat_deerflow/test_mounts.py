"""The mounts DeerFlow's gateway relies on, seen from inside a Paddock sandbox.

The gateway side is DeerFlow's own code over DEER_FLOW_HOME: `Paths.ensure_thread_dirs`,
the skills projection (`users/{u}/skills_view/...`), `ensure_lark_cli_credential_tree`
(0700 dirs, 0600 files). AioSandboxProvider then sends the extra mounts it manages
(RemoteSandboxBackend keeps those in DeerFlow's ALLOWED_EXTRA_MOUNT_PATHS); `paddock serve`,
configured with DEER_FLOW_HOST_BASE_DIR=DEER_FLOW_HOME, must make the thread's user-data
that same directory (SPEC section 2) and honour every extra mount (SPEC section 3).

Every check runs through DeerFlow's AioSandbox (the AIO SDK against the sandbox_url).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

USER = "mount-user"
THREAD = "mounts-thread"
CUSTOM_SKILL = "compat-custom-skill"
PUBLIC_SKILL = "compat-public-skill"
UPLOAD = "uploaded by the gateway"
ACP = "written by an ACP agent on the host"
LARK_CONFIG = '{"appId": "cli_compat", "appSecret": "not-a-real-secret"}'
LARK_RUNTIME = "lark-cli runtime stub"


def skill_md(name: str) -> str:
    return f"---\nname: {name}\ndescription: A skill the Paddock compat test projects into the sandbox.\n---\n\n# {name}\n"


class Box:
    """The sandbox DeerFlow acquired, plus the gateway-side paths the checks compare with."""

    def __init__(self, deerflow, provider, sandbox):
        self.deerflow = deerflow
        self.provider = provider
        self.sandbox = sandbox
        paths = deerflow.paths
        self.uploads = Path(paths.sandbox_uploads_dir(THREAD, user_id=USER))
        self.outputs = Path(paths.sandbox_outputs_dir(THREAD, user_id=USER))
        self.workspace = Path(paths.sandbox_work_dir(THREAD, user_id=USER))
        self.acp = Path(paths.acp_workspace_dir(THREAD, user_id=USER))
        self.lark = Path(paths.user_dir(USER)) / "integrations" / "lark-cli"

    def sh(self, command: str) -> str:
        return self.sandbox.execute_command(command).strip()

    def exit_code(self, command: str) -> str:
        """Run `command` in a subshell, stderr dropped; returns its exit status as text."""
        return self.sh(f"( {command} ) 2>/dev/null; echo \"rc=$?\"").splitlines()[-1]

    def denied_write(self, directory: str, host_dir: Path, name: str = "written-from-sandbox.txt") -> list[str]:
        problems = []
        rc = self.exit_code(f"echo no > {directory}/{name}")
        if rc == "rc=0":
            problems.append(f"writing {directory}/{name} succeeded; the mount must be read-only")
        if (host_dir / name).exists():
            problems.append(f"{directory}/{name} appeared on the gateway side at {host_dir / name}")
        return problems


@pytest.fixture(scope="module")
def attempt(deerflow):
    """Prepare the gateway side, then let DeerFlow acquire; yields (provider, sandbox_id or
    None, the acquire error or None, the create requests DeerFlow sent)."""
    paths = deerflow.paths
    # Gateway side, before the first acquire, as DeerFlow's gateway leaves it.
    paths.ensure_thread_dirs(THREAD, user_id=USER)
    (Path(paths.sandbox_uploads_dir(THREAD, user_id=USER)) / "from-gateway.txt").write_text(UPLOAD + "\n")
    (Path(paths.acp_workspace_dir(THREAD, user_id=USER)) / "acp-result.txt").write_text(ACP + "\n")
    custom = Path(paths.user_custom_skills_dir(USER)) / CUSTOM_SKILL
    custom.mkdir(parents=True)
    (custom / "SKILL.md").write_text(skill_md(CUSTOM_SKILL))
    public = Path(os.environ["DEER_FLOW_PROJECT_ROOT"]) / "skills" / "public" / PUBLIC_SKILL
    public.mkdir(parents=True)
    (public / "SKILL.md").write_text(skill_md(PUBLIC_SKILL))
    # lark-cli, as `lark-cli config init` on the gateway leaves it, then DeerFlow's own
    # hardening of the tree (root/config/config/locks/data 0700, files 0600). The provider
    # calls ensure_lark_cli_credential_tree again and always sends the config (read-only),
    # config/locks (writable) and data (writable) mounts, whether or not the Lark skill pack
    # is installed (that only decides provision_lark_cli_runtime, which would drop the
    # runtime mount); the runtime mount is sent because the gateway-downloaded sandbox-cli
    # dir exists.
    from deerflow.integrations.lark_cli import INTEGRATION_ID, ensure_lark_cli_credential_tree, lark_cli_config_dir

    ensure_lark_cli_credential_tree(USER)
    (lark_cli_config_dir(USER) / "config.json").write_text(LARK_CONFIG + "\n")
    ensure_lark_cli_credential_tree(USER)
    runtime = Path(paths.base_dir) / "integrations" / INTEGRATION_ID / "sandbox-cli"
    runtime.mkdir(parents=True)
    (runtime / "lark-cli").write_text(f"#!/bin/sh\necho '{LARK_RUNTIME}'\n")
    (runtime / "lark-cli").chmod(0o755)

    deerflow.clear()
    provider = deerflow.make_provider()
    sandbox_id, error = None, None
    try:
        sandbox_id = provider.acquire(THREAD, user_id=USER)
    except Exception as exc:
        error = exc
    sent = [h.payload for h in deerflow.snapshot()[1] if h.method == "POST" and h.payload]
    refused = deerflow.provisioner_errors()
    try:
        yield provider, sandbox_id, error, sent, refused
    finally:
        provider.shutdown()


@pytest.fixture(scope="module")
def box(deerflow, attempt):
    provider, sandbox_id, error, _, refused = attempt
    if error is not None:
        pytest.fail(
            f"DeerFlow could not acquire a sandbox for {USER}/{THREAD}: {error!r}\n  "
            + "\n  ".join(refused or ["(no refused provisioner call recorded)"]),
            pytrace=False,
        )
    sandbox = provider.get(sandbox_id)
    assert sandbox is not None
    return Box(deerflow, provider, sandbox)


def test_gateway_side_prepared_as_deerflow_does(deerflow, attempt):
    """Preconditions on the gateway side (DeerFlow's code, not Paddock's): if this fails the
    harness, not Paddock, is wrong. Passes whether or not Paddock accepted the create."""
    _, _, _, sent, _ = attempt
    home = deerflow.server.home
    lark = home / "users" / USER / "integrations" / "lark-cli"
    assert sent, "RemoteSandboxBackend sent no create request"
    mounts = {m["container_path"]: m for m in sent[-1].get("extra_mounts", [])}
    assert set(mounts) == {
        "/mnt/acp-workspace",
        "/mnt/skills/custom",
        "/mnt/skills/integrations",
        "/mnt/integrations/lark-cli/config",
        "/mnt/integrations/lark-cli/config/locks",
        "/mnt/integrations/lark-cli/data",
        "/mnt/integrations/lark-cli/runtime",
    }, mounts
    for m in mounts.values():
        assert Path(m["host_path"]).is_relative_to(home), m
    assert (home / "users" / USER / "skills_view" / "custom" / CUSTOM_SKILL / "SKILL.md").is_file()
    assert (home / "skills_view" / "public" / PUBLIC_SKILL / "SKILL.md").is_file()
    for d in (lark, lark / "config", lark / "config" / "locks", lark / "data"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    assert stat.S_IMODE((lark / "config" / "config.json").stat().st_mode) == 0o600


def test_uploads_written_by_gateway_are_visible(box):
    problems = []
    got = box.sh("cat /mnt/user-data/uploads/from-gateway.txt")
    if got != UPLOAD:
        problems.append(f"shell: cat /mnt/user-data/uploads/from-gateway.txt gave {got!r}")
    got = box.sandbox.read_file("/mnt/user-data/uploads/from-gateway.txt").strip()
    if got != UPLOAD:
        problems.append(f"file API: read_file gave {got!r}")
    assert not problems, problems


def test_outputs_and_workspace_written_inside_reach_the_gateway(box):
    problems = []
    box.sh("echo made-in-sandbox > /mnt/user-data/outputs/artifact.txt")
    host = box.outputs / "artifact.txt"
    if not host.is_file() or host.read_text() != "made-in-sandbox\n":
        problems.append(f"shell write to /mnt/user-data/outputs/artifact.txt is not at {host}")
    try:
        box.sandbox.write_file("/mnt/user-data/outputs/report.md", "# report\n")
    except Exception as exc:
        problems.append(f"file API write_file(/mnt/user-data/outputs/report.md) raised {exc!r}")
    host = box.outputs / "report.md"
    if not host.is_file() or host.read_text() != "# report\n":
        problems.append(f"file API write to /mnt/user-data/outputs/report.md is not at {host}")
    box.sh("echo in-workspace > /mnt/user-data/workspace/notes.txt")
    host = box.workspace / "notes.txt"
    if not host.is_file() or host.read_text() != "in-workspace\n":
        problems.append(f"shell write to /mnt/user-data/workspace/notes.txt is not at {host}")
    assert not problems, problems


def test_acp_workspace_is_the_gateways_and_read_only(box):
    problems = []
    got = box.sh("cat /mnt/acp-workspace/acp-result.txt")
    if got != ACP:
        problems.append(f"cat /mnt/acp-workspace/acp-result.txt gave {got!r}")
    problems += box.denied_write("/mnt/acp-workspace", box.acp)
    assert not problems, problems


def test_custom_skills_show_the_users_skills_view(box):
    problems = []
    got = box.sh(f"cat /mnt/skills/custom/{CUSTOM_SKILL}/SKILL.md")
    if f"name: {CUSTOM_SKILL}" not in got:
        problems.append(f"cat /mnt/skills/custom/{CUSTOM_SKILL}/SKILL.md gave {got[:300]!r}")
    problems += box.denied_write("/mnt/skills/custom", box.deerflow.server.home / "users" / USER / "skills_view" / "custom")
    rc = box.exit_code("test -d /mnt/skills/integrations")
    if rc != "rc=0":
        problems.append(f"/mnt/skills/integrations is not a directory inside ({rc})")
    problems += box.denied_write("/mnt/skills/integrations", box.deerflow.server.home / "users" / USER / "skills_view" / "integrations")
    assert not problems, problems


def test_public_skills_show_the_global_skills_view(box):
    """Not a gateway-sent mount: DeerFlow's provisioner itself mounts
    {DEER_FLOW_HOST_BASE_DIR}/skills_view/public at /mnt/skills/public (app.py, _build_volumes)."""
    problems = []
    got = box.sh(f"cat /mnt/skills/public/{PUBLIC_SKILL}/SKILL.md")
    if f"name: {PUBLIC_SKILL}" not in got:
        problems.append(f"cat /mnt/skills/public/{PUBLIC_SKILL}/SKILL.md gave {got[:300]!r}")
    problems += box.denied_write("/mnt/skills/public", box.deerflow.server.home / "skills_view" / "public")
    assert not problems, problems


def test_lark_cli_config_read_only_with_writable_locks(box):
    """The nested mount: config (host dir 0700) read-only, config/locks inside it writable."""
    problems = []
    got = box.sh("cat /mnt/integrations/lark-cli/config/config.json")
    if got != LARK_CONFIG:
        problems.append(f"cat /mnt/integrations/lark-cli/config/config.json gave {got[:300]!r}")
    problems += box.denied_write("/mnt/integrations/lark-cli/config", box.lark / "config")
    rc = box.exit_code("echo held > /mnt/integrations/lark-cli/config/locks/api.lock")
    host = box.lark / "config" / "locks" / "api.lock"
    if rc != "rc=0":
        problems.append(f"writing /mnt/integrations/lark-cli/config/locks/api.lock failed ({rc}); locks must be writable")
    elif not host.is_file() or host.read_text() != "held\n":
        problems.append(f"/mnt/integrations/lark-cli/config/locks/api.lock is not at {host}")
    rc = box.exit_code("echo token > /mnt/integrations/lark-cli/data/token.json")
    host = box.lark / "data" / "token.json"
    if rc != "rc=0":
        problems.append(f"writing /mnt/integrations/lark-cli/data/token.json failed ({rc}); data must be writable")
    elif not host.is_file() or host.read_text() != "token\n":
        problems.append(f"/mnt/integrations/lark-cli/data/token.json is not at {host}")
    assert not problems, problems


def test_lark_cli_runtime_is_mounted_read_only(box):
    problems = []
    got = box.sh("sh /mnt/integrations/lark-cli/runtime/lark-cli")
    if got != LARK_RUNTIME:
        problems.append(f"sh /mnt/integrations/lark-cli/runtime/lark-cli gave {got[:300]!r}")
    problems += box.denied_write(
        "/mnt/integrations/lark-cli/runtime", Path(box.deerflow.paths.base_dir) / "integrations" / "lark-cli" / "sandbox-cli"
    )
    assert not problems, problems
