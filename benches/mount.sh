#!/usr/bin/env bash
# Mount benchmarks (issue 5), side by side in one run on the Debian minbase
# image and a 1 GiB single-file image: time to mount (cold and warm index),
# reading the whole tree (cold and warm page cache) and one 1 GiB file,
# against squashfuse_ll on a squashfs of the same tree, fuse-overlayfs over the
# unpacked layer, and plain ext4. Never part of the tests.
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
secs() { date +%s%N; }
since() { local now; now=$(date +%s%N); echo "$(( (now - $1) / 1000000 )).$(( (now - $1) / 100000 % 10 ))"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
readall() { (cd "$1" && tar -cf - . 2>/dev/null | wc -c) >/dev/null; }
timed() { local t; t=$(secs); "$@"; since "$t"; }

"$STRATA" load -i "$PEERS/oci/debian-minbase" >/dev/null
rootfs=$PEERS/rootfs/debian-minbase
[ -d "$rootfs" ] || { mkdir -p "$work/rootfs"; tar -xf "$PEERS"/oci/debian-minbase/blobs/sha256/"$(python3 -c "import json; m=json.load(open('$PEERS/oci/debian-minbase/blobs/sha256/'+json.load(open('$PEERS/oci/debian-minbase/index.json'))['manifests'][0]['digest'][7:])); print(m['layers'][0]['digest'][7:])")" -C "$work/rootfs"; rootfs=$work/rootfs; }
mksquashfs "$rootfs" "$work/deb.sqfs" -noappend -comp zstd -quiet >/dev/null 2>&1

echo "== mount time, Debian minbase (target: warm index <= 50 ms)"
# Timed in this shell, not in $(…): the server must outlive no subshell.
t=$(secs); "$STRATA" mount debian-minbase:latest "$mnt"; cold=$(since "$t"); "$STRATA" umount "$mnt"
t=$(secs); "$STRATA" mount debian-minbase:latest "$mnt"; warm=$(since "$t")
t=$(secs); squashfuse_ll "$work/deb.sqfs" "$sq"; sqt=$(since "$t")
t=$(secs); fuse-overlayfs -o "lowerdir=$rootfs" "$fo"; fot=$(since "$t")
echo "strata cold index ${cold} ms, warm ${warm} ms | squashfuse_ll ${sqt} ms | fuse-overlayfs ${fot} ms"

echo "== whole tree read (tar -cf - . | wc -c) (target: warm no slower than squashfuse_ll, <= 3x ext4)"
for name in strata squashfuse_ll fuse-overlayfs ext4; do
  case $name in strata) d=$mnt ;; squashfuse_ll) d=$sq ;; fuse-overlayfs) d=$fo ;; ext4) d=$rootfs ;; esac
  drop; c=$(timed readall "$d"); w=$(timed readall "$d")
  echo "$name: cold ${c} ms, warm ${w} ms"
done
"$STRATA" umount "$mnt"; fusermount3 -u "$sq"; fusermount3 -u "$fo"

echo "== one 1 GiB file (target: >= 1 GB/s warm)"
big=$work/big; mkdir -p "$big"
head -c 1073741824 /dev/urandom > "$big/blob"
printf 'FROM scratch\nCOPY blob /blob\n' > "$big/Dockerfile"
"$STRATA" build -q -t big "$big" >/dev/null
mksquashfs "$big/blob" "$work/big.sqfs" -noappend -comp zstd -quiet >/dev/null 2>&1
"$STRATA" mount big "$mnt"; squashfuse_ll "$work/big.sqfs" "$sq"
for name in strata squashfuse_ll ext4; do
  case $name in strata) f=$mnt/blob ;; squashfuse_ll) f=$sq/blob ;; ext4) f=$big/blob ;; esac
  cat "$f" > /dev/null
  w=$(timed sh -c "cat '$f' > /dev/null")
  echo "$name: warm $(python3 -c "print(f'{1073741824/(float(\"$w\")/1000)/1e9:.2f}')") GB/s (${w} ms)"
done
