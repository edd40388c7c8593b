#!/usr/bin/env bash
# Shared build cache (issue 13): a CI fleet of 4 runners (4 stores) sharing one
# loopback registry builds 20 commits of a multi-stage project, each commit
# changing one file, commit i on runner i % 4. Total build time with no shared
# cache (each runner's own cache), with strata's --cache-to/--cache-from, and
# with buildah's --layers --cache-to/--cache-from; prints the ratios.
# Needs root (RUN), docker-registry and buildah. Never part of the tests.
set -euo pipefail
STRATA=${STRATA:-$PWD/target/release/strata}
COMMITS=${COMMITS:-20}
work=$(mktemp -d /var/tmp/strata-bench-cache.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
  delete:
    enabled: true
http:
  addr: $reg
EOF
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
regpid=$!
trap 'kill $regpid 2>/dev/null || true; for r in 0 1 2 3; do buildah --root "$work/b$r" --runroot "$work/br$r" rm -a >/dev/null 2>&1 || true; done; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "http://$reg/v2/" >/dev/null && break; sleep 0.1; done

echo "== preparing bases"
bash fixtures/busybox/make-rootfs.sh "$work/busybox" >/dev/null
export SOURCE_DATE_EPOCH=0
STRATA_ROOT=$work/seed "$STRATA" build -q -t busybox:latest "$work/busybox" >/dev/null
STRATA_ROOT=$work/seed "$STRATA" push -q busybox:latest "$reg/busybox:latest" >/dev/null 2>&1 || STRATA_ROOT=$work/seed "$STRATA" push busybox:latest "$reg/busybox:latest" >/dev/null 2>&1

# The project: a builder stage (dependencies, then sources compiled) and a small final image.
proj=$work/project
mkdir -p "$proj/src"
cat > "$proj/Dockerfile" <<EOF
FROM $reg/busybox:latest AS deps
WORKDIR /deps
COPY deps.txt ./
RUN for i in \$(seq 1 400); do head -c 65536 /dev/urandom > lib\$i.so; done && sha256sum lib*.so > deps.lock
FROM deps AS build
WORKDIR /src
COPY src/ ./
RUN for f in *.c; do for i in \$(seq 1 60); do sha256sum /deps/lib\$i.so \$f; done > \${f%.c}.o; done && cat *.o > /app.bin
FROM $reg/busybox:latest
COPY --from=deps /deps/deps.lock /app/deps.lock
COPY --from=build /app.bin /app/app.bin
COPY config.txt /app/
CMD ["/bin/sh", "-c", "wc -c /app/app.bin"]
EOF
echo "deps v0" > "$proj/deps.txt"
for f in a b c d e; do echo "int $f(void) { return 0; } // v0" > "$proj/src/$f.c"; done
echo "config v0" > "$proj/config.txt"
# Commit i changes one file: mostly sources, sometimes the config, rarely the dependencies.
change() {
  local i=$1
  case $((i % 10)) in
    3) echo "config v$i" > "$proj/config.txt" ;;
    9) echo "deps v$i" > "$proj/deps.txt" ;;
    *) f=$(echo a b c d e | cut -d' ' -f$((i % 5 + 1))); echo "int $f(void) { return $i; } // v$i" > "$proj/src/$f.c" ;;
  esac
}
snapshot() { rm -rf "$work/commits"; mkdir -p "$work/commits"; for i in $(seq 1 "$COMMITS"); do change "$i"; cp -r "$proj" "$work/commits/$i"; done; }
snapshot

now() { date +%s.%N; }
fleet() { # fleet NAME COMMAND-FOR-RUNNER-R-COMMIT-DIR…; prints total seconds
  local name=$1 total=0 start end
  for i in $(seq 1 "$COMMITS"); do
    r=$((i % 4))
    start=$(now)
    "$2" "$r" "$work/commits/$i" >"$work/$name.log" 2>&1 || { echo "$name: commit $i failed:"; tail -20 "$work/$name.log"; exit 1; }
    end=$(now)
    total=$(python3 -c "print($total + $end - $start)")
  done
  echo "$total"
}
strata_local() { STRATA_ROOT=$work/local$1 "$STRATA" build -q --pull=missing -t app "$2"; }
strata_shared() {
  STRATA_ROOT=$work/shared$1 "$STRATA" build -q --pull=missing -t app \
    --cache-from "type=registry,ref=$reg/cache" --cache-to "type=registry,ref=$reg/cache,mode=max" "$2"
}
buildah_shared() {
  buildah --root "$work/b$1" --runroot "$work/br$1" --storage-driver vfs build -q --isolation chroot --layers --tls-verify=false \
    --cache-from "$reg/bcache" --cache-to "$reg/bcache" -t app "$2"
}

echo "== fresh-store warm build from the cache (target: <= 2x the local cached rebuild plus the download of the final layers)"
ms() { python3 -c "print(round(($2 - $1) * 1000))"; }
for fixture in web-ping multistage; do
  for m in A B C; do STRATA_ROOT=$work/warm-$fixture-$m "$STRATA" build -q -t busybox:latest "$work/busybox" >/dev/null; done
  ref="$reg/warm-$fixture"
  STRATA_ROOT=$work/warm-$fixture-A "$STRATA" build -q -t app --cache-to "type=registry,ref=$ref,mode=max" "fixtures/$fixture" >/dev/null
  STRATA_ROOT=$work/warm-$fixture-A "$STRATA" push -q app "$reg/final-$fixture:latest" >/dev/null
  s=$(now); STRATA_ROOT=$work/warm-$fixture-A "$STRATA" build -q -t app "fixtures/$fixture" >"$work/rebuild.out"; e=$(now)
  t_rebuild=$(ms "$s" "$e")
  s=$(now); STRATA_ROOT=$work/warm-$fixture-C "$STRATA" pull -q "$reg/final-$fixture:latest" >/dev/null; e=$(now)
  t_download=$(ms "$s" "$e")
  s=$(now); STRATA_ROOT=$work/warm-$fixture-B "$STRATA" build -q -t app --cache-from "type=registry,ref=$ref" "fixtures/$fixture" >"$work/warm.out"; e=$(now)
  t_warm=$(ms "$s" "$e")
  same=$(cmp -s "$work/warm.out" "$work/rebuild.out" && echo "same image" || echo "DIFFERENT image")
  python3 -c "
r, d, w = $t_rebuild, $t_download, $t_warm
print(f'$fixture: local cached rebuild {r} ms, pull of the final image {d} ms, fresh-store warm build {w} ms: {w / (r + d):.2f}x of rebuild + download ($same)')"
done

echo "== fleet of 4 runners, $COMMITS commits of a multi-stage project (target: strata shared <= 0.3x buildah shared)"
t_local=$(fleet strata-local strata_local)
echo "strata, each runner's own cache: ${t_local}s"
t_shared=$(fleet strata-shared strata_shared)
echo "strata, shared registry cache:   ${t_shared}s"
t_buildah=$(fleet buildah-shared buildah_shared)
echo "buildah --cache-to/--cache-from: ${t_buildah}s"
python3 -c "
l, s, b = $t_local, $t_shared, $t_buildah
print(f'shared / own cache {s / l:.2f}x | strata shared / buildah shared {s / b:.3f}x')"
