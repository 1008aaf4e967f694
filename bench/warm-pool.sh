#!/usr/bin/env bash
# Warm-pool start benchmark: sessions claiming a warm pod vs starting cold, side by side in one
# run, against the test control plane with the test kubelet running real camera-pod processes
# (tests/tests/e2e.rs::bench_warm_and_cold_starts). Prints a markdown table for
# docs/benchmarks.md. P2PCAMERA_BENCH_STARTS sets the sessions per kind (default 10).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2pcamera/target}"
export P2PCAMERA_ONNXRUNTIME_LIB="${P2PCAMERA_ONNXRUNTIME_LIB:-$HOME/.cache/p2pcamera/onnxruntime-1.32.0/libonnxruntime.so.1.32.0}"
"$repo/tests/bin/install-prereqs.sh" test
cd "$repo"
cargo build --workspace --all-targets
exec cargo test --workspace --test e2e -- --ignored --exact bench_warm_and_cold_starts --nocapture
