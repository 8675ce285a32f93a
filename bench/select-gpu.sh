#!/bin/sh
# select-gpu.sh - fm-select's GPU scoring and top-k against PyTorch
# matmul + topk in the same run, on the same data (bench/select_gpu_speed.c
# and bench/select_torch.py rebuild it from a hash): one query over N F16
# vectors of dimension D, top-K (time and achieved memory bandwidth), and a
# batch of BATCH queries in GEMMs of SUB (TFLOP/s).
#
# usage: bench/select-gpu.sh [build]     (a CUDA build: make CUDA=1)
# env:   N (10000000), D (384), K (1000), BATCH (1024), SUB (256), RUNS (10)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
n=${N:-10000000} d=${D:-384} k=${K:-1000} batch=${BATCH:-1024} sub=${SUB:-256} runs=${RUNS:-10}
cuda=${CUDA_HOME:-/usr/local/cuda}
bin=$build/bench/select_gpu_speed
if [ ! -x "$bin" ]; then
	mkdir -p "$build/bench"
	cc -O2 -I"$top/common" -DFM_CUDA=1 -o "$bin" "$top/bench/select_gpu_speed.c" "$build/libfm.a" \
		-larchive -lopenblas -lm -lpthread -L"$cuda/lib64" -Wl,-rpath,"$cuda/lib64" -lcublas \
		-lcudart_static -ldl -lrt -lstdc++
fi
ids=$(mktemp)
trap 'rm -f "$ids"' EXIT
"$bin" "$n" "$d" "$k" "$batch" "$sub" "$runs" "$ids"
python3 "$top/bench/select_torch.py" "$n" "$d" "$k" "$batch" "$runs" "$ids" "$sub"
