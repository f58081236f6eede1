#!/usr/bin/env bash
# Validates every manifest in deploy/kubernetes/ and every Pod/Service/NetworkPolicy the
# Kubernetes backend generates (the insta snapshots in crates/kube/tests/snapshots/)
# against the official Kubernetes OpenAPI schemas, strictly (unknown fields fail).
# Uses a venv with `kubernetes-validate` from PyPI. Exit status: non-zero on any failure.
#
#   tests/kube_validate/run.sh            # validates against kubernetes-validate's default version
#   K8S_VERSION=1.33.0 tests/kube_validate/run.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${KUBE_VALIDATE_VENV:-$root/target/kube-validate-venv}"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

files=()
for f in "$root"/deploy/kubernetes/*.yaml; do
    files+=("$f")
done
# A snapshot is an insta header (between the first two `---` lines) then the YAML stream.
for snap in "$root"/crates/kube/tests/snapshots/*.snap; do
    out="$work/$(basename "$snap" .snap).yaml"
    awk 'BEGIN{n=0} n>=2{print; next} /^---$/{n++}' "$snap" > "$out"
    if [ ! -s "$out" ]; then
        echo "FAIL: $snap has no YAML after its header" >&2
        exit 1
    fi
    files+=("$out")
done

args=(--strict --no-warn)
if [ -n "${K8S_VERSION:-}" ]; then
    args+=(-k "$K8S_VERSION")
fi
status=0
for f in "${files[@]}"; do
    if ! "$venv/bin/kubernetes-validate" "${args[@]}" "$f"; then
        echo "FAIL: $f" >&2
        status=1
    fi
done
if [ "$status" -eq 0 ]; then
    echo "all ${#files[@]} files valid"
fi
exit "$status"
