# needle.sh - retrieval recall with the built-in encoder: a generated
# document of about 55k tokens (bench/needle.py) with 12 planted facts, in
# 64-token chunks overlapping by 16 (so a fact cut by a chunk boundary keeps
# its name whole in one chunk); every fact's chunk must be among the 8 best
# for the question that names it.  bench/needle.sh runs the same at 200k
# tokens and more.
. "$FM_TOP/tests/cli-lib.sh"
B=$FM_BUILD
python3 "$FM_TOP/bench/needle.py" gen --bytes 100000 --facts 12 --seed 3 "$T/n"; ok "generate the haystack"
$B/fm-chunk -t "$M/stories260K.gguf" -n 64 --overlap 16 -o "$T/h.fmc" "$T/n/haystack.txt" &&
	$B/fm-embed -o "$T/h.fme" "$T/h.fmc" && $B/fm-index -c "$T/h.fmc" -o "$T/h.fmi" "$T/h.fme"
ok "chunk, embed, index"
tokens=$($B/fm-index --stats "$T/h.fmi" | sed 's/.*"tokens":\([0-9]*\).*/\1/')
[ "$tokens" -gt 50000 ]; ok "the haystack has $tokens tokens"
$B/fm-chunk --list "$T/h.fmc" >"$T/chunks.jsonl"
$B/fm-select -k 8 "$T/h.fmi" <"$T/n/questions.txt" >"$T/sel"; ok "select the top 8 for each question"
python3 "$FM_TOP/bench/needle.py" score "$T/n" "$T/chunks.jsonl" "$T/sel" >"$T/score"
st=$?; sed 's/^/# /' "$T/score"; [ $st -eq 0 ]; ok "every planted fact's chunk is in its question's top 8"
done_testing
