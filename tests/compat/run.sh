#!/usr/bin/env bash
# AIO wire-compatibility tests for Paddock's agent API.
#
# Usage:
#   tests/compat/run.sh SERVER_BINARY [SUBCOMMAND...]   # e.g. target/debug/paddock agent
#   tests/compat/run.sh http://HOST:PORT                # an already running agent
#                                                       # (token in $PADDOCK_AGENT_TOKEN)
#
# A binary is started with `paddock agent`'s arguments (--listen 127.0.0.1:0
# --token-file F --data-dir D --user U --thread T); its first stdout line must be
# `listening on http://ADDR`. Then the agent-sandbox SDK's pytest suite and a bounded
# schemathesis run (zero 5xx allowed) are run against it. Exits non-zero on any failure,
# including pytest collecting no tests. Nothing is built here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${COMPAT_VENV:-$here/.venv}"
examples="${COMPAT_MAX_EXAMPLES:-30}"

if [[ $# -lt 1 ]]; then
  echo "usage: $0 SERVER_BINARY [SUBCOMMAND...] | http://HOST:PORT" >&2
  exit 2
fi

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [[ "$1" == http://* || "$1" == https://* ]]; then
  origin="${1%/}"
  token="${PADDOCK_AGENT_TOKEN:-}"
else
  token="compat$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  printf '%s' "$token" > "$work/token"
  mkdir -p "$work/data"
  "$@" --listen 127.0.0.1:0 --token-file "$work/token" --data-dir "$work/data" \
    --user compat --thread compat > "$work/stdout" 2> "$work/stderr" &
  server_pid=$!
  origin=""
  for _ in $(seq 1 300); do
    if line="$(head -n1 "$work/stdout" 2>/dev/null)" && [[ "$line" == "listening on "* ]]; then
      origin="${line#listening on }"
      break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "the server exited before listening:" >&2
      cat "$work/stderr" >&2
      exit 1
    fi
    sleep 0.1
  done
  if [[ -z "$origin" ]]; then
    echo "the server did not print 'listening on ...' within 30 s" >&2
    exit 1
  fi
fi
echo "agent under test: $origin"

export PADDOCK_AGENT_URL="$origin"
export PADDOCK_AGENT_TOKEN="$token"

status=0
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$here"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "pytest collected no tests: failing" >&2
  status=1
elif [[ $rc -ne 0 ]]; then
  status=1
fi

auth=()
schema="$origin/openapi.json"
if [[ -n "$token" ]]; then
  auth=(-H "Authorization: Bearer $token")
fi
common=(--url "$origin"
  --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance
  --max-examples "$examples"
  --request-timeout 60 --workers 1 --no-color --generation-database none
  --suppress-health-check all "${auth[@]}")

# Every operation except the ones that run commands, with valid and invalid inputs.
# (Run from the scratch dir so schemathesis' own caches stay out of the repository.)
cd "$work"
set +e
"$venv/bin/schemathesis" run "$schema" "${common[@]}" \
  --exclude-path-regex '^/v1/(shell/exec|bash/exec|exec|tools/.*)$'
rc=$?
# Command-running operations with invalid inputs only (so fuzzing never runs arbitrary
# generated commands, even against an unisolated test server).
"$venv/bin/schemathesis" run "$schema" "${common[@]}" --mode negative \
  --include-path-regex '^/v1/(shell/exec|bash/exec|exec)$'
rc2=$?
set -e
if [[ $rc -ne 0 || $rc2 -ne 0 ]]; then
  status=1
fi

exit $status
