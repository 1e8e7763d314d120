#!/usr/bin/env bash
# Browser tests (every *.test.mjs here): the demo page, the dashboard and the
# Socket.IO client in Debian's Chromium, driven by
# playwright-core against the real binary. Installs what it needs, builds the binary
# if it is missing or stale, and runs the Node test. Screenshots go to out/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "browser tests need /usr/bin/chromium (apt-get install chromium)" >&2
    exit 1
  fi
fi

(cd "$root" && cargo build --quiet --bin likewise)

cd "$here"
npm ci --no-audit --no-fund --loglevel=error
rm -rf out
node --test --test-concurrency=1 ./*.test.mjs
echo "screenshots: $here/out/"
