# syntax=docker/dockerfile:1
#
# Outpost edge node: routes HTTP(S) requests by Host and path to tenants'
# WebAssembly workers. Build from the repository root with BuildKit:
#
#   docker build -f deploy/edge-node.Dockerfile -t outpost/edge-node:dev .
#
# The build context is cut down to the Cargo workspace by
# deploy/edge-node.Dockerfile.dockerignore.
#
# Sync mode (follow a control plane; the cache volume lets a restarted node
# serve before, or without, the control plane):
#
#   docker run -d -p 8080:8080 -p 8443:8443 -v outpost-edge:/var/cache/outpost \
#     -e OUTPOST_CONTROL_PLANE=http://control-plane:7070 -e OUTPOST_NODE_TOKEN=... \
#     -e OUTPOST_NODE_ID=edge-1 -e OUTPOST_HTTPS=0.0.0.0:8443 outpost/edge-node:dev
#
# Standalone mode: mount components and pass `--app HOST=/apps/x.wasm` (or
# OUTPOST_APPS, or --config FILE) instead of OUTPOST_CONTROL_PLANE.
#
# HTTPS is off unless OUTPOST_HTTPS is set; the default certificate (for
# names no tenant uploaded one for) is a generated self-signed one unless
# OUTPOST_TLS_CERT / OUTPOST_TLS_KEY name mounted PEM files.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Every workspace member is needed for cargo to load the workspace.
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
ARG JOBS=""
# Same cache ids as control-plane.Dockerfile: dependencies compile once.
RUN --mount=type=cache,id=outpost-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=outpost-cargo-target,target=/src/target,sharing=locked \
    cargo build --release --locked ${JOBS:+-j "$JOBS"} -p outpost-edge-node --bin edge-node \
 && install -D -m 0755 target/release/edge-node /out/edge-node

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="outpost-edge-node" \
      org.opencontainers.image.description="Outpost edge node: runs tenants' wasi:http workers in fresh, limited sandboxes" \
      org.opencontainers.image.licenses="Apache-2.0"
# ca-certificates: guests' outbound HTTPS to allow-listed hosts; curl only
# for the HEALTHCHECK.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 outpost \
 && useradd --system --uid 10001 --gid outpost --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin outpost \
 && install -d -o outpost -g outpost -m 0700 /var/cache/outpost
COPY --from=build /out/edge-node /usr/local/bin/edge-node

# Client traffic and metrics on every interface inside the container. Only
# publish 8080/8443 to the world; 9100 (/metrics, /healthz) is for
# Prometheus and health checks.
ENV OUTPOST_HTTP=0.0.0.0:8080 \
    OUTPOST_METRICS=0.0.0.0:9100 \
    OUTPOST_CACHE_DIR=/var/cache/outpost \
    RUST_LOG=info
WORKDIR /var/cache/outpost
VOLUME ["/var/cache/outpost"]
EXPOSE 8080 8443 9100
USER 10001:10001
# The metrics listener answers /healthz; its port follows OUTPOST_METRICS.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["/bin/sh", "-c", "curl -fsS --max-time 2 \"http://127.0.0.1:${OUTPOST_METRICS##*:}/healthz\" >/dev/null || exit 1"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/edge-node"]
