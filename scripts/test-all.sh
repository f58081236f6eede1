#!/usr/bin/env bash
# Runs Paddock's whole test suite on a fresh Debian machine: installs what the tests
# need (when run as root), runs every Rust test, then the Python compatibility tests that
# drive a real `paddock agent` with the AIO sandbox SDK and an MCP client, and the cgroup v2
# checks in a qemu guest (tests/cgroupv2_vm installs qemu and fetches its kernel itself).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v rg >/dev/null 2>&1 || need_apt+=(ripgrep)
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
# Per-thread disk images (sandbox.disk_quota_mode: image): mkfs.ext4, e2fsck, resize2fs.
command -v mkfs.ext4 >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.ext4 ] || [ -x /sbin/mkfs.ext4 ] || need_apt+=(e2fsprogs)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need_apt+=(dnsmasq-base) # DNS of the egress test world (crates/egress/tests/world)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "warning: missing ${need_apt[*]} (run as root or install them); some tests will fail" >&2
  fi
fi

echo "==> cargo test"
cargo test --workspace --locked

echo "==> compatibility tests: real Python clients against real Paddock processes"
cargo build --locked -p paddock-cli
bin="$PWD/target/debug/paddock"
echo "--> agent-sandbox SDK + schemathesis against paddock agent"
bash tests/compat/run.sh "$bin" agent
echo "--> DeerFlow provisioner flow + AIO SDK against paddock serve"
bash tests/compat_serve/run.sh "$bin"
echo "--> DeerFlow's own provider classes and sandbox benchmark against paddock serve"
bash tests/compat_deerflow/run.sh "$bin"
echo "--> official MCP Python SDK against paddock mcp"
bash tests/compat_mcp/run.sh "$bin"
echo "--> generated and shipped Kubernetes manifests against the official schemas"
bash tests/kube_validate/run.sh "$bin"
echo "--> cgroup v2: the real binary in a qemu guest whose only hierarchy is cgroup2"
bash tests/cgroupv2_vm/run.sh "$bin"
echo "==> no process of the test run is left behind"
# Sandbox processes run as uids 951000-1016535 in the tests (the default sandbox.uid_range,
# and the tests' own fixed uids in it); the test binaries and the
# programs they start carry "paddock" in their command line. Give stragglers a moment.
leftovers() {
    ps -eo pid=,uid=,args= | awk -v self=$$ '$1 != self && (($2 >= 951000 && $2 < 1016536) || $0 ~ /target\/(debug|release)\/(paddock|deps\/)|paddock-init|paddock-kubesim|paddock-conformance-agent/)' |
        grep -v -e ' awk ' -e 'ps -eo' || true
}
for _ in $(seq 50); do
    [[ -z "$(leftovers)" ]] && break
    sleep 0.2
done
if [[ -n "$(leftovers)" ]]; then
    echo "error: the test run left these processes behind:" >&2
    leftovers >&2
    exit 1
fi
echo "==> all tests passed"
