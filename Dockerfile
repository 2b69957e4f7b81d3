# syntax=docker/dockerfile:1
# Build: both binaries, from source (SQLite and libpq are compiled in; no OpenSSL).
FROM rust:1.95-slim-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ make perl pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY config ./config
COPY tests ./tests
RUN cargo build --release --locked --bin proctord --bin proctor

# Run: a slim base, a non-root user, the binaries and config/ only.
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/proctor --create-home proctor
COPY --from=build /src/target/release/proctord /src/target/release/proctor /usr/local/bin/
COPY config /etc/proctor/config
ENV PROCTOR_APP_HOST=0.0.0.0 \
    PROCTOR_CONFIG_DIR=/etc/proctor/config \
    PROCTOR_DATA_DIR=/var/lib/proctor
USER 10001
WORKDIR /var/lib/proctor
EXPOSE 5001
# Kubernetes probes: liveness GET /ping, readiness GET /health/ready (see deploy/).
ENTRYPOINT ["proctord"]
CMD ["serve"]
