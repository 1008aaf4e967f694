#!/usr/bin/env bash
# The camera-pod benchmark (bench/run.sh) on an NVIDIA GPU: a release build with the `cuda` feature,
# ONNX Runtime GPU from the PyPI `onnxruntime-gpu` wheel, the CUDA 13 and cuDNN libraries from the
# `nvidia-*` wheels (or the system's), and the CUDA execution provider required (a pod that cannot
# use the GPU fails instead of falling back to the CPU). Prints the same report as bench/run.sh
# (latency, fps, CPU, decode / filter / encode per frame, first frames, the style run, the filters
# alone) plus the GPU, driver and library versions, and writes it to artifacts/benchmarks-gpu.md.
# Extra arguments go to bench/bench.py, e.g. `bench/gpu.sh --sizes 1280x720,1920x1080`.
#
# Needs: an NVIDIA driver for CUDA 13 (`nvidia-smi` works), Rust, Python 3 with pip. Downloads
# only from PyPI. Environment:
#   P2PCAMERA_ORT_GPU_VERSION   onnxruntime-gpu version (default 1.31.1, built for CUDA 13)
#   P2PCAMERA_GPU_VENV          Python venv for the wheels (default ~/.cache/p2pcamera/venv-gpu)
#   P2PCAMERA_CUDA_LIBS         extra library directories (colon-separated) instead of the wheels'
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
ort_version="${P2PCAMERA_ORT_GPU_VERSION:-1.31.1}"
venv="${P2PCAMERA_GPU_VENV:-$HOME/.cache/p2pcamera/venv-gpu}"
# A target directory of its own: the `cuda` feature set would otherwise rebuild the default one.
export CARGO_TARGET_DIR="${P2PCAMERA_GPU_TARGET_DIR:-$HOME/.cache/p2pcamera/target-gpu}"

command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: this benchmark needs an NVIDIA GPU" >&2; exit 1; }
gpu="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1)"
echo "# GPU: $gpu" >&2

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "onnxruntime-gpu==$ort_version" -r "$repo/tests/peers/requirements.txt"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
ort_lib="$(ls "$site"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1)"
[ -n "$ort_lib" ] || { echo "libonnxruntime.so not found in the onnxruntime-gpu wheel under $site" >&2; exit 1; }
# The CUDA provider library sits next to libonnxruntime.so; CUDA and cuDNN come from the wheels
# onnxruntime-gpu depends on (nvidia/cu13/lib, nvidia/cudnn/lib), unless P2PCAMERA_CUDA_LIBS names
# other directories.
cuda_libs="${P2PCAMERA_CUDA_LIBS:-$(find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd: -)}"
export LD_LIBRARY_PATH="$(dirname "$ort_lib")${cuda_libs:+:$cuda_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export P2PCAMERA_ONNXRUNTIME_LIB="$ort_lib"
export P2PCAMERA_EXECUTION_PROVIDER=cuda
export P2PCAMERA_REQUIRE_GPU=true
export P2PCAMERA_CARGO_FEATURES=camera-pod/cuda

(cd "$repo" && cargo build --workspace --bins --release --features camera-pod/cuda)
export P2PCAMERA_CAMERA_POD_BIN="$CARGO_TARGET_DIR/release/camera-pod"
export P2PCAMERA_VENV="$venv"

mkdir -p "$repo/artifacts"
report="$repo/artifacts/benchmarks-gpu.md"
"$venv/bin/python" "$here/bench.py" --profile release --output "$report" "$@"
{
  echo
  echo "GPU: $gpu; onnxruntime-gpu $ort_version ($ort_lib); CUDA libraries: ${cuda_libs:-system}."
} | tee -a "$report"
