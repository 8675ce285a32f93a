# lsa.sh - fm-decode with a document (Lookahead Sparse Attention) on the
# stories260K model: the gate off is dense decoding, a budget of the whole
# document is dense to the logit, selecting the chunk the model attends to
# raises the attention-mass recall by its mass, slots are recycled without
# leaks or duplicates, --select composes with fm-select, and bad input gets
# its one-line message and status.
. "$FM_TOP/tests/cli-lib.sh"
D=$FM_BUILD/fm-decode
S=$M/stories260K.gguf
export OPENBLAS_NUM_THREADS=1

# A document of ~350 tokens (within the model's trained 512) in chunks of 16.
head -c 1500 "$FM_TOP/examples/docs/garden.txt" >"$T/doc.txt"
"$FM_BUILD"/fm-chunk -t "$S" -n 16 --page-chunks 2 -o "$T/doc.fmc" "$T/doc.txt" &&
	"$FM_BUILD"/fm-embed -o "$T/doc.fme" "$T/doc.fmc" &&
	"$FM_BUILD"/fm-index -c "$T/doc.fmc" -o "$T/doc.fmi" "$T/doc.fme"; ok "chunk, embed and index a document"
n_chunks=$("$FM_BUILD"/fm-chunk --list "$T/doc.fmc" | wc -l)
last=$((n_chunks - 1))
C="-m $S -c $T/doc.fmc --device cpu --temp 0"
q='What did they plant under the bridge?'

# json FILE EXPR: evaluates a Python expression over the JSON lines of FILE (as list L).
json() {
	python3 -c 'import json, sys
L = [json.loads(l) for l in open(sys.argv[1])]
print(eval(sys.argv[2]))' "$1" "$2"
}

# --- the gate off, and a budget of the whole document --------------------------
$D -m "$S" --device cpu --temp 0 -n 40 -f "$T/doc.txt" --trace "$T/dense.jsonl" >"$T/dense.out"
$D $C -p '' --attention dense -n 40 --trace "$T/gate.jsonl" >"$T/gate.out"
cmp -s "$T/dense.jsonl" "$T/gate.jsonl"; ok "--attention dense: the same trace, logit for logit, as dense decoding of the document's text"
[ "$(cat "$T/doc.txt" "$T/gate.out")" = "$(cat "$T/dense.out")" ]; ok "--attention dense prints the question (empty) and the same continuation"
$D $C -i "$T/doc.fmi" -p '' --budget 100% --interval 4 -n 40 --trace "$T/full.jsonl" >"$T/full.out"
cmp -s "$T/gate.jsonl" "$T/full.jsonl"; ok "LSA with a budget of the whole document: the dense trace, byte for byte, across 10 windows"
$D $C -i "$T/doc.fmi" -p "$q" --budget 100% -n 30 >"$T/fullq.out" &&
	$D $C -p "$q" --attention dense -n 30 >"$T/gateq.out" && cmp -s "$T/fullq.out" "$T/gateq.out"; ok "with a question too"
