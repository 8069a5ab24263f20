# Build stage: the official Rust image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin petrel

# Run stage: a slim Debian, a non-root user.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/petrel \
        --shell /usr/sbin/nologin petrel \
    && mkdir -p /etc/petrel /var/lib/petrel \
    && chown petrel:petrel /var/lib/petrel
COPY --from=build /src/target/release/petrel /usr/local/bin/petrel
# Listens on 0.0.0.0:1883 and [::]:1883, anonymous clients allowed:
# see the file, and mount your own over it to change that.
COPY config/container.toml /etc/petrel/petrel.toml
USER petrel
WORKDIR /var/lib/petrel
VOLUME ["/var/lib/petrel"]
EXPOSE 1883 9883
# Ready: every listener bound, the store loaded (the admin listener's
# /readyz, asked by the broker binary itself: the image has no curl).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/petrel", "healthcheck", "--url", "http://127.0.0.1:9883/readyz"]
ENTRYPOINT ["/usr/local/bin/petrel"]
CMD ["--config", "/etc/petrel/petrel.toml"]
