#!/usr/bin/env bash
# Builds the Debian package: target/debian/s3syncfs_VERSION_ARCH.deb, with
#   /usr/bin/s3syncfs, /sbin/mount.s3syncfs (mount(8)'s helper, a link to it),
#   /lib/systemd/system/s3syncfs@.service (not enabled), man pages s3syncfs(1) and
#   mount.s3syncfs(8), bash/zsh/fish completions, and the docs; Depends: fuse3.
# No maintainer scripts: installing it starts, enables and creates nothing else.
# Needs only cargo and dpkg-deb (part of dpkg on every Debian and Ubuntu).
#   scripts/package.sh           release build
#   scripts/package.sh --debug   package the debug build (CI, which has just built it)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
if [[ "${1:-}" == "--debug" ]]; then profile=debug; fi
target=${CARGO_TARGET_DIR:-target}

if [[ $profile == release ]]; then
  cargo build --release --bin s3syncfs --quiet
else
  cargo build --bin s3syncfs --quiet
fi
binary="$target/$profile/s3syncfs"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
# The newest glibc symbol version the binary needs.
glibc=$(grep -aoE 'GLIBC_2\.[0-9]+(\.[0-9]+)?' "$binary" | sed 's/GLIBC_//' | sort -uV | tail -n1)

out="$target/debian"
root="$out/s3syncfs_${version}_${arch}"
rm -rf "$root"
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/sbin" "$root/lib/systemd/system" \
  "$root/usr/share/man/man1" "$root/usr/share/man/man8" "$root/usr/share/doc/s3syncfs" \
  "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d"
install -m 0755 "$binary" "$root/usr/bin/s3syncfs"
# Debug symbols would make the package ten times larger.
if command -v strip >/dev/null 2>&1; then
  strip --strip-unneeded "$root/usr/bin/s3syncfs"
fi
ln -s /usr/bin/s3syncfs "$root/sbin/mount.s3syncfs"
install -m 0644 docs/s3syncfs@.service "$root/lib/systemd/system/s3syncfs@.service"

generated=$(mktemp -d)
trap 'rm -rf "$generated"' EXIT
"$binary" generate-manual "$generated"
gzip -9n -c "$generated/man1/s3syncfs.1" > "$root/usr/share/man/man1/s3syncfs.1.gz"
gzip -9n -c "$generated/man8/mount.s3syncfs.8" > "$root/usr/share/man/man8/mount.s3syncfs.8.gz"
install -m 0644 "$generated/completions/s3syncfs.bash" "$root/usr/share/bash-completion/completions/s3syncfs"
install -m 0644 "$generated/completions/_s3syncfs" "$root/usr/share/zsh/vendor-completions/_s3syncfs"
install -m 0644 "$generated/completions/s3syncfs.fish" "$root/usr/share/fish/vendor_completions.d/s3syncfs.fish"
for doc in README.md docs/CONFIGURATION.md docs/SEMANTICS.md docs/SECURITY.md docs/TROUBLESHOOTING.md; do
  install -m 0644 "$doc" "$root/usr/share/doc/s3syncfs/"
done
cat > "$root/usr/share/doc/s3syncfs/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: s3syncfs

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: s3syncfs
Version: $version
Architecture: $arch
Maintainer: s3syncfs developers <s3syncfs@localhost>
Installed-Size: $size
Depends: fuse3, libc6 (>= $glibc), libgcc-s1
Section: utils
Priority: optional
Description: mount an S3 bucket through a local disk cache
 s3syncfs is a FUSE file system that mounts an S3 bucket (AWS, Linode/Akamai,
 MinIO, Ceph RGW, any S3 API). Applications read and write at local-disk speed
 against a cache directory; a background uploader pushes every change to the
 bucket shortly after the file is closed. Pending changes survive crashes.
 .
 Mount with an fstab line (type s3syncfs) or the s3syncfs@.service unit;
 s3syncfs doctor checks a setup first.
CONTROL

deb="$out/s3syncfs_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz -z6 --build "$root" "$deb" >/dev/null
echo "$deb"
