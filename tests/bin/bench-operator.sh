#!/usr/bin/env bash
# Operator scale benchmark: a fresh control plane (tests/bin/install-test-binaries.sh builds it),
# kwok GPU nodes, N CameraSessions, the release `operator run` binary measured from outside.
#
#   tests/bin/bench-operator.sh [--sessions 500] [--nodes 50] [--gpus-per-node 10] [--concurrency 16]
#                               [--port-range 40000-40999] [--failover] [--timeout-seconds 600]
#                               [--control-plane tuned|defaults] [--operator-log warn]
#
# The control plane is tuned for 10,000 pods unless `--control-plane defaults` is given: the
# scheduler's client rate limit and kwok's pod workers are raised (PlaneTuning::TEN_THOUSAND_PODS
# in tests/src/control_plane.rs); the tests run every component at its defaults.
# Prints progress while it waits (sessions Ready, the others by status reason), stops with that
# breakdown after --timeout-seconds, and prints a markdown table at the end (the "Operator"
# section of docs/benchmarks.md is made from it).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/p2pcamera/target}
tests/bin/install-test-binaries.sh k8s etcd kwok
cargo build --workspace --release --bins
bench/provenance.sh release
exec "$CARGO_TARGET_DIR/release/operator_scale" \
  --operator "$CARGO_TARGET_DIR/release/operator" \
  --crd "$root/crds" "$@"
