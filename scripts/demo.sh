#!/usr/bin/env bash
# Builds and runs the examples on a Debian 12 machine (run as root on a fresh one): installs the
# missing Debian packages, configures the `release` preset into build/release (examples only:
# no tests, no tools), builds with 2 jobs and runs every example. No server is needed: the
# examples use the embedded backends (memory and disk).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/packages.sh
. scripts/packages.sh

ensure_packages build-essential cmake g++ pkg-config \
  libsqlite3-dev nlohmann-json3-dev zlib1g-dev libssl-dev

cmake --preset release -DDOGPILE_BUILD_TESTS=OFF -DDOGPILE_BUILD_TOOLS=OFF \
  -DDOGPILE_BUILD_EXAMPLES=ON
cmake --build --preset release

status=0
for exe in build/release/examples/example_*; do
  [ -x "$exe" ] || continue
  echo
  echo "=== ${exe##*/}"
  if ! "$exe"; then
    echo "!!! ${exe##*/} failed" >&2
    status=1
  fi
done
exit "$status"
