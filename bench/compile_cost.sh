#!/usr/bin/env bash
# Compile cost of the public headers: user CPU seconds of `g++ -std=c++20 -fsyntax-only` on a
# file that includes one header, the minimum of N runs (the machines are shared: the minimum is
# the least disturbed run), and the ratio to <nlohmann/json.hpp> alone measured in the same run.
#   bench/compile_cost.sh [runs=7] [header ...]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-7}
shift || true
headers=("$@")
[ ${#headers[@]} -gt 0 ] || headers=(dogpile/dogpile.hpp dogpile/region.hpp dogpile/backend.hpp
                                     dogpile/mutex.hpp dogpile/lock.hpp dogpile/codec.hpp)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cxx=${CXX:-g++}
measure() {  # measure HEADER -> min user seconds
  printf '#include <%s>\n' "$1" >"$tmp/t.cpp"
  local best="" t
  for _ in $(seq "$runs"); do
    t=$( { /usr/bin/time -f '%U' "$cxx" -std=c++20 -fsyntax-only -Iinclude "$tmp/t.cpp" >/dev/null; } 2>&1 | tail -1)
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
  done
  echo "$best"
}
base=$(measure nlohmann/json.hpp)
printf '%-32s %8s %8s\n' header seconds ratio
printf '%-32s %8.2f %8.2f\n' nlohmann/json.hpp "$base" 1
for h in "${headers[@]}"; do
  t=$(measure "$h")
  printf '%-32s %8.2f %8.2f\n' "$h" "$t" "$(awk "BEGIN{print $t / $base}")"
done
