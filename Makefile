# p2pcamera — the two commands: `make demo` (camera-pod on https://localhost:7860) and `make test`.
SHELL := /bin/bash
P2PCAMERA_CACHE ?= $(HOME)/.cache/p2pcamera
export CARGO_TARGET_DIR ?= $(P2PCAMERA_CACHE)/target
export P2PCAMERA_ONNXRUNTIME_LIB ?= $(P2PCAMERA_CACHE)/onnxruntime-1.32.0/libonnxruntime.so.1.32.0
LISTEN ?= 127.0.0.1:7860
FILTER ?= selfie-blur
DEMO_ARGS ?=

.PHONY: demo test lint test-rust test-peers test-browser build crd prereqs-demo prereqs-test bench

## Runs camera-pod on https://localhost:7860 with the default filter (self-signed certificate).
demo: prereqs-demo
	cargo build --workspace --release --bins
	$(CARGO_TARGET_DIR)/release/camera-pod --listen $(LISTEN) --filter $(FILTER) $(DEMO_ARGS)

## Runs every check: formatting and clippy (also of the CUDA/TensorRT build), Rust unit and
## integration tests (real ONNX Runtime, real WebRTC peers, real kube-apiserver/etcd/scheduler/kwok,
## Pebble, helm), aiortc interop and headless Chromium. Every suite runs even when an earlier one
## fails (`make -k`); the target fails if any did.
test: prereqs-test
	$(MAKE) -k lint test-rust test-peers test-browser

## The GPU build (CUDA and TensorRT execution providers) compiles without a GPU; clippy keeps it
## from rotting.
GPU_FEATURES := camera-pod/cuda,camera-pod/tensorrt

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --workspace --all-targets --features $(GPU_FEATURES) -- -D warnings

test-rust:
	cargo build --workspace --all-targets
	cargo test --workspace --no-fail-fast

test-peers:
	tests/peers/run.sh

test-browser:
	npm --prefix tests/browser test

prereqs-demo:
	tests/bin/install-prereqs.sh demo

prereqs-test:
	tests/bin/install-prereqs.sh test

build:
	cargo build --workspace --all-targets

## Regenerates crds/ from the Rust types.
crd:
	cargo run --quiet --bin operator -- crd --kind camera-session > crds/camerasessions.p2pcamera.io.yaml
	cargo run --quiet --bin operator -- crd --kind camera-class > crds/cameraclasses.p2pcamera.io.yaml
	cp crds/*.yaml charts/p2pcamera/crds/

bench: prereqs-test
	bench/run.sh
