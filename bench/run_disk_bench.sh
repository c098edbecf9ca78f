#!/usr/bin/env bash
# Builds bench/disk_core in Release and runs python-diskcache's benchmark_core workload with 1
# and 2 processes on DiskCache, FanoutCache, the raw SQLite floor and python3-diskcache, then
# bench/disk_hot (hot reads vs LMDB and the floor, BUILD_DIR/disk_bench/hot.txt), then plots
# docs/img/disk_bench.png.
#   [NICE=-15] bench/run_disk_bench.sh [BUILD_DIR] [disk_core options, e.g. --rounds 3]
# Results: BUILD_DIR/disk_bench/p1.txt, p2.txt (tables), results.tsv and tables.md (the
# markdown tables of docs/benchmarks.md). NICE (root only) lowers the noise from other load.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build-bench}
shift || true
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDOGPILE_BUILD_BENCH=ON \
  -DDOGPILE_BUILD_TESTS=OFF -DDOGPILE_BUILD_EXAMPLES=OFF -DDOGPILE_BUILD_TOOLS=OFF >/dev/null
cmake --build "$BUILD" --target disk_core disk_hot -j"${JOBS:-1}"
OUT=$BUILD/disk_bench
mkdir -p "$OUT"
rm -f "$OUT/results.tsv"
{
  echo "# $(date -u +%FT%TZ) $(uname -srm); $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
  echo "# SQLite $(sqlite3 --version 2>/dev/null | cut -d' ' -f1); python3-diskcache $(/usr/bin/python3 -c 'import diskcache; print(diskcache.__version__)')"
  echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/env.txt"
RUN=()
if [ -n "${NICE:-}" ]; then RUN=(nice -n "$NICE"); fi
for p in 1 2; do
  "${RUN[@]}" "$BUILD/bench/disk_core" --procs "$p" --tsv "$OUT/results.tsv" "$@" | tee "$OUT/p$p.txt"
done
# Markdown tables: latencies in µs, ratio = median / the raw SQLite floor's median (same op).
awk -F'\t' '
  { key = $1 FS $3; if ($2 == "sqlite") floor[key] = $6; rows[NR] = $0 }
  END {
    last = ""
    for (i = 1; i <= NR; i++) {
      split(rows[i], f, FS)
      if (f[1] != last) {
        printf "\n**%d process%s**\n\n", f[1], f[1] == 1 ? "" : "es"
        print "| backend | op | count | miss | median | p90 | p99 | max | median / floor |"
        print "|---|---|--:|--:|--:|--:|--:|--:|--:|"
        last = f[1]
      }
      if (f[3] == "cpu")
        printf "| %s | CPU/op, all ops | %d | | %.2f | | | | %.2fx |\n", f[2], f[4], f[6],
               f[6] / floor[f[1] FS f[3]]
      else
        printf "| %s | %s | %d | %d | %.2f | %.2f | %.2f | %.1f | %.2fx |\n", f[2], f[3], f[4],
               f[5], f[6], f[7], f[8], f[9], f[6] / floor[f[1] FS f[3]]
    }
  }' "$OUT/results.tsv" | tee "$OUT/tables.md"
# Hot reads (docs/benchmarks.md, "Hot reads"): LMDB, the raw SQLite floor, DiskCache with the
# hot-read cache off and on, with and without a writer process elsewhere.
rm -f "$OUT/hot.tsv"
"${RUN[@]}" "$BUILD/bench/disk_hot" --tsv "$OUT/hot.tsv" | tee "$OUT/hot.txt"
mkdir -p "$SRC/docs/img"
gnuplot -e "infile='$OUT/results.tsv'; outfile='$SRC/docs/img/disk_bench.png'" \
  "$SRC/bench/plot_disk.gnuplot"
echo "plot: $SRC/docs/img/disk_bench.png"
