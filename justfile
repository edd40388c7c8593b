# strata's everyday workflows. `just --list` shows them all.

export STRATA_ROOT := env_var_or_default("STRATA_ROOT", justfile_directory() / "target/store")
strata := justfile_directory() / "target/release/strata"
fixtures := justfile_directory() / "target/fixtures"

# Demo: build strata, make a busybox base locally, build the web-ping example and show it.
demo: deps build busybox
    {{strata}} build -t web-ping:latest fixtures/web-ping
    {{strata}} images
    {{strata}} image history web-ping
    {{strata}} build -t web-ping:latest fixtures/web-ping --progress plain

# The whole test suite (installs what it needs on Debian).
test: deps
    cargo test --all-targets -- --test-threads 2
    cargo test --doc

# Install the system packages the tests and demo use (Debian; needs root).
deps:
    #!/usr/bin/env bash
    set -euo pipefail
    need=()
    for pkg in busybox-static skopeo umoci fuse3 graphviz zstd xz-utils bzip2 uidmap docker-registry openssh-client slirp4netns; do
      dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
      if [ "$(id -u)" != 0 ]; then echo "missing packages: ${need[*]} (run as root or apt-get install them)"; exit 1; fi
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi

# Release build of the binary.
build:
    cargo build --release

# The busybox base image, made from Debian's busybox-static (no registry).
busybox: build
    bash fixtures/busybox/make-rootfs.sh {{fixtures}}/busybox
    {{strata}} build -q -t busybox:latest {{fixtures}}/busybox

# A Debian minbase base image made with debootstrap (needs the Debian mirror).
debian: build
    #!/usr/bin/env bash
    set -euo pipefail
    command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    out={{fixtures}}/debian
    if [ ! -f "$out/rootfs.tar" ]; then
      rm -rf "$out/root" && mkdir -p "$out"
      debootstrap --variant=minbase bookworm "$out/root" http://deb.debian.org/debian >/dev/null
      rm -rf "$out/root"/var/lib/apt/lists/* "$out/root"/var/cache/apt/archives/*.deb
      tar --sort=name --numeric-owner -C "$out/root" -cf "$out/rootfs.tar" . && rm -rf "$out/root"
    fi
    cp fixtures/busybox/Dockerfile "$out/Dockerfile"
    {{strata}} build -q -t debian-minbase:latest "$out"

# Build every example spec in specs/ (the Debian one needs `just debian`).
specs: busybox
    {{strata}} build --progress plain -f specs/web-ping.kdl fixtures/web-ping
    {{strata}} build --progress plain -f specs/multistage.kdl fixtures/multistage
    {{strata}} build --progress plain -f specs/multi-image.kdl fixtures/multi-image
    {{strata}} build --progress plain -f specs/rootfs-base.kdl {{fixtures}}/busybox

# Build one Dockerfile or spec: just build-one specs/web-ping.kdl CONTEXT
build-one file context=".": build
    {{strata}} build --progress plain -f {{file}} {{context}}

# The Debian example: apt-get install over the mirror.
debian-example: debian
    {{strata}} build --progress plain -t debian-example -f specs/debian.kdl specs

# Mount an image read-only at DIR (FUSE).
mount image dir: build
    {{strata}} mount {{image}} {{dir}}

# Remove the demo store.
clean-store:
    rm -rf "$STRATA_ROOT"

# Benchmarks against buildah, Docker's classic builder and FUSE peers (installs them).
bench: build busybox
    bash benches/run.sh

# The cache against --no-cache under thousands of random edits (needs root): just diff-cache [SEED]
diff-cache seed="9":
    STRATA_DIFF_SEED={{seed}} STRATA_DIFF_EDITS=3000 cargo test --release --test integration differential::cache_equals_no_cache -- --nocapture

# The kill campaign: seeded kill -9 of build, load, commit, rmi, prune, pull and push on one store, verified after each (root for RUN/commit, docker-registry for pull/push): just chaos [SEED] [ROUNDS]
chaos seed="1" rounds="100":
    STRATA_CHAOS_SEED={{seed}} STRATA_CHAOS_ROUNDS={{rounds}} cargo test --test integration chaos::kill_campaign -- --nocapture

# Fuzz one target (dockerfile, kdl, unpack_layer, load, manifest) or all, SECONDS each (libFuzzer on stable): just fuzz [TARGET] [SECONDS]
fuzz target="all" seconds="60":
    bash fuzz/run.sh {{target}} {{seconds}}
