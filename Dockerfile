# syntax=docker/dockerfile:1
# Multi-stage build: a release binary on a small Debian runtime, run as non-root.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin wsgate

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin wsgate
COPY --from=build /src/target/release/wsgate /usr/local/bin/wsgate
USER 10001
# Traffic (the load balancer's target port) and admin (metrics; keep it private).
EXPOSE 8080 9090
# Inside a container the admin port must listen beyond loopback to be scraped.
ENV WSGATE_LISTEN=0.0.0.0:8080 \
    WSGATE_ADMIN_LISTEN=0.0.0.0:9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/ws-health"]
# Exec form: wsgate is PID 1 and receives SIGTERM directly, so the drain runs.
ENTRYPOINT ["/usr/local/bin/wsgate"]
