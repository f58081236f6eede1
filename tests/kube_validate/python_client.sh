#!/usr/bin/env bash
# Runs tests/kube_validate/python_client.py (the official Python `kubernetes` client, as
# DeerFlow's provisioner uses it) against a fresh paddock-kubesim. Needs a built simulator
# (cargo build -p paddock-kubesim); the venv is KUBE_PY_VENV or target/kube-py-venv.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
sim="${KUBESIM:-$root/target/debug/paddock-kubesim}"
venv="${KUBE_PY_VENV:-$root/target/kube-py-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import kubernetes' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes
fi
out="$(mktemp)"
"$sim" --listen 127.0.0.1:0 > "$out" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$out" && break; sleep 0.1; done
url="$(sed -n 's/^listening on //p' "$out")"
[ -n "$url" ] || { echo "the simulator did not start" >&2; exit 1; }
"$venv/bin/python" "$root/tests/kube_validate/python_client.py" "$url"
