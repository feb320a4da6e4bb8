# tokengate container image: multi-stage build, small runtime image, non-root user.
#
#   docker build -t tokengate .
#   docker run --rm -p 8080:8080 -v "$PWD/conf:/etc/tokengate:ro" tokengate
#
# The shipped configuration listens on 127.0.0.1; in a container, listen on 0.0.0.0 (mount a
# configuration with `listen = ["0.0.0.0:8080"]`) and keep the admin listener unpublished.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin tokengate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin tokengate
COPY --from=build /src/target/release/tokengate /usr/local/bin/tokengate
COPY conf /etc/tokengate
USER tokengate
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tokengate"]
CMD ["run", "--config", "/etc/tokengate/tokengate.toml"]
