#!/bin/sh
# lsa-decode-cuda.sh - decode speed and GPU KV of Lookahead Sparse Attention
# against dense decoding, in the same run, on a random-weight 1B-class F16
# llama (scripts/make-random-llama.py: dim 2048, 16 layers, 32 heads, 8 KV
# heads, FFN 8192, the Llama 2 vocabulary).  For each document: one dense run
# (--attention dense) and one LSA run (--budget 10%, re-selection every 64
# tokens through the built-in encoder's index), both greedy, NEW tokens each;
# one table row per document from their --stats-json.
#
# usage: bench/lsa-decode-cuda.sh DOC ...   (each DOC.fmc and DOC.fmi exist:
#          fm-chunk -t models/ggml-vocab-llama-spm.gguf, fm-embed, fm-index)
# env:   B (build dir with fm-decode, default build/gpu-check), MODEL (made
#        when missing), NEW (256), BUDGET (10%), QUESTION
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
B=${B:-build/gpu-check}
model=${MODEL:-$B/random-1b.gguf}
new=${NEW:-256}
budget=${BUDGET:-10%}
question=${QUESTION:-What is the vault code of Kipvos Morsar?}
out=$B/lsa-bench
mkdir -p "$out"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ ! -f "$model" ]; then
	t0=$(date +%s)
	python3 scripts/make-random-llama.py -o "$model" --dim 2048 --layers 16 --heads 32 \
	    --kv-heads 8 --ffn 8192 --ctx 1048576 --type f16 || exit 1
	echo "model written in $(( $(date +%s) - t0 )) s"
fi

get() { # key json
	python3 -c 'import json,sys; print(json.load(open(sys.argv[2]))[sys.argv[1]])' "$1" "$2"
}

printf '| document tokens | dense decode tok/s | LSA decode tok/s | LSA / dense | dense prefill s | LSA prefill s | GPU KV decode (LSA / full) | LSA prefill KV / full | copied MB | re-selections |\n'
printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for doc in "$@"; do
	name=$(basename "$doc")
	for mode in dense lsa; do
		if [ $mode = dense ]; then
			args="--attention dense"
		else
			args="-i $doc.fmi --budget $budget --interval 64"
		fi
		$B/fm-decode -m "$model" -c "$doc.fmc" $args -p "$question" --temp 0 -n "$new" \
		    --device cuda -v --stats-json "$out/$name.$mode.json" >"$out/$name.$mode.txt" \
		    2>"$out/$name.$mode.err" || { echo "FAIL $name $mode:"; tail -3 "$out/$name.$mode.err"; continue 2; }
	done
	d=$out/$name.dense.json
	l=$out/$name.lsa.json
	python3 - "$d" "$l" <<'PY'
import json, sys
d, l = (json.load(open(p)) for p in sys.argv[1:3])
print("| %d | %.1f | %.1f | %.2fx | %.2f | %.2f | %.1f%% | %.1f%% | %.1f | %d |" % (
    l["document_tokens"], d["decode_tokens_per_s"], l["decode_tokens_per_s"],
    l["decode_tokens_per_s"] / d["decode_tokens_per_s"], d["prefill_seconds"], l["prefill_seconds"],
    100 * l["decode_kv_ratio"], 100 * l["prefill_kv_ratio"], l["copied_bytes"] / 1e6, l["reselections"]))
PY
	cmp -s "$out/$name.dense.txt" "$out/$name.lsa.txt" && echo "  ($name: LSA and dense wrote the same text)" ||
		echo "  ($name: LSA text differs from dense after $(cmp "$out/$name.dense.txt" "$out/$name.lsa.txt" | awk '{print $5}' | tr -d ,) bytes)"
done
