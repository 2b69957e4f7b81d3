# syntax=docker/dockerfile:1
# Proctor's image: `proctord` (the server, `serve` by default) and the `proctor` CLI.
# No Docker engine runs on the development machines: CI checks this file with
# hadolint only, so the image build itself is not exercised there.

# --- Build: both binaries, from source. SQLite and libpq are compiled in by their
# crates (C, built with gcc); libpq's TLS uses an OpenSSL built from source for it
# alone (openssl-src: needs perl and make); all other TLS is rustls with ring.
FROM rust:1.95-slim-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev make perl pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Compiled into the binary: the settings' defaults, both migration sets and the
# vendored Swagger UI served at /docs.
COPY config ./config
COPY migrations ./migrations
COPY assets ./assets
# Not built here, but Cargo.toml names these targets.
COPY tests ./tests
COPY benches ./benches
RUN cargo build --release --locked --bin proctord --bin proctor

# --- Run: a slim base, a non-root user, the two binaries and config/ only.
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 proctor \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
       --home-dir /var/lib/proctor --create-home proctor
COPY --from=build /src/target/release/proctord /src/target/release/proctor /usr/local/bin/
# PROCTOR_ENVIRONMENT=<env> layers /etc/proctor/config/<env>.toml over the defaults.
COPY config /etc/proctor/config
# SSL_CERT_FILE: where libpq's OpenSSL (built from source) finds the system's roots
# for PROCTOR_POSTGRES_SSLROOTCERT=system.
ENV PROCTOR_APP_HOST=0.0.0.0 \
    PROCTOR_CONFIG_DIR=/etc/proctor/config \
    PROCTOR_DATA_DIR=/var/lib/proctor \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 10001:10001
WORKDIR /var/lib/proctor
EXPOSE 5001
# No HEALTHCHECK: the image has no curl. Kubernetes probes the HTTP endpoints instead:
# liveness GET /ping, readiness GET /health/ready (see deploy/deployment.yaml).
ENTRYPOINT ["proctord"]
CMD ["serve"]
