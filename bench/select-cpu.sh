#!/bin/sh
# select-cpu.sh - fm-select's scoring and top-k on the CPU against a
# straightforward reference in the same run (bench/select_speed.c): one
# query over N vectors of dimension D, F32 and F16, and a batch of queries.
#
# usage: bench/select-cpu.sh [build]
# env:   N (1000000), D (384), K (1000), BATCH (64), RUNS (5)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
[ -f "$build/libfm.a" ] || { echo "select-cpu: $build/libfm.a: build it first (make)" >&2; exit 2; }
mkdir -p "$build/bench"
cc -O2 -I"$top/common" -o "$build/bench/select_speed" "$top/bench/select_speed.c" "$build/libfm.a" \
	-larchive -lopenblas -lm -lpthread
# OpenBLAS picks its kernels from the CPU model; some virtual machines hide it
# and get the generic SSE3 ("Prescott") ones.  Name the core the flags allow.
if [ -z "${OPENBLAS_CORETYPE:-}" ] &&
    OPENBLAS_VERBOSE=2 "$build/bench/select_speed" 64 8 1 1 1 2>&1 >/dev/null | grep -q 'Core: Prescott'; then
	if grep -q avx512f /proc/cpuinfo; then OPENBLAS_CORETYPE=SkylakeX
	elif grep -q avx2 /proc/cpuinfo; then OPENBLAS_CORETYPE=Haswell; fi
	[ -n "${OPENBLAS_CORETYPE:-}" ] && export OPENBLAS_CORETYPE &&
		echo "note: OpenBLAS saw a generic CPU; OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE for this run" >&2
fi
echo "$(grep -m 1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-auto}, load average $(cut -d " " -f 1-3 /proc/loadavg)"
echo
"$build/bench/select_speed" "${N:-1000000}" "${D:-384}" "${K:-1000}" "${BATCH:-64}" "${RUNS:-5}"
