#!/usr/bin/env bash
# Benchmarks camera-pod (release build) against the aiortc passthrough baseline and
# prints a markdown report (also written to artifacts/benchmarks.md). Extra arguments go
# to bench/bench.py, e.g. `bench/run.sh --seconds 10 --style-seconds 0`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${P2PCAMERA_VENV:-$HOME/.cache/p2pcamera/venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p2pcamera/target}"

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$repo/tests/peers/requirements.txt"

if [ -z "${P2PCAMERA_CAMERA_POD_BIN:-}" ]; then
  (cd "$repo" && cargo build --workspace --bins --release)
fi

mkdir -p "$repo/artifacts"
exec "$venv/bin/python" "$here/bench.py" --profile release --output "$repo/artifacts/benchmarks.md" "$@"
