#!/usr/bin/env bash
# Builds and runs the examples on a Debian 12 machine (run as root on a fresh one): installs the
# missing Debian packages (redis-server among them, as test.sh does), configures the `release`
# preset into build/release (examples only: no tests, no tools), builds with 2 jobs and runs
# every example. The Redis example runs against a private server this script starts and stops
# (no persistence, on a Unix socket in a temporary directory, so it needs no free port and
# touches no other server): the first command of the README shows the distributed cache.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/packages.sh
. scripts/packages.sh

# libhiredis-dev, libmemcached-dev, libgdbm-dev: dogpile::redis, ::memcached and ::dbm are built
# by default; redis-server (and redis-cli from redis-tools) run the Redis example.
ensure_packages build-essential cmake g++ pkg-config \
  libsqlite3-dev nlohmann-json3-dev zlib1g-dev libssl-dev libhiredis-dev libmemcached-dev \
  libgdbm-dev redis-server redis-tools

cmake --preset release -DDOGPILE_BUILD_TESTS=OFF -DDOGPILE_BUILD_TOOLS=OFF \
  -DDOGPILE_BUILD_EXAMPLES=ON
cmake --build --preset release

redis_dir=""
redis_pid=""
redis_url=""
stop_redis() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
  fi
  if [ -n "$redis_dir" ]; then
    rm -rf "$redis_dir"
    redis_dir=""
  fi
}
trap stop_redis EXIT

# Starts a throwaway redis-server (no persistence, no TCP port) and sets redis_url; fails if it
# does not answer within 10 s. (Not run in a $(...) subshell: stop_redis needs its pid.)
start_redis() {
  redis_dir=$(mktemp -d /tmp/dogpile-demo-redis.XXXXXX)
  redis-server --port 0 --unixsocket "$redis_dir/redis.sock" --unixsocketperm 700 \
    --save '' --appendonly no --dir "$redis_dir" --daemonize no \
    >"$redis_dir/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 100); do
    if [ -S "$redis_dir/redis.sock" ] &&
      { ! command -v redis-cli >/dev/null 2>&1 ||
        [ "$(redis-cli -s "$redis_dir/redis.sock" ping 2>/dev/null)" = PONG ]; }; then
      redis_url="unix://$redis_dir/redis.sock"
      return 0
    fi
    sleep 0.1
  done
  echo "!!! redis-server did not start:" >&2
  cat "$redis_dir/redis.log" >&2
  return 1
}

status=0
for exe in build/release/examples/example_*; do
  [ -x "$exe" ] || continue
  name=${exe##*/}
  args=()
  if [[ $name == *redis* ]]; then
    if ! start_redis; then
      status=1
      stop_redis
      continue
    fi
    args=("$redis_url")
  fi
  echo
  echo "=== $name${args[*]:+ ${args[*]}}"
  if ! "$exe" "${args[@]}"; then
    echo "!!! $name failed" >&2
    status=1
  fi
  stop_redis
done
exit "$status"
