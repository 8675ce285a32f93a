#!/bin/sh
# needle.sh - retrieval recall of the built-in encoder with fm-select, at
# several document lengths and selection policies: a haystack from
# bench/needle.py with FACTS planted facts, chunked with the stories260K
# tokenizer in 64-token chunks (16 per page) overlapping by OVERLAP tokens,
# one question per fact.  A fact is found when a chunk holding any of it is
# selected for its question.  Prints a markdown table: the document's
# tokens, chunks, overlap, policy, facts found, the tokens selected per
# question (overlaps counted twice), and fm-select's time for all the
# questions.
#
# usage: bench/needle.sh [build]
# env:   SIZES (haystack bytes, default "100000 400000 2000000": about 54k,
#        217k and 1.1M tokens), OVERLAPS ("0 16"), FACTS (50), SEED (1)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
sizes=${SIZES:-100000 400000 2000000}
facts=${FACTS:-50}
overlaps=${OVERLAPS:-0 16}
seed=${SEED:-1}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for t in fm-chunk fm-embed fm-index fm-select; do
	[ -x "$build/$t" ] || { echo "needle: $build/$t: build it first" >&2; exit 2; }
done

echo "| tokens | chunks | overlap | policy | found | selected tokens per question | select time |"
echo "| ---: | ---: | ---: | --- | ---: | ---: | ---: |"
for size in $sizes; do
for overlap in $overlaps; do
	d=$dir/$size-$overlap
	python3 "$top/bench/needle.py" gen --bytes "$size" --facts "$facts" --seed "$seed" "$d"
	"$build/fm-chunk" -t "$top/models/stories260K.gguf" -n 64 --overlap "$overlap" --page-chunks 16 \
	    -o "$d/h.fmc" "$d/haystack.txt"
	"$build/fm-embed" -o "$d/h.fme" "$d/h.fmc"
	"$build/fm-index" -c "$d/h.fmc" -o "$d/h.fmi" "$d/h.fme"
	"$build/fm-chunk" --list "$d/h.fmc" >"$d/chunks.jsonl"
	stats=$("$build/fm-index" --stats "$d/h.fmi")
	tokens=$(echo "$stats" | sed 's/.*"tokens":\([0-9]*\).*/\1/')
	chunks=$(echo "$stats" | sed 's/.*"chunks":\([0-9]*\).*/\1/')
	tokens=$((tokens - overlap * (chunks - 1)))
	for policy in "-k 1" "-k 8" "-k 32" "--budget 1%" "--budget 5%" "--threshold 0.3" \
	    "--pages 1" "--pages 4" "--pages 1 --threshold 0.35" "-k 8 --sink 1 --recent 4"; do
		t0=$(date +%s.%N)
		# shellcheck disable=SC2086
		"$build/fm-select" $policy "$d/h.fmi" <"$d/questions.txt" >"$d/sel" || [ $? -eq 1 ]
		t1=$(date +%s.%N)
		python3 "$top/bench/needle.py" score "$d" "$d/chunks.jsonl" "$d/sel" >"$d/score" || true
		line=$(head -n 1 "$d/score")
		found=$(echo "$line" | sed 's/found \([0-9]*\) of \([0-9]*\);.*/\1\/\2/')
		res=$(echo "$line" | sed 's/.*resident \([0-9]*\) of [0-9]* tokens (\([0-9.]*%\)).*/\1 (\2)/')
		printf '| %s | %s | %s | `%s` | %s | %s | %.3f s |\n' "$tokens" "$chunks" "$overlap" "$policy" \
		    "$found" "$res" "$(echo "$t1 - $t0" | bc)"
	done
done
done
