#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer on the stable toolchain: libfuzzer-sys
# brings libFuzzer's C++ (built by cc), rustc's stable -C flags add the
# sanitizer-coverage instrumentation cargo-fuzz would add. No ASan (that needs
# nightly): a crash is a panic, an abort, a hang or running out of memory.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks -Cforce-frame-pointers"
# The KDL parser crates are built without it: see rustc-wrapper.sh.
export RUSTC_WRAPPER="$PWD/rustc-wrapper.sh"
# An explicit target keeps the flags off build scripts and proc macros.
exec cargo build --release --target x86_64-unknown-linux-gnu --bins "$@"
