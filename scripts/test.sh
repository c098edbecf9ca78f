#!/usr/bin/env bash
# Builds and runs the whole test suite on a Debian 12 machine (run as root on a fresh one):
# installs the missing Debian packages, configures the `dev` preset into build/dev (reused by the
# next run, so a second run only rebuilds what changed), builds with 2 jobs and runs every test.
# Extra arguments go to ctest, e.g. `./scripts/test.sh -R keys` or `./scripts/test.sh -L core`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/packages.sh
. scripts/packages.sh

ensure_packages build-essential cmake g++ pkg-config python3 \
  libsqlite3-dev nlohmann-json3-dev zlib1g-dev libssl-dev catch2 libbenchmark-dev \
  libhiredis-dev libmemcached-dev libgdbm-dev libpqxx-dev postgresql \
  python3-diskcache redis-server memcached doxygen \
  redis-sentinel redis-tools python3-redis python3-dogpile.cache python3-pylibmc python3-gdbm \
  sasl2-bin stunnel4

cmake --preset dev
cmake --build --preset dev
ctest --preset dev "$@"
