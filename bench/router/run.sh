#!/usr/bin/env bash
# Router forwarding overhead: offers sent to a stand-in camera pod directly and through the
# router (real API server, real HTTPS on loopback), in the same run. Prints a Markdown table
# for the "Router" section of docs/benchmarks.md; prints the test's output and fails, with no
# table, when any offer failed.
#
#   bench/router/run.sh [offers] [sessions]   (defaults 2000 and 0; release build)
#
# With `sessions`, the routed offers are measured again once that many more sessions (each with
# its Secret) are in the router's caches, with the memory they added.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/p2pcamera/target}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
bench/provenance.sh release
if ! P2PCAMERA_BENCH_OFFERS=${1:-2000} P2PCAMERA_BENCH_SESSIONS=${2:-0} \
  cargo test --workspace --release --test router_http -- bench_forwarding_overhead --exact --nocapture >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "router benchmark failed; no report" >&2
  exit 1
fi
# The tables, each followed by a blank line.
awk '/^\|/ { print; table = 1; next } table { print ""; table = 0 }' "$log"
