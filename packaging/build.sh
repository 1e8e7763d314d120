#!/usr/bin/env bash
# Builds the .deb and the .rpm of likewise from one release build and prints their
# absolute paths, the .deb first. Installs the packaging tools (pinned versions) if
# they are missing. Honours CARGO_TARGET_DIR (and a target-dir set in cargo's config).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

# install_tool SUBCOMMAND CRATE VERSION
install_tool() {
  if ! cargo "$1" --version 2>/dev/null | grep -qF "$3"; then
    echo "installing $2 $3" >&2
    cargo install --locked "$2" --version "$3" >&2
  fi
}
install_tool deb cargo-deb "$CARGO_DEB_VERSION"
install_tool generate-rpm cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"

target_dir=$(cargo metadata --format-version 1 --no-deps --locked \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
version=$(cargo metadata --format-version 1 --no-deps --locked \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["packages"][0]["version"])')

# The Debian changelog's newest entry must be this version, or the package lies.
changelog_version=$(sed -n '1s/^likewise (\([^-)]*\)-[0-9]*).*/\1/p' packaging/debian/changelog)
if [ "$changelog_version" != "$version" ]; then
  echo "packaging/debian/changelog starts at $changelog_version, Cargo.toml says $version" >&2
  exit 1
fi

cargo build --release --locked >&2

# Manual pages, rendered from the command-line definitions of this very binary.
man_dir="$target_dir/release/man"
rm -rf "$man_dir"
"$target_dir/release/likewise" man "$man_dir" >/dev/null
gzip -9n "$man_dir"/*.1
gzip -9nc CHANGELOG.md >"$man_dir/changelog.gz"

deb=$(cargo deb --no-build --locked | tail -n 1)
test -f "$deb" || { echo "cargo deb produced no package" >&2; exit 1; }

rpm_dir="$target_dir/generate-rpm"
rm -f "$rpm_dir"/likewise-"$version"-*.rpm
cargo generate-rpm --target-dir "$target_dir" >&2
rpm=$(ls "$rpm_dir"/likewise-"$version"-*.rpm)

realpath "$deb"
realpath "$rpm"
