#!/usr/bin/env bash
# Cold-start benchmark on a node whose public address (ExternalIP 127.0.0.2) differs from its
# internal one, as cloud nodes have: sessions without a warm pool, against the test control plane
# with the test kubelet running real camera-pod processes
# (tests/tests/e2e.rs::bench_cold_starts_behind_a_public_address). Prints a markdown table for
# docs/benchmarks.md, with the pods each session went through before it was Ready.
# P2PCAMERA_BENCH_STARTS sets the number of sessions (default 10).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2pcamera/target}"
export P2PCAMERA_ONNXRUNTIME_LIB="${P2PCAMERA_ONNXRUNTIME_LIB:-$HOME/.cache/p2pcamera/onnxruntime-1.32.0/libonnxruntime.so.1.32.0}"
"$repo/tests/bin/install-prereqs.sh" test
cd "$repo"
cargo build --workspace --all-targets
exec cargo test --workspace --test e2e -- --ignored --exact bench_cold_starts_behind_a_public_address --nocapture
