# camera-pod for GPU nodes: CUDA 13 + cuDNN 9 runtime, ONNX Runtime GPU (CUDA and TensorRT
# execution providers) from the PyPI `onnxruntime-gpu` wheel, TensorRT 10 from PyPI, non-root,
# read-only root file system friendly (models are cached on the volume the operator mounts at
# /var/cache/p2pcamera). Build from the repository root:
#   docker build -f images/camera-pod.Dockerfile -t ghcr.io/p2pcamera/camera-pod:0.1.0 .
# Builder and runtime are both Ubuntu 24.04 so the libvpx shared library versions match.

ARG CUDA_IMAGE=docker.io/nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ARG TENSORRT_VERSION=10.13.3.9

FROM docker.io/library/ubuntu:24.04 AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates curl build-essential pkg-config nasm libvpx-dev \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.92
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY . .
# ort loads ONNX Runtime at run time (load-dynamic); `cuda` and `tensorrt` register the GPU providers.
RUN --mount=type=cache,target=/root/.cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin camera-pod --features camera-pod/cuda,camera-pod/tensorrt \
    && install -D -m 0755 target/release/camera-pod /out/camera-pod

# ONNX Runtime GPU and TensorRT shared libraries, unpacked from their PyPI wheels.
FROM docker.io/library/python:3.12-slim-bookworm AS onnxruntime
ARG ONNXRUNTIME_GPU_VERSION
ARG TENSORRT_VERSION
RUN pip download --no-deps --only-binary=:all: --dest /wheels \
        "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" "tensorrt-cu13-libs==${TENSORRT_VERSION}" \
    && mkdir -p /opt/onnxruntime/lib \
    && cd /wheels && for w in *.whl; do python -m zipfile -e "$w" "/tmp/${w%.whl}"; done \
    && cp /tmp/onnxruntime_gpu-*/onnxruntime/capi/libonnxruntime*.so* /opt/onnxruntime/lib/ \
    && cp /tmp/tensorrt_cu13_libs-*/tensorrt_libs/lib*.so* /opt/onnxruntime/lib/ \
    && ln -sf "libonnxruntime.so.${ONNXRUNTIME_GPU_VERSION}" /opt/onnxruntime/lib/libonnxruntime.so

FROM ${CUDA_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libvpx9 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=onnxruntime /opt/onnxruntime/lib /opt/onnxruntime/lib
COPY --from=build /out/camera-pod /usr/local/bin/camera-pod
# The providers (libonnxruntime_providers_*.so) and TensorRT sit next to libonnxruntime.
ENV LD_LIBRARY_PATH=/opt/onnxruntime/lib:${LD_LIBRARY_PATH}
ENV P2PCAMERA_ONNXRUNTIME_LIB=/opt/onnxruntime/lib/libonnxruntime.so \
    P2PCAMERA_MODEL_CACHE_DIR=/var/cache/p2pcamera/models \
    P2PCAMERA_LOG_FORMAT=json
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/camera-pod"]
