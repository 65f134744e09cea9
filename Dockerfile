# The one `strata` image: `strata controller`, `strata worker` and the CLI.
#
#   docker build -t strata:0.1.0 .        (or: podman build -t strata:0.1.0 .)

# Build stage: Rust on Debian bookworm, with the headers the crates link against.
FROM docker.io/library/rust:1.89-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev libzstd-dev libsqlite3-dev libostree-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin strata \
 && install -m 0755 target/release/strata /usr/local/bin/strata

# Runtime: skopeo moves images (Strata drives it over its image-proxy protocol);
# libostree reads ostree repositories; kubectl and jq serve the Tekton job task.
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates skopeo libostree-1-1 libssl3 libzstd1 libsqlite3-0 jq kubernetes-client \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 strata \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent strata
COPY --from=build /usr/local/bin/strata /usr/local/bin/strata
USER 65532:65532
ENTRYPOINT ["strata"]
CMD ["--help"]
