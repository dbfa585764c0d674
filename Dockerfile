# pixeld in a container: built from source, run as a non-root user with
# data_dir on a volume. The example config is baked in; override any key
# with PIXELD_<SECTION>__<KEY> (e.g. PIXELD_KAFKA__BROKERS) or mount your own
# at /etc/pixeld/pixeld.toml.
#   docker build -t pixeld .   (or podman / buildah)
#   docker run -p 8080:8080 -e PIXELD_KAFKA__BROKERS=kafka:9092 -v pixeld-data:/var/lib/pixeld pixeld
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev python3 perl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pixeld && strip target/release/pixeld

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/pixeld pixeld \
    && mkdir -p /var/lib/pixeld /etc/pixeld && chown pixeld /var/lib/pixeld && chmod 0700 /var/lib/pixeld
COPY --from=build /src/target/release/pixeld /usr/local/bin/pixeld
COPY config/pixeld.toml config/ivt-user-agents.txt /etc/pixeld/
ENV PIXELD_SERVER__DATA_DIR=/var/lib/pixeld \
    PIXELD_SERVER__LISTEN=0.0.0.0:8080 \
    PIXELD_SERVER__ADMIN_LISTEN=0.0.0.0:9090 \
    PIXELD_LOG_FORMAT=json
USER pixeld
VOLUME /var/lib/pixeld
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=2s --retries=3 CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/pixeld"]
CMD ["serve", "--config", "/etc/pixeld/pixeld.toml"]
