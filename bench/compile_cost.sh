#!/usr/bin/env bash
# Compile cost of the public headers, against nlohmann_json measured in the same run. User CPU
# seconds, the minimum of N runs (the machines are shared: the minimum is the least disturbed
# run), and the compiler's max RSS where /usr/bin/time gives it.
#   bench/compile_cost.sh [runs=7] [header ...]
# CXX picks the compiler (g++); DOGPILE_INCLUDE another include directory (e.g. an older
# checkout's, for a before/after in the same run).
#
# 1. Parse (`g++ -std=c++20 -fsyntax-only`) of a file that includes one header, as a ratio to
#    <nlohmann/json.hpp> alone. Goals: the umbrella <dogpile/dogpile.hpp> <= 1.3x; a file using
#    only a region on `memory` (<dogpile/region.hpp> + <dogpile/backends/memory.hpp>) <= 1.1x.
# 2. A whole translation unit at `-O0 -g -c`: a region configured on `memory` and one
#    get_or_create, against one that parses a JSON document with nlohmann alone. Goal <= 2x.
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
inc=${DOGPILE_INCLUDE:-include}
if [ ! -x /usr/bin/time ]; then
  echo "compile_cost.sh: needs /usr/bin/time (Debian: apt install time)" >&2
  exit 1
fi

# run FILE FLAGS... -> "min_user_seconds max_rss_kb_of_that_run"
run() {
  local src=$1 best="" rss="" out t m
  shift
  for _ in $(seq "$runs"); do
    out=$( { /usr/bin/time -f '%U %M' "$cxx" -std=c++20 "$@" -I"$inc" "$src" >/dev/null; } 2>&1 | tail -1)
    read -r t m <<<"$out"
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t rss=$m; fi
  done
  echo "$best $rss"
}
parse() {  # parse "HEADER[ HEADER...]" -> min user seconds
  local f="$tmp/p.cpp" h
  : >"$f"
  for h in $1; do printf '#include <%s>\n' "$h" >>"$f"; done
  run "$f" -fsyntax-only | cut -d' ' -f1
}
ratio() { awk "BEGIN{printf \"%.2f\", $1 / $2}"; }

echo "## parse (-fsyntax-only), min of $runs runs"
base=$(parse nlohmann/json.hpp)
printf '%-58s %8s %8s\n' header seconds ratio
printf '%-58s %8.2f %8.2f\n' nlohmann/json.hpp "$base" 1
umbrella=""
for h in "${headers[@]}"; do
  t=$(parse "$h")
  [ "$h" = dogpile/dogpile.hpp ] && umbrella=$t
  printf '%-58s %8.2f %8.2f\n' "$h" "$t" "$(ratio "$t" "$base")"
done
[ -n "$umbrella" ] || umbrella=$(parse dogpile/dogpile.hpp)
region_memory=$(parse "dogpile/region.hpp dogpile/backends/memory.hpp")
printf '%-58s %8.2f %8.2f\n' "dogpile/region.hpp + dogpile/backends/memory.hpp" "$region_memory" \
  "$(ratio "$region_memory" "$base")"

echo
echo "## one translation unit at -O0 -g -c, min of $runs runs"
cat >"$tmp/json_tu.cpp" <<'CPP'
#include <nlohmann/json.hpp>

int main() {
  const auto j = nlohmann::json::parse(R"({"key": "value", "list": [1, 2.5, true, null]})");
  return j.at("key").get<std::string>().size() == 5 ? 0 : 1;
}
CPP
cat >"$tmp/region_tu.cpp" <<'CPP'
#include <dogpile/backends/memory.hpp>
#include <dogpile/region.hpp>

#include <chrono>
#include <string>

int main() {
  auto region = dogpile::make_region({.name = "compile_cost"});
  region.configure("memory", {.expiration_time = std::chrono::minutes(10)});
  const std::string v = region.get_or_create("key", [] { return std::string("value"); });
  return v.size() == 5 ? 0 : 1;
}
CPP
read -r jt jm <<<"$(run "$tmp/json_tu.cpp" -O0 -g -c -o "$tmp/j.o")"
read -r rt rm_ <<<"$(run "$tmp/region_tu.cpp" -O0 -g -c -o "$tmp/r.o")"
printf '%-58s %8s %8s %10s\n' "translation unit" seconds ratio "max RSS MB"
printf '%-58s %8.2f %8.2f %10d\n' "nlohmann::json::parse of a document" "$jt" 1 $((jm / 1024))
printf '%-58s %8.2f %8.2f %10d\n' "region on memory + get_or_create" "$rt" "$(ratio "$rt" "$jt")" \
  $((rm_ / 1024))

echo
echo "## goals"
goal() {  # goal NAME VALUE LIMIT
  local verdict="met"
  awk "BEGIN{exit !($2 > $3)}" && verdict="NOT met"
  printf '%-58s %6.2fx  (goal <= %sx) %s\n' "$1" "$2" "$3" "$verdict"
}
goal "<dogpile/dogpile.hpp> / <nlohmann/json.hpp>" "$(ratio "$umbrella" "$base")" 1.3
goal "region.hpp + backends/memory.hpp / <nlohmann/json.hpp>" "$(ratio "$region_memory" "$base")" 1.1
goal "get_or_create TU / nlohmann parse TU (-O0 -g)" "$(ratio "$rt" "$jt")" 2
