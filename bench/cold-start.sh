#!/usr/bin/env bash
# Cold-start benchmark on a node whose public address (ExternalIP 127.0.0.2) differs from its
# internal one, as cloud nodes have: sessions without a warm pool, against the test control plane
# with the test kubelet running real camera-pod processes
# (tests/tests/e2e.rs::bench_cold_starts_behind_a_public_address). Prints a markdown table for
# docs/benchmarks.md, with the pods each session went through before it streamed.
# P2PCAMERA_BENCH_STARTS sets the number of sessions (default 10).
exec "$(dirname "${BASH_SOURCE[0]}")/e2e-bench.sh" bench_cold_starts_behind_a_public_address
