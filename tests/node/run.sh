#!/usr/bin/env bash
# Node client tests: the unchanged socket.io-client@4 against the real binary, with
# its default options (long-polling, then the upgrade to websocket) and with
# long-polling only. Builds the binary, installs the pinned client, runs node --test.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

(cd "$root" && cargo build --quiet --bin likewise)

cd "$here"
npm ci --no-audit --no-fund --loglevel=error
node --test --test-concurrency=1
