#!/usr/bin/env bash
# DeerFlow-compatibility test of `paddock serve`: the provisioner calls, then the AIO SDK
# on the returned sandbox_url. Usage: tests/compat_serve/run.sh PADDOCK_BINARY
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${COMPAT_VENV:-$here/../compat/.venv}"
if [[ $# -ne 1 ]]; then
  echo "usage: $0 PADDOCK_BINARY" >&2
  exit 2
fi
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/../compat/requirements.txt"
export PADDOCK_BIN="$1"
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$here"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit $rc
