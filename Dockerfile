# syntax=docker/dockerfile:1
# wsgate image: a release build in a Rust stage, then a small Debian runtime
# with only the binary, run as a non-root user. Build and run:
#   docker build -t wsgate .
#   docker run --rm -p 8080:8080 wsgate --cookie-secure false
# Checked by tests/deploy_files.rs (conventions) and checkov (security).

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Everything Cargo.toml names: the library and binary under src/, and the
# [[bench]] targets under benches/ (Cargo refuses a manifest whose declared
# targets are missing, even to build only the binary).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# Cache mounts keep the registry and the build directory between builds; the
# binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin wsgate \
    && cp target/release/wsgate /usr/local/bin/wsgate

FROM debian:bookworm-slim
# No package installs: the health check below uses bash, which the image has.
RUN groupadd --system --gid 10001 wsgate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin wsgate
COPY --from=build /usr/local/bin/wsgate /usr/local/bin/wsgate
USER 10001:10001
# Traffic (the load balancer's target port) and admin (metrics and the
# publish API; keep it off the load balancer).
EXPOSE 8080 9090
# Inside a container the admin port must listen beyond loopback to be scraped.
ENV WSGATE_LISTEN=0.0.0.0:8080 \
    WSGATE_ADMIN_LISTEN=0.0.0.0:9090
# GET /ws-health must answer 200 (it answers 503 once draining); the port and
# path follow WSGATE_LISTEN and WSGATE_HEALTH_PATH.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>\"/dev/tcp/127.0.0.1/${WSGATE_LISTEN##*:}\" && printf 'GET %s HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' \"${WSGATE_HEALTH_PATH:-/ws-health}\" >&3 && read -r -t 2 _ status _ <&3 && [ \"$status\" = 200 ]"]
# SIGTERM starts the drain (close 1001 to every socket within
# --drain-timeout, then exit 0). Give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
# Exec form: wsgate is PID 1 and receives SIGTERM itself, so the drain runs.
ENTRYPOINT ["/usr/local/bin/wsgate"]
