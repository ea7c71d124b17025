#!/usr/bin/env bash
# deploy/build.sh: builds the raftmq image without pulling anything.
#
# 1. `cargo build --release -p raftmq`, and `rustc` on deploy/probe.rs (the health
#    check; the image has no shell or curl).
# 2. Assembles a root filesystem in $TARGET/deploy/context/rootfs: the two binaries
#    (debug info stripped), the shared libraries `ldd` lists for them, glibc's NSS and
#    resolver modules (a glibc program resolves names through them: service names in
#    Compose, DNS elsewhere), /etc/nsswitch.conf, /etc/passwd and /etc/group with the
#    user raftmq (uid 10001), and /etc/raftmq/raftmq.toml.
# 3. `docker build` with deploy/Dockerfile (FROM scratch) on that context.
#
# Needs a Linux host with glibc (the libraries come from the host), the Rust toolchain
# and Docker. Environment: RAFTMQ_IMAGE (tag, default raftmq:latest), RAFTMQ_BIN (use
# this binary instead of building one), CARGO_TARGET_DIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

if [ -z "${RAFTMQ_BIN:-}" ]; then
  echo "build: cargo build --release -p raftmq"
  cargo build --release -q -p raftmq
  RAFTMQ_BIN=$TARGET/release/raftmq
fi
[ -x "$RAFTMQ_BIN" ] || { echo "build: no binary at $RAFTMQ_BIN" >&2; exit 2; }

OUT=$TARGET/deploy
CTX=$OUT/context
ROOTFS=$CTX/rootfs
mkdir -p "$OUT"
PROBE=$OUT/raftmq-probe
if [ ! -x "$PROBE" ] || [ deploy/probe.rs -nt "$PROBE" ]; then
  echo "build: rustc deploy/probe.rs"
  rustc --edition 2021 -C opt-level=2 -C strip=symbols -o "$PROBE" deploy/probe.rs
fi

rm -rf "$CTX"
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc/raftmq" "$CTX/data"
# Debug info makes the binary ~5x larger; symbols stay, so backtraces keep names.
if command -v objcopy >/dev/null; then
  objcopy --strip-debug "$RAFTMQ_BIN" "$ROOTFS/usr/local/bin/raftmq"
else
  cp "$RAFTMQ_BIN" "$ROOTFS/usr/local/bin/raftmq"
fi
cp "$PROBE" "$ROOTFS/usr/local/bin/raftmq-probe"

# Shared libraries, at the paths the dynamic loader looks in. `cp -L`: the file, not
# the host's symlink (on merged-/usr hosts /lib64/ld-linux… points elsewhere).
libs() { ldd "$1" 2>/dev/null | grep -o '/[^ ]*' || true; }
LIBC=$(libs "$RAFTMQ_BIN" | grep '/libc\.so' | head -n1)
[ -n "$LIBC" ] || { echo "build: $RAFTMQ_BIN is not linked against glibc (ldd found no libc)" >&2; exit 2; }
LIBDIR=$(dirname "$LIBC")
NSS=()
for lib in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
  [ -e "$LIBDIR/$lib" ] && NSS+=("$LIBDIR/$lib")
done
for lib in $( (libs "$RAFTMQ_BIN"; libs "$PROBE"; for l in "${NSS[@]}"; do echo "$l"; libs "$l"; done) | sort -u); do
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp -L "$lib" "$ROOTFS$lib"
done

cat >"$ROOTFS/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
raftmq:x:10001:10001:raftmq:/data:/sbin/nologin
PASSWD
cat >"$ROOTFS/etc/group" <<'GROUP'
root:x:0:
raftmq:x:10001:
GROUP
# glibc reads this to pick its NSS modules: /etc/hosts first, then DNS (Docker's
# embedded server, which answers Compose service names).
cat >"$ROOTFS/etc/nsswitch.conf" <<'NSS'
passwd: files
group: files
hosts: files dns
NSS
# The image's defaults; flags (the Compose `command`) add node id, advertise and join.
cat >"$ROOTFS/etc/raftmq/raftmq.toml" <<'TOML'
data_dir = "/data"
mqtt_addr = "0.0.0.0:1883"
cluster_addr = "0.0.0.0:7000"
http_addr = "0.0.0.0:8080"
TOML

echo "build: docker build -t $RAFTMQ_IMAGE ($(du -sh "$ROOTFS" | cut -f1) root filesystem)"
OLD_ID=$(docker image inspect -f '{{.Id}}' "$RAFTMQ_IMAGE" 2>/dev/null || true)
# Quiet unless it fails (the legacy builder also warns about itself on stderr).
if ! docker build -t "$RAFTMQ_IMAGE" -f deploy/Dockerfile "$CTX" >"$OUT/docker-build.log" 2>&1; then
  cat "$OUT/docker-build.log" >&2
  echo "build: docker build failed" >&2
  exit 1
fi
docker image inspect -f 'build: image {{index .RepoTags 0}} {{.Id}}, {{.Size}} bytes' "$RAFTMQ_IMAGE"
# The image this one replaces, now untagged: removed unless a container still uses it.
NEW_ID=$(docker image inspect -f '{{.Id}}' "$RAFTMQ_IMAGE")
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$NEW_ID" ]; then
  docker image rm "$OLD_ID" >/dev/null 2>&1 || true
fi
