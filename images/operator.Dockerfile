# The `operator` binary: `operator run` (controller + ACME) and `operator router` (HTTPS front
# door) share this image. Build from the repository root:
#   docker build -f images/operator.Dockerfile -t ghcr.io/p2pcamera/operator:0.1.0 .
# Pure Rust (rustls with ring, no OpenSSL): the result needs only glibc.

FROM docker.io/library/rust:1.92-bookworm AS build
WORKDIR /src
# The whole workspace is copied so Cargo.lock resolves; only the operator package is compiled.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin operator \
    && install -D -m 0755 target/release/operator /out/operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/operator /usr/local/bin/operator
USER 65532:65532
EXPOSE 8080 8443
ENTRYPOINT ["/usr/local/bin/operator"]
CMD ["run"]
