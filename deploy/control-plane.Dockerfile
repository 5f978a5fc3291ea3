# syntax=docker/dockerfile:1
#
# Outpost control plane: the tenant REST API, the sled store and the watch
# stream edge nodes follow. Build from the repository root with BuildKit
# (the default builder since Docker 23):
#
#   docker build -f deploy/control-plane.Dockerfile -t outpost/control-plane:dev .
#
# The build context is cut down to the Cargo workspace by
# deploy/control-plane.Dockerfile.dockerignore (BuildKit reads the ignore file
# named after the Dockerfile), so target/, .git, guest toolchains and any
# deploy/.env never reach the builder.
#
# Run (every flag also has an OUTPOST_* variable; see `control-plane --help`):
#
#   docker run -d -p 127.0.0.1:7070:7070 -v outpost-cp:/var/lib/outpost \
#     -v "$PWD/tls:/etc/outpost/tls:ro" -e OUTPOST_TLS_CERT=/etc/outpost/tls/control-plane.crt \
#     -e OUTPOST_TLS_KEY=/etc/outpost/tls/control-plane.key \
#     -e OUTPOST_ADMIN_TOKEN=... -e OUTPOST_CERT_KEY=... outpost/control-plane:dev
#
# OUTPOST_ADMIN_TOKEN is required (16+ characters); nodes get their own
# identities (outpost nodes add). Without OUTPOST_CERT_KEY the key sealing
# tenants' secrets is generated once into the data volume
# (/var/lib/outpost/cert.key); with OUTPOST_STORE=etcd://… it is required.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Every workspace member is needed for cargo to load the workspace, even
# though only one binary is built.
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY runtime runtime
COPY serve serve
COPY link link
COPY oci oci
COPY edge-node edge-node
COPY control-plane control-plane
COPY sdk sdk
COPY cli cli
COPY fixtures fixtures
COPY e2e e2e
# protoc and the well-known .proto files: the etcd client's build script
# generates its gRPC code with them.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
# JOBS caps cargo's parallelism (e.g. --build-arg JOBS=2 on a small host).
ARG JOBS=""
# The registry and target directories are BuildKit cache mounts shared with
# edge-node.Dockerfile (same ids), so the second image reuses the compiled
# dependencies (wasmtime, cranelift, ...) instead of building them again.
RUN --mount=type=cache,id=outpost-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=outpost-cargo-target,target=/src/target,sharing=locked \
    cargo build --release --locked ${JOBS:+-j "$JOBS"} -p outpost-control-plane --bin control-plane \
 && install -D -m 0755 target/release/control-plane /out/control-plane

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="outpost-control-plane" \
      org.opencontainers.image.description="Outpost control plane: tenant REST API, sled store, watch stream for edge nodes" \
      org.opencontainers.image.licenses="Apache-2.0"
# ca-certificates for any TLS client use; curl only for the HEALTHCHECK.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 outpost \
 && useradd --system --uid 10001 --gid outpost --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin outpost \
 && install -d -o outpost -g outpost -m 0700 /var/lib/outpost
COPY --from=build /out/control-plane /usr/local/bin/control-plane

# Containers listen on every interface; publish the port deliberately (the
# API is plain HTTP: keep it on a private network or behind a TLS proxy).
ENV OUTPOST_LISTEN=0.0.0.0:7070 \
    OUTPOST_DATA_DIR=/var/lib/outpost \
    RUST_LOG=info
WORKDIR /var/lib/outpost
VOLUME ["/var/lib/outpost"]
EXPOSE 7070
USER 10001:10001
# The port follows OUTPOST_LISTEN; `/healthz` needs no token.
# HTTPS when a certificate is configured. --insecure only here: the probe
# sends no token and reads nothing but "ok", and the certificate names the
# service, not 127.0.0.1 (compose.yaml's healthcheck verifies it).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/bin/sh", "-c", "s=http; [ -n \"${OUTPOST_TLS_CERT:-}\" ] && s=https; curl -fsS --insecure --max-time 2 \"$s://127.0.0.1:${OUTPOST_LISTEN##*:}/healthz\" >/dev/null || exit 1"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/control-plane"]
