#!/usr/bin/env bash
# Mount benchmarks, side by side in one run on the Debian minbase image and a
# 1 GiB single-file image: time to mount (cold and warm index), reading the
# whole tree (cold and warm page cache) and one 1 GiB file, against
# squashfuse_ll on a squashfs of the same tree, fuse-overlayfs over the
# unpacked layer, and plain ext4; prints strata's ratio to each peer.
# Never part of the tests. Needs root (drop_caches).
set -euo pipefail
: "${PEERS:?source peers.env first (benches/run.sh does)}"
STRATA=${STRATA:-$PWD/target/release/strata}
work=$(mktemp -d /var/tmp/strata-mbench.XXXXXX)
export STRATA_ROOT=$work/store
mnt=$work/mnt; sq=$work/sq; fo=$work/fo
mkdir -p "$mnt" "$sq" "$fo"
cleanup() {
  for d in "$mnt" "$sq" "$fo"; do fusermount3 -uz "$d" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s%N; }
# Milliseconds (one decimal) that "$@" takes.
timed() { local t n; t=$(now); "$@" >/dev/null; n=$(now); awk -v d=$((n - t)) 'BEGIN { printf "%.1f", d / 1e6 }'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
readall() { (cd "$1" && tar -cf - . 2>/dev/null | wc -c); }
readfile() { cat "$1" > /dev/null; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
gbps() { awk -v ms="$1" 'BEGIN { printf "%.2f GB/s", 1073741824 / (ms / 1000) / 1e9 }'; }
# The best of three warm runs: the machine is shared.
best() { local b="" t; for _ in 1 2 3; do t=$(timed "$@"); b=$(awk -v a="$t" -v b="$b" 'BEGIN { print (b == "" || a < b) ? a : b }'); done; echo "$b"; }

"$STRATA" load -i "$PEERS/oci/debian-minbase" >/dev/null
rootfs=$PEERS/rootfs/debian-minbase
[ -d "$rootfs" ] || { echo "bench: $rootfs is missing (rerun peers-setup.sh)" >&2; exit 1; }
mksquashfs "$rootfs" "$work/deb.sqfs" -noappend -comp zstd -quiet >/dev/null 2>&1

echo "== Debian minbase: mount time (target: strata warm index <= 50 ms)"
cold=$(timed "$STRATA" mount debian-minbase:latest "$mnt"); "$STRATA" umount "$mnt"
rm -rf "$STRATA_ROOT/strata/mount-index"/*.json
cold_plain=$(timed "$STRATA" mount debian-minbase:latest "$mnt"); "$STRATA" umount "$mnt"
warm=""
for _ in 1 2 3; do
  t=$(timed "$STRATA" mount debian-minbase:latest "$mnt"); "$STRATA" umount "$mnt"
  warm=$(awk -v a="$t" -v b="$warm" 'BEGIN { print (b == "" || a < b) ? a : b }')
done
sqt=$(timed squashfuse_ll "$work/deb.sqfs" "$sq")
fot=$(timed fuse-overlayfs -o "lowerdir=$rootfs" "$fo")
echo "strata: cold index ${cold} ms (gunzip + index), cold index from the uncompressed copy ${cold_plain} ms, warm ${warm} ms"
echo "squashfuse_ll ${sqt} ms, fuse-overlayfs ${fot} ms"
echo "ratio warm strata / squashfuse_ll $(ratio "$warm" "$sqt"), / fuse-overlayfs $(ratio "$warm" "$fot")"

# The peers' rootfs also holds /dev nodes that the layer leaves out: its tar is 10 KiB longer.
echo "== Debian minbase: whole tree read, tar -cf - . | wc -c (target: warm <= squashfuse_ll, <= 3x ext4)"
"$STRATA" mount debian-minbase:latest "$mnt"
declare -A cold_ms warm_ms
for name in strata squashfuse_ll fuse-overlayfs ext4; do
  case $name in strata) d=$mnt ;; squashfuse_ll) d=$sq ;; fuse-overlayfs) d=$fo ;; ext4) d=$rootfs ;; esac
  drop; cold_ms[$name]=$(timed readall "$d"); warm_ms[$name]=$(best readall "$d")
  echo "$name: cold ${cold_ms[$name]} ms, warm ${warm_ms[$name]} ms ($(readall "$d") bytes)"
done
for peer in squashfuse_ll fuse-overlayfs ext4; do
  echo "ratio strata / $peer: cold $(ratio "${cold_ms[strata]}" "${cold_ms[$peer]}"), warm $(ratio "${warm_ms[strata]}" "${warm_ms[$peer]}")"
done
"$STRATA" umount "$mnt"; fusermount3 -u "$sq"; fusermount3 -u "$fo"

echo "== one 1 GiB file, sequential read (target: strata >= 1 GB/s warm)"
big=$work/big; mkdir -p "$big/ctx"
head -c 1073741824 /dev/urandom > "$big/ctx/blob"
printf 'image "big:latest" from="scratch" {\n  copy "blob" "/blob"\n}\n' > "$big/ctx/strata.kdl"
"$STRATA" build -q -t big "$big/ctx" >/dev/null
mksquashfs "$big/ctx/blob" "$work/big.sqfs" -noappend -comp zstd -quiet >/dev/null 2>&1
"$STRATA" mount big "$mnt"; squashfuse_ll "$work/big.sqfs" "$sq"; fuse-overlayfs -o "lowerdir=$big/ctx" "$fo"
for name in strata squashfuse_ll fuse-overlayfs ext4; do
  case $name in strata) f=$mnt/blob ;; squashfuse_ll) f=$sq/blob ;; fuse-overlayfs) f=$fo/blob ;; ext4) f=$big/ctx/blob ;; esac
  drop; cold_ms[$name]=$(timed readfile "$f"); warm_ms[$name]=$(best readfile "$f")
  echo "$name: cold $(gbps "${cold_ms[$name]}") (${cold_ms[$name]} ms), warm $(gbps "${warm_ms[$name]}") (${warm_ms[$name]} ms)"
done
for peer in squashfuse_ll fuse-overlayfs ext4; do
  echo "ratio strata / $peer time: cold $(ratio "${cold_ms[strata]}" "${cold_ms[$peer]}"), warm $(ratio "${warm_ms[strata]}" "${warm_ms[$peer]}")"
done
