# tickerfeed container image.
#
#   docker build -t tickerfeed .
#   docker run --rm -p 127.0.0.1:8080:8080 tickerfeed
#   docker run --rm -p 127.0.0.1:8081:8080 tickerfeed --config /app/feeds/demo-replay.toml
#
# Stage 1 builds the release binaries of the workspace (the server, and the load generator from
# tests/bench/loadgen/); dependencies are compiled in their own layer from the manifests and
# Cargo.lock alone, so editing the sources does not rebuild them.
# Stage 2 is a slim Debian with the binaries, the feeds/ data and a non-root user.

FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependency layer: the two manifests, the lock file and stub targets (the build script, the
# lib and both binaries), so only a Cargo.toml or Cargo.lock change rebuilds the dependencies.
COPY Cargo.toml Cargo.lock ./
COPY tests/bench/loadgen/Cargo.toml ./tests/bench/loadgen/
RUN mkdir -p src tests/bench/loadgen/src \
 && echo 'fn main() {}' > src/build.rs \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > tests/bench/loadgen/src/main.rs \
 && : > src/lib.rs \
 && cargo build --release --locked --workspace --bins \
 && rm -rf src tests/bench/loadgen/src target/release/tickerfeed target/release/loadgen \
    target/release/deps/tickerfeed-* target/release/deps/libtickerfeed-* \
    target/release/deps/loadgen-* target/release/.fingerprint/tickerfeed-* \
    target/release/.fingerprint/loadgen-* target/release/build/tickerfeed-*

# The real sources. Compiled into the binary: feeds/universe.csv (include_str!) and the browser
# dashboard dashboards/web/ (src/build.rs embeds it; .dockerignore keeps only that part of
# dashboards/).
COPY src ./src
COPY tests/bench/loadgen/src ./tests/bench/loadgen/src
COPY feeds ./feeds
COPY dashboards ./dashboards
# Recorded in tickerfeed_build_info{commit} (there is no .git in the build context):
#   docker build --build-arg TICKERFEED_GIT_COMMIT=$(git rev-parse --short=12 HEAD) .
ARG TICKERFEED_GIT_COMMIT=unknown
ENV TICKERFEED_GIT_COMMIT=${TICKERFEED_GIT_COMMIT}
# touch: COPY keeps the files' old mtimes, which would look older than the stubs' builds.
RUN find src tests/bench/loadgen/src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --workspace --bins \
 && install -D -m 0755 target/release/tickerfeed /out/tickerfeed \
 && install -D -m 0755 target/release/loadgen /out/loadgen

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tickerfeed \
 && useradd --system --uid 10001 --gid tickerfeed --home-dir /app --shell /usr/sbin/nologin tickerfeed
COPY --from=build /out/tickerfeed /out/loadgen /usr/local/bin/
# Shipped configurations and data: --config /app/feeds/demo-replay.toml replays the history
# (paths inside a config file are relative to that file).
COPY --chown=root:root feeds /app/feeds
WORKDIR /app
USER tickerfeed:tickerfeed
ENV TICKERFEED_BIND=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["tickerfeed", "healthcheck", "--url", "http://127.0.0.1:8080"]
# SIGTERM closes every connection within --shutdown-timeout (5 s), inside Docker's 10 s grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tickerfeed"]
CMD []
