#!/usr/bin/env bash
# Builds the static binaries and the paxos-zmq:latest image, with no registry: the image
# is FROM scratch and the binaries are built here.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
TARGET=x86_64-unknown-linux-gnu
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
bold "==> Building static binaries (crt-static, --target $TARGET)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile docker --target "$TARGET" \
    -p reference -p proxy -p broker -p node -p bots -p client
mkdir -p target/docker/bin
for binary in reference proxy broker node bots client; do
    # The image keeps symbols (readable backtraces) and sheds the standard library's
    # debug info.
    strip --strip-debug -o "target/docker/bin/$binary" "$TARGET_DIR/$TARGET/docker/$binary"
done
bold "==> Building the image paxos-zmq:latest (FROM scratch)"
# The classic builder: BuildKit would try to pull its frontend image.
DOCKER_BUILDKIT=0 docker build -q -t paxos-zmq:latest . >/dev/null
docker image ls paxos-zmq:latest --format 'image {{.Repository}}:{{.Tag}}  {{.Size}}'
