#!/usr/bin/env bash
# TURN benchmark: an aiortc camera connecting to a real camera-pod (debug build, passthrough
# filter) directly and through coturn over TURN/UDP, TURN/TCP and TURN/TLS, interleaved in one run,
# inside a network namespace whose firewall forces each path
# (operator/tests/turn_relay.rs::bench_direct_and_relayed_paths). Prints the provenance line and a
# Markdown table for docs/benchmarks.md; fails when a connect took another path than the one asked
# for. Then headless Chromium with p2pcamera.js, trickle ICE on and off, given a TURN/TCP server
# 50 ms away, on a direct and a relayed path (bench_chromium_trickle_with_a_distant_turn_server).
# P2PCAMERA_BENCH_CONNECTS sets the connects per path (default 5). Needs root (the namespace).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2pcamera/target}"
export P2PCAMERA_ONNXRUNTIME_LIB="${P2PCAMERA_ONNXRUNTIME_LIB:-$HOME/.cache/p2pcamera/onnxruntime-1.32.0/libonnxruntime.so.1.32.0}"
"$repo/tests/bin/install-prereqs.sh" test
cd "$repo"
cargo build --workspace --all-targets
"$here/provenance.sh" debug
for bench in bench_direct_and_relayed_paths bench_chromium_trickle_with_a_distant_turn_server; do
  cargo test --workspace --test turn_relay -- --ignored --exact "$bench" --nocapture
done
