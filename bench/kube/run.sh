#!/usr/bin/env bash
# Side-by-side benchmark of the provisioner API over the same Kubernetes API simulator:
# Paddock's control plane with the Kubernetes backend vs a Python baseline making
# DeerFlow's provisioner's Kubernetes calls (bench/kube/provisioner_baseline.py, FastAPI +
# uvicorn + the official kubernetes client). Each server gets a fresh simulator.
# Needs: cargo build --release -p paddock-kubesim --bin paddock-kubesim
#        cargo build --release -p paddock-kube --example kube_provisioner --example provisioner_load
# and a venv with fastapi, uvicorn, kubernetes (PY_VENV, default target/kube-bench-venv).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
rel="$root/target/release"
venv="${PY_VENV:-$root/target/kube-bench-venv}"
rounds="${ROUNDS:-200}"
if [ ! -x "$venv/bin/uvicorn" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet fastapi uvicorn kubernetes
fi
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
key=bench-key

wait_http() { for _ in $(seq 1 100); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
rss_kb() { awk '/VmHWM/{print $2}' "/proc/$1/status"; }

start_sim() {
    "$rel/paddock-kubesim" --listen "127.0.0.1:$1" --pod-start-ms 0 >/dev/null 2>&1 &
    pids+=($!)
    wait_http "http://127.0.0.1:$1/version"
}

run_load() { # url label
    for c in 1 32; do
        local r=$rounds
        [ "$c" -eq 32 ] && r=$((rounds / 8))
        "$rel/examples/provisioner_load" "$1" "$key" "$c" "$r" "$2"
    done
}

# Paddock
start_sim 16443
K8S_API_SERVER=http://127.0.0.1:16443 NODE_HOST=127.0.0.1 PROVISIONER_API_KEY=$key \
    "$rel/examples/kube_provisioner" 127.0.0.1:18002 >/dev/null 2>&1 &
paddock_pid=$!; pids+=($paddock_pid)
wait_http http://127.0.0.1:18002/health
run_load http://127.0.0.1:18002 paddock
echo "{\"label\": \"paddock\", \"peak_rss_kb\": $(rss_kb $paddock_pid)}"

# Python baseline
start_sim 16444
cat > "$work/kubeconfig" <<KCFG
apiVersion: v1
kind: Config
clusters: [{name: sim, cluster: {server: "http://127.0.0.1:16444"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: sim, user: u, namespace: deer-flow}}]
current-context: c
KCFG
(cd "$root/bench/kube" && KUBECONFIG_PATH="$work/kubeconfig" NODE_HOST=127.0.0.1 PROVISIONER_API_KEY=$key \
    exec "$venv/bin/uvicorn" provisioner_baseline:app --host 127.0.0.1 --port 18003 --log-level warning) &
py_pid=$!; pids+=($py_pid)
wait_http http://127.0.0.1:18003/docs
run_load http://127.0.0.1:18003 python
echo "{\"label\": \"python\", \"peak_rss_kb\": $(rss_kb $py_pid)}"
