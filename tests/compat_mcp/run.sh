#!/usr/bin/env bash
# MCP compatibility test: the official MCP Python SDK, as a stdio client, spawns
# `PADDOCK_BINARY mcp --data-dir TMP --user u --thread t --bash-timeout-secs 2`, lists the
# tools and calls each of them, including failures.
#
# Usage: tests/compat_mcp/run.sh PADDOCK_BINARY      # e.g. target/debug/paddock
#
# Creates (or reuses) a venv in tests/compat_mcp/.venv (override with COMPAT_MCP_VENV),
# installs requirements.txt, runs pytest. Exits non-zero on any failure, including
# pytest collecting no tests (its exit code 5). Nothing is built here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${COMPAT_MCP_VENV:-$here/.venv}"

if [[ $# -ne 1 ]]; then
  echo "usage: $0 PADDOCK_BINARY" >&2
  exit 2
fi
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
if [[ ! -x "$bin" ]]; then
  echo "$0: $1 is not an executable (build it with: cargo build -p paddock-cli)" >&2
  exit 2
fi

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

set +e
PADDOCK_BIN="$bin" "$venv/bin/python" -m pytest -q -p no:cacheprovider "$here"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  echo "$0: pytest collected no tests" >&2
  exit 1
fi
exit $status
