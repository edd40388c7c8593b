#!/usr/bin/env bash
# Build benchmarks (issues 2, 3, 4): cached rebuild, cold COPY of a large
# context, per-RUN overhead, a Debian apt build, spec parsing, and parallel
# images. Each prints strata's figure, the peers' and the ratio.
set -euo pipefail
: "${PEERS:?source peers.env first (benches/run.sh does)}"
STRATA=${STRATA:-$PWD/target/release/strata}
work=$(mktemp -d /var/tmp/strata-bench.XXXXXX)
trap 'rm -rf "$work"; [ -n "${DOCKER_STARTED:-}" ] && "$PEERS/bin/dockerd-stop.sh" >/dev/null 2>&1 || true' EXIT
export STRATA_ROOT=$work/store
BUILDAH=(buildah --root "$work/bs" --runroot "$work/br" --storage-driver overlay)

mean() { # hyperfine JSON -> mean seconds
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["mean"])' "$1"
}
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.3f}')" "$1" "$2"; }
ms() { python3 -c "import sys; print(f'{float(sys.argv[1])*1000:.1f} ms')" "$1"; }

echo "== preparing bases"
bash fixtures/busybox/make-rootfs.sh "$work/busybox" >/dev/null
"$STRATA" build -q -t busybox:latest "$work/busybox" >/dev/null
"${BUILDAH[@]}" pull -q "oci:$PEERS/oci/busybox:latest" >/dev/null
"${BUILDAH[@]}" tag "$("${BUILDAH[@]}" images -q | head -1)" localhost/busybox:latest
"$PEERS/bin/dockerd-start.sh" >/dev/null && DOCKER_STARTED=1
export DOCKER_HOST=unix://$PEERS/dockerd/docker.sock DOCKER_BUILDKIT=0
docker load -q -i "$PEERS/docker-archive/busybox.tar" >/dev/null
docker tag localhost/busybox:latest busybox:latest

echo "== 1. fully cached rebuild of web-ping (target <= 20 ms, <= 0.25x docker, <= 0.05x buildah)"
ctx=$work/web-ping; cp -r fixtures/web-ping "$ctx"
sed 's|^FROM busybox:latest|FROM localhost/busybox:latest|' fixtures/web-ping/Dockerfile > "$ctx/Dockerfile.buildah"
"$STRATA" build -q -t web-ping "$ctx" >/dev/null
docker build -q -t web-ping "$ctx" >/dev/null
"${BUILDAH[@]}" build -q --isolation chroot --layers -f "$ctx/Dockerfile.buildah" -t web-ping "$ctx" >/dev/null
hyperfine -N -w 3 -r 30 --export-json "$work/s.json" "$STRATA build -q -t web-ping $ctx" >/dev/null
hyperfine -w 2 -r 10 --export-json "$work/d.json" "docker build -q -t web-ping $ctx" >/dev/null
hyperfine -w 1 -r 5 --export-json "$work/b.json" "${BUILDAH[*]} build -q --isolation chroot --layers -f $ctx/Dockerfile.buildah -t web-ping $ctx" >/dev/null
s=$(mean "$work/s.json"); d=$(mean "$work/d.json"); b=$(mean "$work/b.json")
echo "strata $(ms "$s") | docker classic $(ms "$d") (ratio $(ratio "$s" "$d")) | buildah $(ms "$b") (ratio $(ratio "$s" "$b"))"

echo "== 1b. fully cached rebuild using every instruction kind, a 30 MB ADD of a .tar.xz, RUN bind mounts (target <= 20 ms, <= 0.1x buildah)"
every=$work/every; cp -r fixtures/every-instruction "$every"
mkdir -p "$work/bigsrc"
python3 - "$work/bigsrc" <<'PY'
import os, sys
for i in range(30):
    with open(os.path.join(sys.argv[1], f"part{i:02d}.bin"), "wb") as f:
        f.write(os.urandom(1 << 20))
