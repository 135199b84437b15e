# One image for every paxos-zmq process: statically linked binaries and nothing else.
# No registry is needed: the base is `scratch`, and the binaries are built on the host
# by scripts/docker-build.sh (RUSTFLAGS="-C target-feature=+crt-static", cargo profile
# `docker`); static glibc >= 2.34 still resolves docker-compose host names (files + DNS).
FROM scratch
COPY target/docker/bin/ /bin/
ENV RUST_LOG=info
# Each service picks its program with `command:` (see docker-compose.yml).
ENTRYPOINT []
