#!/usr/bin/env bash
# Installs s3syncfs from source (scripts/package.sh makes a .deb instead): the binary in /usr/local/bin, the mount(8) helper
# /sbin/mount.s3syncfs (for `mount -t s3syncfs` and fstab type s3syncfs), fuse3 for
# `fuse.s3syncfs` lines, and the example systemd unit in /usr/local/share/doc.
# Run as root from a checkout: scripts/install.sh [PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${1:-/usr/local}
if ! command -v fusermount3 >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq fuse3 >/dev/null
fi
cargo build --release --bin s3syncfs --quiet
install -D -m 0755 target/release/s3syncfs "$PREFIX/bin/s3syncfs"
ln -sf "$PREFIX/bin/s3syncfs" /sbin/mount.s3syncfs
install -d "$PREFIX/share/doc/s3syncfs"
# The unit names the package's /usr/bin/s3syncfs; this one is in $PREFIX/bin.
sed "s|/usr/bin/s3syncfs|$PREFIX/bin/s3syncfs|" docs/s3syncfs@.service \
  > "$PREFIX/share/doc/s3syncfs/s3syncfs@.service"
echo "installed $PREFIX/bin/s3syncfs and /sbin/mount.s3syncfs"
echo "fstab example: mybucket:/photos /mnt/photos s3syncfs _netdev,nofail,endpoint=https://us-east-1.linodeobjects.com,cache_dir=/var/cache/s3syncfs/photos 0 0"