PY
tar -C "$work/bigsrc" -cf - . | xz -0 -T2 > "$every/big.tar.xz"
sed 's|^FROM busybox:latest|FROM localhost/busybox:latest|' "$every/Dockerfile" > "$every/Dockerfile.buildah"
"$STRATA" build -q -t every "$every" >/dev/null
"${BUILDAH[@]}" build -q --isolation chroot --layers -f "$every/Dockerfile.buildah" -t every "$every" >/dev/null
hyperfine -N -w 3 -r 30 --export-json "$work/s.json" "$STRATA build -q -t every $every" >/dev/null
hyperfine -w 1 -r 5 --export-json "$work/b.json" "${BUILDAH[*]} build -q --isolation chroot --layers -f $every/Dockerfile.buildah -t every $every" >/dev/null
s=$(mean "$work/s.json"); b=$(mean "$work/b.json")
echo "strata $(ms "$s") | buildah $(ms "$b") (ratio $(ratio "$s" "$b")) | archive $(du -m "$every/big.tar.xz" | cut -f1) MB"

echo "== 2. cold COPY of a 1 GiB context of 20,000 files, in a fresh store (target >= 800 MB/s, peak RSS <= 64 MiB)"
big=$work/big; mkdir -p "$big/data"
python3 - "$big/data" <<'PY'
import os, sys
root = sys.argv[1]
size = (1 << 30) // 20000
block = os.urandom(1 << 20)
for i in range(20000):
    d = os.path.join(root, f"d{i // 500:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        off = (i * 4099) % (len(block) - size)
        f.write(block[off:off + size])
PY
printf 'FROM busybox:latest\nCOPY data /data\n' > "$big/Dockerfile"
printf 'FROM localhost/busybox:latest\nCOPY data /data\n' > "$big/Dockerfile.buildah"
bytes=$(du -sb "$big/data" | cut -f1)
# strata: three builds, each in a new store holding only the base (nothing cached);
# the disk is flushed before every timed run, so no run pays for another's writeback.
for i in 1 2 3; do
  STRATA_ROOT=$work/cold "$STRATA" build -q -t busybox:latest "$work/busybox" >/dev/null
  sync
  STRATA_ROOT=$work/cold /usr/bin/time -f "%e %M" -o "$work/time$i" "$STRATA" build -q -t big "$big" >/dev/null
  rm -rf "$work/cold"
done
sync
/usr/bin/time -f "%e %M" -o "$work/btime" "${BUILDAH[@]}" build -q --isolation chroot --layers --no-cache -f "$big/Dockerfile.buildah" -t big "$big" >/dev/null
python3 - "$bytes" "$work"/time1 "$work"/time2 "$work"/time3 "$work/btime" <<'PY'
import statistics, sys
n = int(sys.argv[1])
runs = [tuple(map(float, open(p).read().split())) for p in sys.argv[2:5]]
bs, brss = map(float, open(sys.argv[5]).read().split())
s = statistics.median(r[0] for r in runs)
rss = max(r[1] for r in runs)
each = ", ".join(f"{n / r[0] / 1e6:.0f}" for r in runs)
print(f"strata {n/s/1e6:.0f} MB/s in {s:.2f} s (median of 3 runs: {each} MB/s), peak RSS {rss/1024:.1f} MiB | buildah {n/bs/1e6:.0f} MB/s in {bs:.2f} s, peak RSS {brss/1024:.1f} MiB | time ratio {s/bs:.3f}")
PY

echo "== 3. per-RUN overhead: 20 trivial RUN steps, no cache (target <= 15 ms/step, <= 0.3x buildah chroot)"
runs=$work/runs; mkdir -p "$runs"
{ echo "FROM busybox:latest"; for i in $(seq 1 20); do echo "RUN true $i"; done; } > "$runs/Dockerfile"
sed 's|^FROM busybox:latest|FROM localhost/busybox:latest|' "$runs/Dockerfile" > "$runs/Dockerfile.buildah"
hyperfine -N -w 1 -r 5 --export-json "$work/s.json" "$STRATA build -q --no-cache $runs" >/dev/null
# Each step in a network namespace of its own (slirp4netns), and on the host's network, as buildah chroot runs.
hyperfine -N -w 1 -r 5 --export-json "$work/h.json" "$STRATA build -q --no-cache --network host $runs" >/dev/null
hyperfine -w 1 -r 3 --export-json "$work/b.json" "${BUILDAH[*]} build -q --isolation chroot --layers --no-cache -f $runs/Dockerfile.buildah $runs" >/dev/null
s=$(mean "$work/s.json"); h=$(mean "$work/h.json"); b=$(mean "$work/b.json")
echo "strata $(ms "$(python3 -c "print($s/20)")")/step (--network host: $(ms "$(python3 -c "print($h/20)")")/step) | buildah $(ms "$(python3 -c "print($b/20)")")/step | ratio $(ratio "$s" "$b")"

echo "== 4. parse and lower a 2,000-step spec (target <= 10 ms)"
python3 - "$work/big.kdl" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write('image "big:latest" from="busybox:latest" {\n')
    for i in range(2000):
        f.write(f'    env VAR{i}="value {i}"\n' if i % 2 else f'    run "echo step {i}"\n')
    f.write("}\n")
PY
hyperfine -N -w 3 -r 30 --export-json "$work/s.json" "$STRATA graph --format json $work/big.kdl" >/dev/null
echo "strata graph of 2,000 steps: $(ms "$(mean "$work/s.json")") (process start included)"

echo "== 5. two images with a 2 s CPU-bound stage each (target <= 1.2x one of them, 2 cores)"
par=$work/par; mkdir -p "$par"
loop='i=0; while [ $i -lt 1500000 ]; do i=$((i+1)); done'
cat > "$par/one.kdl" <<KDL
image "one:latest" from="busybox:latest" { run "$loop; echo a" }
KDL
cat > "$par/two.kdl" <<KDL
image "one:latest" from="busybox:latest" { run "$loop; echo a" }
image "two:latest" from="busybox:latest" { run "$loop; echo b" }
KDL
hyperfine -N -r 3 --export-json "$work/one.json" "$STRATA build -q --no-cache $par/one.kdl" >/dev/null
hyperfine -N -r 3 --export-json "$work/two.json" "$STRATA build -q --no-cache $par/two.kdl" >/dev/null
o=$(mean "$work/one.json"); t=$(mean "$work/two.json")
echo "one image $(ms "$o") | two images $(ms "$t") | ratio $(ratio "$t" "$o")"

if [ -f "$PEERS/docker-archive/debian-minbase.tar" ]; then
  echo "== 6. Debian apt build (network) against buildah and docker classic"
  "$STRATA" load -i "$PEERS/oci/debian-minbase" >/dev/null
  deb=$work/deb; mkdir -p "$deb"
  printf 'FROM debian-minbase:latest\nRUN apt-get update -qq && apt-get install -y -qq hello >/dev/null && hello\n' > "$deb/Dockerfile"
  sed 's|^FROM debian-minbase|FROM localhost/debian-minbase|' "$deb/Dockerfile" > "$deb/Dockerfile.buildah"
  docker load -q -i "$PEERS/docker-archive/debian-minbase.tar" >/dev/null
  docker tag localhost/debian-minbase:latest debian-minbase:latest
  "${BUILDAH[@]}" pull -q "oci:$PEERS/oci/debian-minbase:latest" >/dev/null
  "${BUILDAH[@]}" tag "$("${BUILDAH[@]}" images -q --filter reference='*debian*' 2>/dev/null | head -1 || true)" localhost/debian-minbase:latest 2>/dev/null || true
  hyperfine -N -r 2 --export-json "$work/s.json" "$STRATA build -q --no-cache $deb" >/dev/null
  hyperfine -r 2 --export-json "$work/d.json" "docker build -q --no-cache --network host -f $deb/Dockerfile -t deb $deb" >/dev/null || true
  hyperfine -r 2 --export-json "$work/b.json" "${BUILDAH[*]} build -q --isolation chroot --no-cache -f $deb/Dockerfile.buildah $deb" >/dev/null || true
  s=$(mean "$work/s.json")
  echo "strata $(ms "$s") | docker $( [ -s "$work/d.json" ] && ms "$(mean "$work/d.json")") | buildah $( [ -s "$work/b.json" ] && ms "$(mean "$work/b.json")")"
fi
