#!/usr/bin/env bash
# RUSTC_WRAPPER for build.sh: compiles the KDL parser crates (kdl, winnow)
# without the coverage instrumentation. Their comparison tracing made the kdl
# target run at ~400 inputs/s (2.7 ms an input, three quarters of it in
# __sanitizer_cov_trace_*); uninstrumented they still run on every input, and
# coverage guidance stays on strata's own code, which the target is for.
rustc=$1
shift
case " $* " in
*" --crate-name kdl "* | *" --crate-name winnow "*)
  args=()
  for arg in "$@"; do
    case $arg in
    -Cpasses=sancov-module | -Cllvm-args=-sanitizer-coverage-*) ;;
    *) args+=("$arg") ;;
    esac
  done
  exec "$rustc" "${args[@]}"
  ;;
esac
exec "$rustc" "$@"
