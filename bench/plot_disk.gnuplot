# Plots bench/disk_core results (the TSV written with --tsv) as four panels: get and set
# latency (median, p90, p99; log scale) per backend, with 1 and 2 processes.
#   gnuplot -e "infile='results.tsv'; outfile='docs/img/disk_bench.png'" bench/plot_disk.gnuplot
# TSV columns: procs backend op count misses median_us p90_us p99_us max_us total_s
if (!exists("infile")) infile = 'results.tsv'
if (!exists("outfile")) outfile = 'disk_bench.png'
set terminal pngcairo size 1400,900 font "sans,11"
set output outfile
set datafile separator "\t"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set grid ytics
set ylabel "latency (µs, log scale)"
set key top left
set xtics nomirror
rows(p, op) = sprintf("< awk -F'\t' '$1 == %d && $3 == \"%s\"' '%s'", p, op, infile)
set multiplot layout 2,2 title "benchmark\\_core: 100 keys, 90% get / 9% set / 1% delete, 1-495 B values (lower is better)"
do for [p = 1:2] {
  do for [op in "get set"] {
    set title sprintf("%s, %d process%s", op, p, p == 1 ? "" : "es")
    plot rows(p, op) using 6:xtic(2) title "median" lc rgb "#2a6fbb", \
         '' using 7 title "p90" lc rgb "#f0a030", \
         '' using 8 title "p99" lc rgb "#c03030"
  }
}
unset multiplot
