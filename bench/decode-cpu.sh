#!/bin/sh
# decode-cpu.sh - fm-decode's CPU speed against a straightforward baseline
# (bench/ref-decode.c: llama2.c's run.c forward with OpenMP) in the same run,
# on the same models, prompt and greedy tokens.  Prints a markdown table of
# medians over RUNS runs: prefill and decode tokens/s of each, and whether
# the two chose the same greedy tokens (fm with an F32 KV cache for that).
#
# usage: bench/decode-cpu.sh [build]
# env:   RUNS (5), NEW (128 new tokens), BIG=1 adds the 1B-class F16 model
#        (dim 2048, 16 layers, 32 heads, 8 KV heads, FFN 8192; 2.2 GB file),
#        MODELS (a directory for the generated models, default build/bench).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
runs=${RUNS:-5}
new=${NEW:-128}
dir=${MODELS:-$build/bench}
mkdir -p "$dir"
D=$build/fm-decode
R=$build/bench/ref-decode
[ -x "$D" ] || { echo "decode-cpu: $D: build it first (make build/fm-decode)" >&2; exit 2; }
mkdir -p "$build/bench"
cc -O2 -fopenmp -I"$top/common" -o "$R" "$top/bench/ref-decode.c" "$build/libfm.a" \
	-larchive -lopenblas -lm -lpthread

# OpenBLAS picks its kernels from the CPU model; some virtual machines hide it
# and get the generic SSE3 ("Prescott") ones.  Name the core the flags allow.
if [ -z "${OPENBLAS_CORETYPE:-}" ] &&
    OPENBLAS_VERBOSE=2 "$D" --help 2>&1 >/dev/null | grep -q 'Core: Prescott'; then
	if grep -q avx512f /proc/cpuinfo; then OPENBLAS_CORETYPE=SkylakeX
	elif grep -q avx2 /proc/cpuinfo; then OPENBLAS_CORETYPE=Haswell; fi
	[ -n "${OPENBLAS_CORETYPE:-}" ] && export OPENBLAS_CORETYPE &&
		echo "note: OpenBLAS saw a generic CPU; OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE for this run" >&2
fi

prompt='Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.'
models="$top/models/stories260K.gguf"
small=$dir/random-110m-f16.gguf
[ -f "$small" ] || python3 "$top/scripts/make-random-llama.py" -o "$small" --dim 768 --layers 12 \
	--heads 12 --kv-heads 4 --ffn 2048 --type f16 >&2
models="$models $small"
if [ "${BIG:-0}" = 1 ]; then
	big=$dir/random-1b-f16.gguf
	[ -f "$big" ] || python3 "$top/scripts/make-random-llama.py" -o "$big" --dim 2048 --layers 16 \
		--heads 32 --kv-heads 8 --ffn 8192 --type f16 >&2
	models="$models $big"
fi

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
speed() { # stage file: tokens/s of "name: stage: ... tokens/s" lines
	sed -n "s/^[a-z-]*: $1: .*, \([0-9.]*\) tokens\/s$/\1/p" "$2"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
threads=$(nproc)
echo "| model | prompt | new | fm prefill tok/s | ref prefill tok/s | fm decode tok/s | ref decode tok/s | decode speed-up | same greedy tokens |"
echo "|---|---|---|---|---|---|---|---|---|"
for m in $models; do
	# The prompt's token ids, and fm's greedy tokens with an F32 KV cache (as the baseline's), from traces.
	"$D" -m "$m" -n 0 -p "$prompt" --trace "$tmp/t0" >/dev/null
	"$D" -m "$m" --temp 0 --kv-type f32 -n "$new" -p "$prompt" --trace "$tmp/t1" >/dev/null 2>&1
	prompt_ids=$(python3 -c 'import json, sys; print(" ".join(str(json.loads(l)["token"]) for l in open(sys.argv[1])))' "$tmp/t0")
	n_prompt=$(wc -l <"$tmp/t0")
	: >"$tmp/fm-pre"; : >"$tmp/fm-dec"; : >"$tmp/ref-pre"; : >"$tmp/ref-dec"
	for i in $(seq "$runs"); do
		"$D" -m "$m" --temp 0 -n "$new" -p "$prompt" -v >/dev/null 2>"$tmp/fm.err"
		speed prefill "$tmp/fm.err" >>"$tmp/fm-pre"
		speed decode "$tmp/fm.err" >>"$tmp/fm-dec"
		"$R" "$m" "$new" $prompt_ids >"$tmp/ref-toks" 2>"$tmp/ref.err"
		speed prefill "$tmp/ref.err" >>"$tmp/ref-pre"
		speed decode "$tmp/ref.err" >>"$tmp/ref-dec"
	done
	# fm stops at EOS (the last token it chose); the baseline goes on: compare what fm made.
	same=$(python3 - "$tmp/t1" "$tmp/ref-toks" "$n_prompt" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
fm = [r['next'] for r in rows[int(sys.argv[3]) - 1:]]
ref = [int(t) for t in open(sys.argv[2]).read().split()][:len(fm)]
n = next((i for i, (a, b) in enumerate(zip(fm, ref)) if a != b), len(fm))
print('all %d' % n if n == len(fm) else 'first %d of %d' % (n, len(fm)))
PY
)
	gen=$(( $(wc -l <"$tmp/t1") - n_prompt + 1 ))
	fd=$(median <"$tmp/fm-dec"); rd=$(median <"$tmp/ref-dec")
	printf '| %s | %s | %s | %s | %s | %s | %s | %.2fx | %s |\n' "$(basename "$m" .gguf)" \
		"$n_prompt" "$gen" "$(median <"$tmp/fm-pre")" "$(median <"$tmp/ref-pre")" \
		"$fd" "$rd" "$(echo "$fd $rd" | awk '{ print $1 / $2 }')" "$same"
done
echo
echo "machine: $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1), $threads CPUs," \
	"$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo);" \
	"runs $runs, medians; fm-decode default F16 KV cache, ref F32; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-auto}"
