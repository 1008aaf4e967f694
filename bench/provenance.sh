#!/usr/bin/env bash
# Prints where a benchmark report comes from, as one Markdown line: the commit (and whether the
# working tree had changes), the build profile, the machine and its load, and the date. Every
# report generator prints it first, so a number in docs/benchmarks.md can be traced and re-run.
#
#   bench/provenance.sh <profile>      e.g. bench/provenance.sh release
set -euo pipefail
profile=${1:?usage: provenance.sh <build profile>}
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
commit=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && ! git -C "$repo" diff --quiet HEAD -- 2>/dev/null; then
  commit="$commit with uncommitted changes"
fi
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
cpus=$(nproc)
mem=$(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
read -r load1 _ < /proc/loadavg
echo "Provenance: commit ${commit}; ${profile} build; ${cpu:-unknown CPU}, ${cpus} CPUs, ${mem}," \
  "$(uname -sr); 1-minute load average ${load1} at start; $(date -u +%Y-%m-%dT%H:%MZ)."
