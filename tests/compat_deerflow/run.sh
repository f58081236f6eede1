#!/usr/bin/env bash
# DeerFlow-compatibility test of `paddock serve` with DeerFlow's own client code: its
# AioSandboxProvider (RemoteSandboxBackend) and its sandbox benchmark, loaded unmodified
# at run time from the read-only reference copy beside this repository.
# Usage: tests/compat_deerflow/run.sh PADDOCK_BINARY [PYTEST_ARGS...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ $# -lt 1 ]]; then
  echo "usage: $0 PADDOCK_BINARY [PYTEST_ARGS...]" >&2
  exit 2
fi
bin="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
shift
if [[ ! -x "$bin" ]]; then
  echo "error: $bin is not an executable paddock binary" >&2
  exit 2
fi

# DeerFlow's code is never copied into the repo: it must be there at run time.
if [[ -z "${DEERFLOW_REFERENCE_DIR:-}" ]]; then
  top="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/../.." && pwd))"
  export DEERFLOW_REFERENCE_DIR="$top/../shared/docs/reference/deerflow-main"
fi
if [[ ! -d "$DEERFLOW_REFERENCE_DIR/backend/packages/harness/deerflow" ]]; then
  echo "error: DeerFlow's reference copy is missing: no $DEERFLOW_REFERENCE_DIR/backend/packages/harness/deerflow" >&2
  echo "       (expected the read-only copy at \$(git rev-parse --show-toplevel)/../shared/docs/reference/deerflow-main)" >&2
  exit 1
fi

# DeerFlow's harness requires Python >= 3.12. Prefer $COMPAT_DEERFLOW_PYTHON, then the
# newest pyenv 3.12.x, then a python3.12 on PATH; each candidate is run to prove it is 3.12.
is_py312() { [[ -x "$1" ]] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; }
python=""
candidates=()
[[ -n "${COMPAT_DEERFLOW_PYTHON:-}" ]] && candidates+=("$COMPAT_DEERFLOW_PYTHON")
pyenv_root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
while IFS= read -r p; do candidates+=("$p"); done < <(ls -d "$pyenv_root"/versions/3.12.*/bin/python3.12 2>/dev/null | sort -rV)
p="$(command -v python3.12 2>/dev/null || true)"
[[ -n "$p" ]] && candidates+=("$p")
for c in "${candidates[@]}"; do
  if is_py312 "$c"; then python="$c"; break; fi
done
if [[ -z "$python" ]]; then
  echo "error: no Python 3.12 found (DeerFlow's harness needs it): tried \$COMPAT_DEERFLOW_PYTHON, $pyenv_root/versions/3.12.*/bin/python3.12 and python3.12 on PATH" >&2
  exit 1
fi

venv="$here/.venv"
if [[ -x "$venv/bin/python" ]] && ! is_py312 "$venv/bin/python"; then
  rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

export PADDOCK_BIN="$bin"
export PYTHONDONTWRITEBYTECODE=1
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider -o timeout=300 -rfE "$here" "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit $rc
