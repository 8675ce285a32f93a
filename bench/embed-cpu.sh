#!/bin/sh
# embed-cpu.sh - fm-embed's CPU speed with the random MiniLM-shaped BERT (384
# dims, 12 heads, 6 layers, FFN 1536) over chunks of 64 to 256 tokens,
# against a NumPy float32 port of the same model (bench/bert_reference.py
# --bench) on the same token sequences in the same run.  Prints a markdown
# table of medians over RUNS runs: tokens/s of each, and fm's achieved
# GFLOP/s (2 x parameters of the blocks per token, plus attention).
#
# usage: bench/embed-cpu.sh [build]
# env:   RUNS (3), CHUNKS (about 400 chunks per size)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
runs=${RUNS:-3}
E=$build/fm-embed
for b in "$E" "$build/fm-chunk" "$build/tests/test_bert"; do
	[ -x "$b" ] || { echo "embed-cpu: $b: build it first" >&2; exit 2; }
done
# As bench/decode-cpu.sh: name the core when OpenBLAS sees a generic CPU.
if [ -z "${OPENBLAS_CORETYPE:-}" ] &&
    OPENBLAS_VERBOSE=2 "$E" --help 2>&1 >/dev/null | grep -q 'Core: Prescott'; then
	if grep -q avx512f /proc/cpuinfo; then OPENBLAS_CORETYPE=SkylakeX
	elif grep -q avx2 /proc/cpuinfo; then OPENBLAS_CORETYPE=Haswell; fi
	[ -n "${OPENBLAS_CORETYPE:-}" ] && export OPENBLAS_CORETYPE &&
		echo "note: OpenBLAS saw a generic CPU; OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE for this run" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export FM_TOP=$top
"$build/tests/test_bert" --write-gguf "$tmp/rb.gguf"
BGE=$top/models/ggml-vocab-bert-bge.gguf
n=0
while [ "$n" -lt "${CHUNKS:-400}" ]; do cat "$top"/examples/docs/*.txt; n=$((n + 12)); done >"$tmp/corpus.txt"

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "| chunk tokens | chunks | fm tokens/s | fm GFLOP/s | numpy-f32 tokens/s | speed-up |"
echo "|---|---|---|---|---|---|"
for size in 64 128 254; do
	"$build/fm-chunk" -t "$BGE" -n $size -o "$tmp/c.fmc" "$tmp/corpus.txt"
	# The sequences the encoder sees: the chunk's ids framed by [CLS] and [SEP].
	"$build/fm-chunk" --list "$tmp/c.fmc" | python3 -c '
import json, sys
for l in sys.stdin:
    print(" ".join(map(str, [101] + json.loads(l)["tokens"] + [102])))' >"$tmp/ids"
	chunks=$(wc -l <"$tmp/ids")
	i=0; : >"$tmp/fm"
	while [ $i -lt "$runs" ]; do
		"$E" -v -m "$tmp/rb.gguf" -o "$tmp/c.fme" "$tmp/c.fmc" 2>&1 |
			sed -n 's/.*: \([0-9.]*\) tokens\/s$/\1/p' >>"$tmp/fm"
		i=$((i + 1))
	done
	fm=$(median <"$tmp/fm")
	py=$(python3 "$top/bench/bert_reference.py" --bench "$tmp/ids" "$tmp/rb.gguf" |
		sed -n 's/.*: \([0-9.]*\) tokens\/s$/\1/p')
	# Per token: 2 x (4 d^2 + 2 d f) per layer, and 4 L d for attention (L = size + 2).
	gf=$(awk -v t="$fm" -v L=$((size + 2)) 'BEGIN { d = 384; f = 1536;
		printf "%.1f", t * 6 * (2 * (4 * d * d + 2 * d * f) + 4 * L * d) / 1e9 }')
	sp=$(awk -v a="$fm" -v b="$py" 'BEGIN { printf "%.1fx", a / b }')
	echo "| $size | $chunks | $fm | $gf | $py | $sp |"
done
echo
echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), runs $runs, medians; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-auto}"
