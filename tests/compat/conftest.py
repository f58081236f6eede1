"""Fixtures for the AIO wire-compatibility tests.

The server under test is started by run.sh (or given as a URL); these tests only
know its base URLs from the environment:
  PADDOCK_AGENT_URL   origin, e.g. http://127.0.0.1:PORT
  PADDOCK_AGENT_TOKEN the token (capability path segment and bearer secret)
"""

import os
import uuid

import httpx
import pytest
from agent_sandbox import Sandbox


def _origin() -> str:
    url = os.environ.get("PADDOCK_AGENT_URL")
    if not url:
        pytest.fail("PADDOCK_AGENT_URL is not set; run the tests through tests/compat/run.sh")
    return url.rstrip("/")


@pytest.fixture(scope="session")
def origin() -> str:
    return _origin()


@pytest.fixture(scope="session")
def token() -> str:
    return os.environ.get("PADDOCK_AGENT_TOKEN", "")


@pytest.fixture(scope="session")
def base_url(origin: str, token: str) -> str:
    """The capability URL an unmodified AIO client is handed."""
    return f"{origin}/s/{token}" if token else origin


@pytest.fixture(scope="session")
def client(base_url: str) -> Sandbox:
    return Sandbox(base_url=base_url, timeout=120)


@pytest.fixture(scope="session")
def bearer_client(origin: str, token: str) -> Sandbox:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Sandbox(base_url=origin, timeout=120, headers=headers)


@pytest.fixture()
def workdir(client: Sandbox) -> str:
    """A fresh directory under the workspace for one test."""
    path = f"/mnt/user-data/workspace/compat-{uuid.uuid4().hex[:12]}"
    res = client.bash.exec(command=f"mkdir -p '{path}'")
    assert res.success and res.data.exit_code == 0, res
    return path


@pytest.fixture(scope="session")
def raw(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url + "/", timeout=60)
