#!/usr/bin/env bash
# Registry benchmarks, side by side in one run against `skopeo copy`: pull
# from and push (gzip) to Debian's docker-registry on 127.0.0.1, for the
# Debian minbase image ($PEERS/oci/debian-minbase) and a 1 GiB image of 8
# layers; a second push of an unchanged image; peak RSS of each. Prints
# strata's time as a ratio of skopeo's (targets: pull <= 0.7x, push <= 0.5x,
# second push <= 50 ms, peak RSS <= 128 MiB). Never part of the tests.
set -euo pipefail
STRATA=${STRATA:-$PWD/target/release/strata}
command -v docker-registry >/dev/null || { echo "bench: docker-registry is missing (apt-get install docker-registry)" >&2; exit 1; }
command -v skopeo >/dev/null || { echo "bench: skopeo is missing" >&2; exit 1; }
work=$(mktemp -d /var/tmp/strata-rbench.XXXXXX)
registry_pid=""
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $reg
EOF
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -s "http://$reg/v2/" >/dev/null && break; sleep 0.1; done

now() { date +%s%N; }
# Runs "$@" under /usr/bin/time; sets ms (wall time) and rss (peak KiB).
measure() {
  local t n
  t=$(now)
  /usr/bin/time -f %M -o "$work/rss" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  n=$(now)
  ms=$(awk -v d=$((n - t)) 'BEGIN { printf "%.0f", d / 1e6 }')
  rss=$(tail -1 "$work/rss")
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f MiB", k / 1024 }'; }
skopeo_copy=(skopeo copy -q --src-tls-verify=false --dest-tls-verify=false)

# One image: push from a store holding `image` (as strata and as skopeo), then pull into an empty store.
bench() {
  local label=$1 store=$2 image=$3
  echo "== $label"
  # Push: strata compresses what is not compressed yet (gzip); skopeo reads the same layout.
  rm -rf "$store/strata/compressed"
  STRATA_ROOT=$store measure "$STRATA" push -q "$image" "$reg/strata/$label:v1"
  local push_ms=$ms push_rss=$rss
  measure "${skopeo_copy[@]}" --dest-compress-format gzip "oci:$store:$image" "docker://$reg/skopeo/$label:v1"
  local sk_push_ms=$ms sk_push_rss=$rss
  echo "push:         strata ${push_ms} ms ($(mib "$push_rss")), skopeo ${sk_push_ms} ms ($(mib "$sk_push_rss")): $(ratio "$push_ms" "$sk_push_ms") (target <= 0.5x)"
  STRATA_ROOT=$store measure "$STRATA" push -q "$image" "$reg/strata/$label:v1"
  echo "second push:  strata ${ms} ms ($(mib "$rss")) (target <= 50 ms)"
  # Pull of what skopeo pushed, into empty stores.
  rm -rf "$work/pull" "$work/sk-pull"
  STRATA_ROOT=$work/pull measure "$STRATA" pull -q "$reg/skopeo/$label:v1"
  local pull_ms=$ms pull_rss=$rss
  measure "${skopeo_copy[@]}" "docker://$reg/skopeo/$label:v1" "oci:$work/sk-pull:v1"
  echo "pull:         strata ${pull_ms} ms ($(mib "$pull_rss")), skopeo ${ms} ms ($(mib "$rss")): $(ratio "$pull_ms" "$ms") (target <= 0.7x)"
}

if [ -d "${PEERS:-/nonexistent}/oci/debian-minbase" ]; then
  STRATA_ROOT=$work/deb "$STRATA" load -i "$PEERS/oci/debian-minbase" >/dev/null
  bench debian-minbase "$work/deb" debian-minbase:latest
else
  echo "== debian-minbase: skipped (\$PEERS/oci/debian-minbase is missing; run ../shared/peers/peers-setup.sh)"
fi

# 1 GiB in 8 layers of 128 MiB, base64 of random bytes (gzip shrinks it to about 3/4).
ctx=$work/big-context
mkdir -p "$ctx"
printf 'FROM scratch\n' > "$ctx/Dockerfile"
for i in 1 2 3 4 5 6 7 8; do
  head -c 100663296 /dev/urandom | base64 -w 0 | head -c 134217728 > "$ctx/layer$i"
  printf 'COPY layer%s /layer%s\n' "$i" "$i" >> "$ctx/Dockerfile"
done
STRATA_ROOT=$work/big "$STRATA" build -q -t big:latest "$ctx" >/dev/null
rm -rf "$ctx"
bench big-1g "$work/big" big:latest
