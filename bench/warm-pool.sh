#!/usr/bin/env bash
# Warm-pool start benchmark: sessions claiming a warm pod vs starting cold, side by side in one
# run, against the test control plane with the test kubelet running real camera-pod processes
# (tests/tests/e2e.rs::bench_warm_and_cold_starts). Prints a markdown table for
# docs/benchmarks.md. P2PCAMERA_BENCH_STARTS sets the sessions per kind (default 10).
exec "$(dirname "${BASH_SOURCE[0]}")/e2e-bench.sh" bench_warm_and_cold_starts
