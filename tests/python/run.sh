#!/usr/bin/env bash
# Runs the Python client suites against the debug binary (build it first with
# `cargo build`): creates tests/python/.venv, installs the pinned requirements and
# runs pytest. Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${LIKEWISE_BIN:-$root/target/debug/likewise}"
if [ ! -x "$bin" ]; then
  echo "no likewise binary at $bin: run 'cargo build' first (or set LIKEWISE_BIN)" >&2
  exit 1
fi
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
cd "$here"
PYTHONDONTWRITEBYTECODE=1 LIKEWISE_BIN="$bin" exec "$here/.venv/bin/python" -m pytest "$@"
