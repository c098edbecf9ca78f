#!/usr/bin/env bash
# usage: run.sh PREFIX CXX WORKDIR — compiles main.cpp with the installed dogpile.pc and runs it.
set -euo pipefail
prefix=$1 cxx=$2 work=$3
pc=$(find "$prefix" -name dogpile.pc -path '*pkgconfig*' | head -1)
[ -n "$pc" ] || { echo "no dogpile.pc under $prefix" >&2; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc")
mkdir -p "$work"
flags=$(pkg-config --cflags --libs dogpile)
echo "pkg-config --cflags --libs dogpile: $flags"
"$cxx" "$(dirname "$0")/main.cpp" -o "$work/pkg_config_consumer" $flags
"$work/pkg_config_consumer"
