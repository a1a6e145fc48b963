# syntax=docker/dockerfile:1
# One image with the three Catalog binaries; docker-compose.yml picks one per
# service with `command`. Build: docker build -t catalog:dev .

# ---- build ----------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target/ between builds; the binaries
# are copied out of target/ because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
    && mkdir -p /out \
    && cp target/release/read-api target/release/write-api target/release/invalidator /out/

# ---- runtime --------------------------------------------------------------
FROM debian:bookworm-slim
# curl: for the compose healthchecks (GET /readyz).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /app catalog
WORKDIR /app
COPY --from=build /out/ /usr/local/bin/
USER catalog
ENV CATALOG__LOG__FORMAT=json
EXPOSE 8080 8081 8082
CMD ["read-api"]
