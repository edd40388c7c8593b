#!/usr/bin/env bash
# `just bench`: strata against its peers, measured side by side in one run.
# Installs and prepares the peers (buildah, Docker's classic builder,
# squashfuse, fuse-overlayfs, hyperfine) with ../shared/peers/peers-setup.sh,
# then runs each benchmark script and prints ratios. Never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
setup=${PEERS_SETUP:-../shared/peers/peers-setup.sh}
if [ ! -f "${PEERS:-/var/tmp/peers}/peers.env" ]; then
  [ -f "$setup" ] || { echo "bench: peers are not set up and $setup is missing" >&2; exit 1; }
  bash "$setup" >/dev/null
fi
. "${PEERS:-/var/tmp/peers}/peers.env"
export STRATA=${STRATA:-$PWD/target/release/strata}
bash benches/build.sh
if [ -f benches/mount.sh ]; then bash benches/mount.sh; fi
if [ -f benches/cache.sh ]; then bash benches/cache.sh; fi
if [ -f benches/registry.sh ]; then bash benches/registry.sh; fi
