#!/usr/bin/env bash
# Runs one ignored benchmark of tests/tests/e2e.rs against the test control plane (installs the
# test prerequisites, builds the workspace first): `bench/e2e-bench.sh <test name>`. The start
# benchmarks bench/warm-pool.sh and bench/cold-start.sh call it.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 <ignored e2e test name>" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2pcamera/target}"
export P2PCAMERA_ONNXRUNTIME_LIB="${P2PCAMERA_ONNXRUNTIME_LIB:-$HOME/.cache/p2pcamera/onnxruntime-1.32.0/libonnxruntime.so.1.32.0}"
"$repo/tests/bin/install-prereqs.sh" test
cd "$repo"
cargo build --workspace --all-targets
exec cargo test --workspace --test e2e -- --ignored --exact "$1" --nocapture