$D $C -i "$T/doc.fmi" -p "$q" --budget 30% -n 30 >"$T/lsa.out" 2>"$T/lsa.err"
[ $? -eq 0 ] && [ ! -s "$T/lsa.err" ] && head -c ${#q} "$T/lsa.out" | grep -qF "$q"; ok "a 30% budget runs quietly and prints the question first"

# --- statistics -----------------------------------------------------------------
$D $C -i "$T/doc.fmi" -p "$q" --budget 30% -n 30 -v --stats-json "$T/st.json" >/dev/null 2>"$T/v"
grep -q '^fm-decode: lsa: budget [0-9]* tokens in [0-9]* slots of 16, ' "$T/v" &&
	grep -q '^fm-decode: kv peak on cpu.*: prefill [0-9]* bytes (100.0% of the full cache), decode [0-9]* bytes' "$T/v"; ok "-v: budget, slots, and the KV peaks of prefill and decode"
[ "$(json "$T/st.json" 'L[0]["attention"] == "lsa" and 0 < L[0]["decode_kv_ratio"] < 0.5 and L[0]["prefill_kv_ratio"] == 1 and L[0]["copied_bytes"] > 0')" = True ]; ok "--stats-json: ratios, copies"

# --- slot recycling -----------------------------------------------------------------
$D $C -i "$T/doc.fmi" -p "$q" --budget 40% --interval 2 -n 60 --audit "$T/rec.jsonl" --stats-json "$T/rec.json" >/dev/null
slots=$(json "$T/rec.json" 'L[0]["slots"]')
cat >"$T/rec.py" <<'PY'
import json, sys
L = [json.loads(l) for l in open(sys.argv[1])]
slots = int(sys.argv[2])
prev, bad, changed = set(), [], 0
for w in L:
    ids = [r[0] for r in w["resident"]]
    cur = set(ids)
    if len(ids) != len(cur):
        bad.append("window %d repeats a chunk" % w["window"])
    if len(cur) > slots:
        bad.append("window %d holds %d chunks in %d slots" % (w["window"], len(cur), slots))
    if w["copied_chunks"] != len(cur - prev):
        bad.append("window %d copied %d chunks, %d arrived" % (w["window"], w["copied_chunks"], len(cur - prev)))
    changed += cur != prev
    prev = cur
print("%d windows, %d changes: %s" % (len(L), changed, "; ".join(bad) or "ok"))
sys.exit(1 if bad or len(L) < 20 or changed < 3 else 0)
PY
python3 "$T/rec.py" "$T/rec.jsonl" "$slots" >"$T/rec.txt"; ok "slots recycled over 30 windows: no chunk twice, never more than the slots, only arrivals copied ($(cat "$T/rec.txt"))"

# --- the needed chunk selected, or not: the attention mass it carries -----------
$D $C -i "$T/doc.fmi" -p "$q" --budget 100% -n 4 --audit "$T/all.jsonl" --audit-attention >/dev/null
# The chunk the model attends to most (neither the first nor the last) and the one it attends to least.
hi=$(json "$T/all.jsonl" "max((a for a in L[0]['attention'] if 0 < a[0] < $last), key=lambda a: a[1])[0]")
lo=$(json "$T/all.jsonl" "min(range(1, $last), key=lambda c: dict((a[0], a[1]) for a in L[0]['attention']).get(c, 0))")
printf '0\n%s\n%s\n' "$hi" "$last" >"$T/sel.hi"
printf '0\n%s\n%s\n' "$lo" "$last" >"$T/sel.lo"
$D $C --select "$T/sel.hi" -p "$q" --budget 100% -n 4 --audit "$T/hi.jsonl" --audit-attention >/dev/null &&
	$D $C --select "$T/sel.lo" -p "$q" --budget 100% -n 4 --audit "$T/lo.jsonl" --audit-attention >/dev/null; ok "--select with and without the most attended chunk ($hi vs $lo)"
[ "$(python3 -c 'import json, sys
hi, lo, full = (json.loads(open(p).readline()) for p in sys.argv[1:4])
mass = dict((a[0], a[1]) for a in full["attention"])
gain = hi["recall"] - lo["recall"]
want = mass.get(int(sys.argv[4]), 0) - mass.get(int(sys.argv[5]), 0)
print(hi["recall"] < 1 and lo["recall"] < hi["recall"] and gain > 0.5 * want and full["recall"] > 0.999)' \
    "$T/hi.jsonl" "$T/lo.jsonl" "$T/all.jsonl" "$hi" "$lo")" = True ]; ok "selecting it raises the attention-mass recall by about its mass; the whole document has recall 1"
[ "$(json "$T/hi.jsonl" '[r[0] for r in L[0]["resident"]] == [0, '"$hi"', '"$last"'] and L[0]["resident"][0][2] == "select"')" = True ]; ok "the audit lists the --select set with reason select"

# --- composing with fm-select ---------------------------------------------------
"$FM_BUILD"/fm-select -k 3 --sink 1 --recent 1 -q "$q" "$T/doc.fmi" >"$T/picked"
"$FM_BUILD"/fm-select -k 3 --sink 1 --recent 1 -q "$q" "$T/doc.fmi" |
	$D $C --select - -p "$q" --budget 50% --interval 8 -n 30 --audit "$T/pipe.jsonl" >"$T/pipe.out"; ok "fm-select | fm-decode --select - runs"
[ "$(json "$T/pipe.jsonl" '" ".join(str(r[0]) for r in L[0]["resident"])')" = "$(cut -f1 "$T/picked" | tr '\n' ' ' | sed 's/ $//')" ] &&
	[ "$(json "$T/pipe.jsonl" 'len(set(tuple(r[0] for r in w["resident"]) for w in L))')" = 1 ]; ok "without an index the first set, fm-select's, stays for every window"
$D $C -i "$T/doc.fmi" --select "$T/picked" -p "$q" --budget 50% --interval 8 -n 30 --audit "$T/pi.jsonl" >/dev/null &&
	[ "$(json "$T/pi.jsonl" 'L[0]["resident"][0][2] == "select" and L[1]["resident"][0][2] != "select"')" = True ]; ok "with an index, later windows are chosen by it"

# --- the baselines ------------------------------------------------------------------
$D $C -i "$T/doc.fmi" -p "$q" --budget 25% --select-by recent -n 8 --audit "$T/recent.jsonl" >/dev/null
[ "$(json "$T/recent.jsonl" '[r[0] for r in L[0]["resident"]] == [0] + list(range('"$n_chunks"' - len(L[0]["resident"]) + 1, '"$n_chunks"'))')" = True ]; ok "--select-by recent: the sink and the latest chunks"
$D $C -i "$T/doc.fmi" -p "$q" --budget 25% --select-by random --seed 5 -n 20 --interval 4 --audit "$T/r1.jsonl" >/dev/null &&
	$D $C -i "$T/doc.fmi" -p "$q" --budget 25% --select-by random --seed 5 -n 20 --interval 4 --audit "$T/r2.jsonl" >/dev/null &&
	cmp -s "$T/r1.jsonl" "$T/r2.jsonl" && [ "$(json "$T/r1.jsonl" 'len(set(tuple(r[0] for r in w["resident"]) for w in L)) > 1')" = True ]; ok "--select-by random: a fresh set each window, the same for a seed"

# --- --audit-dense: fidelity measured alongside ---------------------------------------
$D $C -i "$T/doc.fmi" -p "$q" --budget 100% -n 20 --audit-dense --stats-json "$T/ad.json" >"$T/ad.out" &&
	[ "$(json "$T/ad.json" 'L[0]["top1_agreement"] == 1 and L[0]["mean_kl"] < 1e-9')" = True ]; ok "--audit-dense at a full budget: top-1 agreement 1, KL 0"
$D $C -i "$T/doc.fmi" -p "$q" --budget 20% -n 20 --audit-dense >"$T/ad2.out" &&
	$D $C -p "$q" --attention dense -n 20 >"$T/d20.out" && cmp -s "$T/d20.out" "$T/ad2.out"; ok "--audit-dense: the dense model's tokens drive, so the text is dense's"

# --- a bert encoder (-e): the seeded random MiniLM-shaped BERT of test_bert ------------
if "$FM_BUILD/tests/test_bert" --write-gguf "$T/bert.gguf" >/dev/null 2>&1; then
	"$FM_BUILD"/fm-embed -m "$T/bert.gguf" -o "$T/b.fme" "$T/doc.fmc" && "$FM_BUILD"/fm-index -c "$T/doc.fmc" -o "$T/b.fmi" "$T/b.fme"
	$D $C -i "$T/b.fmi" -e "$T/bert.gguf" -p "$q" --budget 30% --interval 8 -n 24 --audit "$T/b.jsonl" >"$T/b.out"; ok "-e: queries embedded with the index's bert encoder"
	[ "$(json "$T/b.jsonl" 'len(L) == 3 and all(w["query"].startswith("What did") for w in L)')" = True ]; ok "three windows, each from a query of the question and the text so far"
	expect_fail 3 "^fm-decode: $T/b.fmi: the index was built with encoder '.*', not the built-in one: give it with -e$" \
		"an index of a bert encoder without -e" -- $D $C -i "$T/b.fmi" -p "$q"
	expect_fail 3 "^fm-decode: $T/bert.gguf: not the encoder the index was built with ('builtin-hash')$" \
		"-e of another encoder than the index's" -- $D $C -i "$T/doc.fmi" -e "$T/bert.gguf" -p "$q"
	expect_fail 3 "^fm-decode: $S: architecture 'llama' is not supported as an encoder" \
		"a llama model as encoder" -- $D $C -i "$T/b.fmi" -e "$S" -p "$q"
else
	echo "# skipped: test_bert could not write the random BERT"
fi

# --- bad input ------------------------------------------------------------------------
head -c 1000 "$FM_TOP/examples/docs/lighthouse.txt" >"$T/other.txt"
"$FM_BUILD"/fm-chunk -t "$S" -n 16 -o "$T/other.fmc" "$T/other.txt" &&
	"$FM_BUILD"/fm-embed -o "$T/other.fme" "$T/other.fmc" && "$FM_BUILD"/fm-index -c "$T/other.fmc" -o "$T/other.fmi" "$T/other.fme"
expect_fail 3 "^fm-decode: $T/other.fmi: not the index of $T/doc.fmc (built from another chunk file)$" \
	"an index of another chunk file" -- $D $C -i "$T/other.fmi" -p "$q"
"$FM_BUILD"/fm-chunk -t "$M/ggml-vocab-llama-spm.gguf" -n 16 -o "$T/spm.fmc" "$T/doc.txt"
expect_fail 3 "^fm-decode: $T/spm.fmc: made with another tokenizer than $S's$" \
	"a chunk file of another tokenizer" -- $D $C -c "$T/spm.fmc" -p "$q" --attention dense
"$FM_BUILD"/fm-chunk -t "$S" -n 16 --page-chunks 2 "$T/doc.txt" | $D $C -c - -p "$q" --attention dense -n 30 >"$T/pipe-c.out" &&
	cmp -s "$T/pipe-c.out" "$T/gateq.out"; ok "-c -: the chunk file from a pipe"
expect_fail 3 "^fm-decode: (stdin): made with another tokenizer than $S's$" "a piped chunk file of another tokenizer" \
	-- sh -c "$FM_BUILD/fm-chunk -t $M/ggml-vocab-llama-spm.gguf -n 16 $T/doc.txt | $D $C -c - -p x --attention dense"
expect_fail 2 "^fm-decode: --budget: 20 tokens hold 1 chunk (slots of 16 tokens, the longest chunk), fewer than the --sink and --recent chunks$" \
	"a budget smaller than sink + recent" -- $D $C -i "$T/doc.fmi" -p "$q" --budget 20
expect_fail 2 "^fm-decode: --budget: 5 tokens hold 0 chunks (slots of 16 tokens, the longest chunk), fewer than one$" "a budget below one chunk" -- $D $C -i "$T/doc.fmi" -p "$q" --budget 5
expect_fail 2 "^fm-decode: $T/doc.fmc: sparse attention needs an index (-i) or a resident set (--select)" \
	"neither an index nor --select" -- $D $C -p "$q"
printf '0\nseven\n' >"$T/bad.sel"
expect_fail 3 "^fm-decode: $T/bad.sel: line 2: not a chunk id$" "--select: a malformed line" -- $D $C --select "$T/bad.sel" -p "$q" --budget 50%
[ ! -s "$T/out" ]; ok "a bad --select file is refused before the prefill: nothing on stdout"
printf '0\n%s\n' "$n_chunks" >"$T/out.sel"
expect_fail 3 "^fm-decode: $T/out.sel: line 2: chunk $n_chunks is not in the document (chunks 0..$last)$" \
	"--select: a chunk outside the document" -- $D $C --select "$T/out.sel" -p "$q" --budget 50%
printf '0\n1\n2\n3\n4\n5\n6\n7\n8\n' >"$T/many.sel"
expect_fail 2 "^fm-decode: $T/many.sel: 9 chunks do not fit the reserve of [0-9]* slots (raise --budget)$" \
	"--select: more chunks than the reserve holds" -- $D $C --select "$T/many.sel" -p "$q" --budget 64
expect_fail 2 "^fm-decode: --doc: no document named 'nope'$" "--doc of a missing document" -- $D $C -i "$T/doc.fmi" --doc nope -p "$q"
expect_fail 2 "^fm-decode: -k: 999 is more than the document's $n_chunks chunks$" "-k beyond the document" -- $D $C -i "$T/doc.fmi" -k 999 -p "$q"
head -c 700 "$T/doc.fmc" >"$T/trunc.fmc"
expect_fail 3 "^fm-decode: $T/trunc.fmc: truncated" "a truncated chunk file" -- $D $C -c "$T/trunc.fmc" -i "$T/doc.fmi" -p "$q"
expect_usage "^fm-decode: -i: needs a document (-c chunks.fmc)$" "-i without -c" -- $D -m "$S" -i "$T/doc.fmi" -p x
expect_usage "^fm-decode: --budget: needs a document (-c chunks.fmc)$" "--budget without -c" -- $D -m "$S" --budget 10% -p x
expect_usage "^fm-decode: --interval: needs a document (-c chunks.fmc)$" "--interval without -c" -- $D -m "$S" --interval 8 -p x
expect_fail 4 "^fm-decode: $T/no/such/st.json: cannot create" "an unwritable --stats-json fails before the work" -- $D $C -i "$T/doc.fmi" -p "$q" --stats-json "$T/no/such/st.json"
expect_usage "^fm-decode: --budget: a number of tokens or a percentage" "--budget 0%" -- $D $C --budget 0% -p x
expect_usage "^fm-decode: --attention: lsa or dense$" "--attention junk" -- $D $C --attention sparse -p x
expect_usage "^fm-decode: --select: standard input is already the prompt" "--select - with the prompt on stdin" -- $D $C --select -

echo "1..$n"
[ "$failed" -eq 0 ]
