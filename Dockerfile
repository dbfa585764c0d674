# pixeld in a container: built from source, run as a non-root user with
# data_dir on a volume. The example config is baked in; override any key
# with PIXELD_<SECTION>__<KEY> (e.g. PIXELD_KAFKA__BROKERS) or mount your own
# at /etc/pixeld/pixeld.toml.
#   docker build -t pixeld:0.1.0 .   (or podman / buildah; tag it with the crate's version)
#   docker run -p 8080:8080 -e PIXELD_KAFKA__BROKERS=kafka:9092 -v pixeld-data:/var/lib/pixeld pixeld:0.1.0
# The admin listener (/metrics, probes, POST /-/reload) stays on
# 127.0.0.1:9090 inside the container unless configured: the image sets no
# PIXELD_SERVER__ADMIN_LISTEN, so the config's server.admin_listen (default
# 127.0.0.1:9090) decides. To scrape it from outside, set admin_listen (or
# -e PIXELD_SERVER__ADMIN_LISTEN=0.0.0.0:9090) and let only Prometheus reach
# the port: the Kubernetes example does so in its config, behind a
# NetworkPolicy (deploy/kubernetes/). Checked by tests/deploy.rs.
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
    PIXELD_LOG_FORMAT=json
USER pixeld
VOLUME /var/lib/pixeld
# Only the pixels: the admin port (9090) is on loopback unless configured.
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --retries=3 CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/pixeld"]
CMD ["serve", "--config", "/etc/pixeld/pixeld.toml"]
