#!/usr/bin/python3
"""python-diskcache's benchmark_core worker loop on the op files written by bench/disk_core.

Run by disk_core (not meant to be run alone):
  diskcache_core.py --backend cache|fanout --dir D --ops-dir O --procs P --keys K --warmup W
                    --out FILE
Each op file line is "g|s|d KEY REPEAT"; the key is str(KEY).encode(), the value of op i is
str(i).encode() * REPEAT, exactly as benchmark_core.py builds them (values are built before the
clock starts). Backends: diskcache.Cache(D) with defaults, or FanoutCache(D, shards=8,
timeout=0.010). Writes one "g|s|d NANOSECONDS MISS" line per recorded op to FILE, and per
worker a "c CPU_NANOSECONDS 0" line: the process CPU time of its whole loop.
"""
import argparse
import multiprocessing
import os
import time

import diskcache


def load_ops(path):
    ops = []
    with open(path) as f:
        for line in f:
            kind, key, rep = line.split()
            ops.append((kind, str(int(key)).encode(), int(rep)))
    return ops


def open_cache(backend, directory):
    if backend == "cache":
        return diskcache.Cache(directory)
    return diskcache.FanoutCache(directory, shards=8, timeout=0.010)


def worker(backend, directory, ops_file, warmup, out_file, start):
    ops = load_ops(ops_file)
    obj = open_cache(backend, directory)
    values = [str(i).encode() * rep for i, (_, _, rep) in enumerate(ops)]
    clock = time.perf_counter_ns
    rows = []
    start.wait()
    cpu0 = time.process_time_ns()
    for i, (kind, key, _) in enumerate(ops):
        if kind == "g":
            t0 = clock()
            result = obj.get(key)
            t1 = clock()
            miss = result is None
        elif kind == "s":
            value = values[i]
            t0 = clock()
            result = obj.set(key, value)
            t1 = clock()
            miss = result is False
        else:
            t0 = clock()
            result = obj.delete(key)
            t1 = clock()
            miss = result is False
        if i >= warmup:
            rows.append("%s %d %d\n" % (kind, t1 - t0, 1 if miss else 0))
    rows.append("c %d 0\n" % (time.process_time_ns() - cpu0))
    obj.close()
    with open(out_file, "w") as f:
        f.writelines(rows)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backend", choices=["cache", "fanout"], required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--ops-dir", required=True)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--keys", type=int, default=100)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--out", required=True)
    a = p.parse_args()

    obj = open_cache(a.backend, a.dir)
    for i in range(a.keys):
        key = str(i).encode()
        obj.set(key, key)
    obj.close()

    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(a.procs)
    parts = []
    procs = []
    for w in range(a.procs):
        part = "%s.%d" % (a.out, w)
        parts.append(part)
        proc = ctx.Process(
            target=worker,
            args=(a.backend, a.dir, os.path.join(a.ops_dir, "ops-%d.txt" % w), a.warmup, part, start),
        )
        proc.start()
        procs.append(proc)
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit("worker failed")
    with open(a.out, "w") as out:
        for part in parts:
            with open(part) as f:
                out.write(f.read())
            os.remove(part)


if __name__ == "__main__":
    main()
