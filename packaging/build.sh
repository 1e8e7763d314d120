#!/usr/bin/env bash
# Builds the .deb and the .rpm of likewise from one release build and prints their
# paths. Installs the packaging tools (pinned versions) if they are missing.
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

cargo build --release --locked >&2

deb=$(cargo deb --no-build --locked | tail -n 1)
test -f "$deb" || { echo "cargo deb produced no package" >&2; exit 1; }

rpm_dir=target/generate-rpm
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
rm -f "$rpm_dir"/likewise-"$version"-*.rpm
cargo generate-rpm >&2
rpm=$(ls "$rpm_dir"/likewise-"$version"-*.rpm)

echo "$deb"
echo "$rpm"
