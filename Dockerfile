# Strait container image: a static-ish release build on Debian bookworm.
#   docker build -t strait .
#   docker run --rm -v $PWD/config:/etc/strait -p 7234:7234 -p 9464:9464 strait run --config /etc/strait/relay.toml
# (In a container, listen on 0.0.0.0 rather than 127.0.0.1.)
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The workspace's member crate (test and bench helpers): cargo reads every member's manifest.
COPY tests/support ./tests/support
COPY descriptors ./descriptors
RUN cargo build --release --locked --bin strait

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 strait
COPY --from=build /src/target/release/strait /usr/local/bin/strait
COPY config /etc/strait
USER strait
EXPOSE 7234 9464
ENTRYPOINT ["strait"]
CMD ["run", "--config", "/etc/strait/relay.toml"]
