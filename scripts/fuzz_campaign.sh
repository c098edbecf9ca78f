#!/usr/bin/env bash
# A long fuzzing campaign, one command: builds the libFuzzer targets (clang 14, ASan + UBSan, the
# libraries instrumented too) into build/fuzz, then runs each target for RUNS executions (default
# 10,000,000) from its seed corpus and the campaign's own corpus (build/fuzz/campaign/<target>,
# kept between runs, so a second campaign goes on from what the first found). Prints one line per
# target: executions, seconds, exit status. A finding (crash, leak, sanitizer report, timeout)
# stops that target with a non-zero exit and leaves the input in build/fuzz/campaign/findings/;
# replay it with `build/fuzz/tests/fuzz/fuzz_<target> <file>`, then make it a regression test.
#
#   scripts/fuzz_campaign.sh                 # every target, 10 M executions each
#   scripts/fuzz_campaign.sh 2000000 envelope codec_cbor
#
# Runs at idle CPU priority (`chrt --idle`): other work on the machine goes first. libFuzzer's
# -timeout counts wall time, so on a loaded machine a starved input can look slow: -timeout=120.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10000000}
shift || true
# shellcheck source=scripts/packages.sh
. scripts/packages.sh
ensure_packages clang-14 libclang-rt-14-dev cmake pkg-config libsqlite3-dev nlohmann-json3-dev \
  zlib1g-dev libssl-dev libhiredis-dev libmemcached-dev libgdbm-dev || exit 1
CC=clang-14 CXX=clang++-14 cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS="-O1 -g -fsanitize=fuzzer-no-link,address,undefined" \
  -DDOGPILE_BUILD_FUZZ=ON -DDOGPILE_BUILD_EXAMPLES=OFF -DDOGPILE_BUILD_TOOLS=OFF \
  -DDOGPILE_CHECK_HEADERS=OFF >/dev/null &&
  cmake --build build/fuzz --target dogpile_fuzz -j2 >/dev/null || exit 1

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for t in build/fuzz/tests/fuzz/fuzz_*; do
    n=${t##*/fuzz_}
    [ "$n" = envelope_replay ] || [ ! -x "$t" ] || targets+=("$n")
  done
fi
out=build/fuzz/campaign
mkdir -p "$out/findings"
status=0
for n in "${targets[@]}"; do
  mkdir -p "$out/$n"
  t0=$(date +%s)
  ASAN_OPTIONS=malloc_context_size=0 chrt --idle 0 "build/fuzz/tests/fuzz/fuzz_$n" \
    -runs="$runs" -entropic=0 -timeout=120 -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$out/findings/$n-" "$out/$n" "tests/fuzz/corpus/$n" >"$out/$n.log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$n.log")
  echo "[fuzz] $n: ${execs:-?} executions in $(($(date +%s) - t0)) s (exit $rc; log $out/$n.log)"
  [ "$rc" -eq 0 ] || status=1
done
exit "$status"
