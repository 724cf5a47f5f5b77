# Multi-stage build: cargo-chef caches the dependency layer, so a source change rebuilds only our
# crate. Runtime: debian-slim with CA certificates (reqwest/rustls reads the OS store), non-root.
# The image carries the worker only: meta-sandbox (the workspace's other crate) is for tests and
# demos, built with `cargo build -p meta-sandbox`.
# Not built in CI (no Docker engine there); kept conventional.
FROM rust:1.95-bookworm AS chef
# As .cargo/config.toml says (the dependency layer is built before the sources are copied in).
ENV AWS_LC_SYS_NO_JITTER_ENTROPY=1
RUN cargo install cargo-chef --locked
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin cdp-meta-sync
COPY . .
RUN cargo build --release --locked -p cdp-meta-sync --bin cdp-meta-sync

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home app
COPY --from=builder /app/target/release/cdp-meta-sync /usr/local/bin/cdp-meta-sync
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER app
ENV RUN_MODE=scheduler LOG_FORMAT=json PORT=8080
EXPOSE 8080
# Migrations first (safe with several replicas: an advisory lock serializes them), then the worker.
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["run"]
