#!/usr/bin/env bash
# Runs Paddock's whole test suite on a fresh Debian machine: installs what the tests
# need (when run as root), runs every Rust test, then the Python compatibility tests that
# drive a real `paddock agent` with the AIO sandbox SDK and an MCP client.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v rg >/dev/null 2>&1 || need_apt+=(ripgrep)
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
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

if [ -x tests/compat/run.sh ]; then
  echo "==> compatibility tests (Python clients against real Paddock processes)"
  cargo build --locked -p paddock-cli
  bash tests/compat/run.sh "$PWD/target/debug/paddock"
fi
echo "==> all tests passed"
