# embed.sh - fm-embed from the command line: the built-in encoder over the
# bundled documents, shards that merge back into the whole, queries, --list,
# the random BERT against the PyTorch fixture, long texts, and every kind of
# bad input with its message and exit status (and no output file left).
. "$FM_TOP/tests/cli-lib.sh"
E=$FM_BUILD/fm-embed
C=$FM_BUILD/fm-chunk
BGE=$M/ggml-vocab-bert-bge.gguf
DOCS=$FM_TOP/examples/docs

# --- options and help -------------------------------------------------------
$E --help >"$T/help" 2>&1; ok "--help exits 0"
synopsis=$(mandoc -Tascii "$FM_TOP/man/fm-embed.1" | col -bx |
	sed -n '/^SYNOPSIS/,/^DESCRIPTION/p' | sed '1d;$d' | tr -s ' \n' '  ' | sed 's/^ //;s/ $//')
usage=$(sed -n '1,/^$/p' "$T/help" | sed 's/^usage: //;/^$/d' | tr -s ' \n' '  ' | sed 's/^ //;s/ $//')
[ "$synopsis" = "$usage" ]; ok "--help usage lines are the man page's SYNOPSIS"
[ "$(printf '%s' "$synopsis" | grep -o 'fm-embed ' | wc -l)" -eq 3 ]; ok "SYNOPSIS parsed"
expect_usage "unrecognized option" "unknown option is a usage error" -- $E --bogus
expect_fail 2 "dtype: expected f32 or f16" "--dtype f64 refused" -- $E --dtype f64 -o "$T/x"
expect_fail 2 "shard: expected i/n" "--shard 3/3 refused" -- $E --shard 3/3 -o "$T/x"
expect_fail 2 "shard: expected i/n" "--shard 1 refused" -- $E --shard 1 -o "$T/x"
expect_fail 2 "dim: expected" "--dim 0 refused" -- $E --dim 0 -o "$T/x"
expect_fail 2 "device: expected" "--device gpu refused" -- $E --device gpu -o "$T/x"
expect_usage "needs -m" "--pooling without a model" -- $E --pooling cls -o "$T/x"
expect_usage "a model has its own" "--dim with a model" -- $E -m "$BGE" --dim 8 -o "$T/x"
expect_usage "one input at most" "two inputs" -- $E -o "$T/x" a b
expect_usage "exclude each other" "--list with --queries" -- $E --list --queries

# --- the built-in encoder over the bundled documents ------------------------
$C -t "$BGE" -n 32 -o "$T/docs.fmc" "$DOCS"/*.txt; ok "chunk the bundled documents"
nchunks=$($C --list "$T/docs.fmc" | wc -l)
$E -o "$T/docs.fme" "$T/docs.fmc"; ok "embed them (built-in encoder)"
$E --list --full "$T/docs.fme" >"$T/docs.jsonl"; ok "--list --full reads them back"
python3 - "$T/docs.jsonl" "$nchunks" <<'PY'; ok "one unit vector of 384 values per chunk, ids in order"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == int(sys.argv[2]), (len(rows), sys.argv[2])
for i, r in enumerate(rows):
    assert r["id"] == i and r["dim"] == 384 and len(r["vec"]) == 384
    assert abs(math.sqrt(sum(x * x for x in r["vec"])) - 1) < 1e-5
PY
$E --list "$T/docs.fme" | head -n 1 | python3 -c 'import json,sys; assert len(json.loads(sys.stdin.read())["vec"]) == 8'
ok "--list shows 8 values without --full"
$C -t "$BGE" -n 32 "$DOCS"/*.txt | $E | cmp -s - "$T/docs.fme"; ok "pipe in, pipe out: the same bytes as the file (deterministic)"
$E -v -o "$T/v.fme" "$T/docs.fmc" 2>"$T/v.err"; grep -q "vectors/s" "$T/v.err" && grep -q "builtin-hash" "$T/v.err"
ok "-v reports the encoder and vectors/s"
$E --dtype f16 -o "$T/docs16.fme" "$T/docs.fmc" && [ "$(wc -c <"$T/docs16.fme")" -lt "$(wc -c <"$T/docs.fme")" ]
ok "--dtype f16 writes a smaller file"
$E --list --full "$T/docs16.fme" >"$T/docs16.jsonl"
python3 - "$T/docs.jsonl" "$T/docs16.jsonl" <<'PY'; ok "f16 rows within 0.001 cosine of f32"
import json, sys
a = [json.loads(l)["vec"] for l in open(sys.argv[1])]
b = [json.loads(l)["vec"] for l in open(sys.argv[2])]
assert len(a) == len(b)
for x, y in zip(a, b):
    assert sum(p * q for p, q in zip(x, y)) > 0.999
PY

# A query finds the chunk that shares its rare words.
printf 'the lighthouse keeper\nclockmaker gears\n' | $E --queries -o "$T/q.fme"; ok "--queries from stdin"
$E --list --full "$T/q.fme" >"$T/q.jsonl"
$C --list "$T/docs.fmc" >"$T/chunks.jsonl"
python3 - "$T/q.jsonl" "$T/docs.jsonl" "$T/chunks.jsonl" <<'PY'; ok "the best chunk for each query comes from the document it names"
import json, sys
q = [json.loads(l)["vec"] for l in open(sys.argv[1])]
d = [json.loads(l)["vec"] for l in open(sys.argv[2])]
docs = [json.loads(l)["doc"] for l in open(sys.argv[3])]
for qv, want in zip(q, ("lighthouse", "clockmaker")):
    best = max(range(len(d)), key=lambda i: sum(a * b for a, b in zip(qv, d[i])))
    assert want in docs[best], (want, docs[best])
PY

# --- streaming and memory --------------------------------------------------------
mkfifo "$T/fifo"
$C -t "$BGE" -n 32 <"$T/fifo" | $E >"$T/stream.fme" &
pid=$!
exec 3>"$T/fifo"
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do cat "$DOCS"/*.txt; done >&3
sleep 2
size=$(wc -c <"$T/stream.fme")
exec 3>&-
wait $pid
[ "$size" -gt 8192 ]; ok "vectors flow while the chunker's input is still open ($size bytes before EOF)"
$E --list "$T/stream.fme" >/dev/null; ok "the streamed file is complete and valid"
for i in $(seq 1 40); do cat "$DOCS"/*.txt; done >"$T/m1.txt"
for i in $(seq 1 10); do cat "$T/m1.txt"; done >"$T/m10.txt"
$C -t "$BGE" -o "$T/m1.fmc" "$T/m1.txt" && $C -t "$BGE" -o "$T/m10.fmc" "$T/m10.txt"
# Without ASan's quarantine, which keeps freed blocks (qsort's buffer, one per
# row) out of reuse and would make a sanitized build's memory grow.
rss() { ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=0" /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n 1; }
r1=$(rss $E -o /dev/null "$T/m1.fmc")
r10=$(rss $E -o /dev/null "$T/m10.fmc")
[ "$r10" -lt $((r1 + 4096)) ]; ok "peak memory for 10x the chunks ($r10 KiB) is that of 1x ($r1 KiB), within 4 MiB"
rm -f "$T/m1.txt" "$T/m10.txt"

# --- shards -------------------------------------------------------------------
for i in 0 1 2; do $E --shard $i/3 -o "$T/s$i.fme" "$T/docs.fmc" || echo "shard $i failed"; done >"$T/sh.err"
[ ! -s "$T/sh.err" ]; ok "three shards written"
for i in 0 1 2; do $E --list --full "$T/s$i.fme"; done | python3 -c '
import json, sys
rows = sorted((json.loads(l) for l in sys.stdin), key=lambda r: r["id"])
for r in rows:
    print(json.dumps(r, separators=(",", ":")))' >"$T/merged.jsonl"
python3 - "$T/merged.jsonl" "$T/docs.jsonl" <<'PY'; ok "the shards' rows, merged by id, are the whole file's rows"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert a == b, (len(a), len(b))
PY
$E --list "$T/s1.fme" | python3 -c '
import json, sys
ids = [json.loads(l)["id"] for l in sys.stdin]
assert ids == list(range(1, ids[-1] + 1, 3)), ids'; ok "shard 1/3 holds ids 1, 4, 7 ..."
$E --shard 7/9 -o "$T/s7.fme" /dev/null 2>/dev/null; [ $? -eq 3 ]; ok "a shard of an empty input is bad data (no chunk file)"

# --- the random BERT against PyTorch ------------------------------------------
if "$FM_BUILD/tests/test_bert" --write-gguf "$T/rb.gguf" 2>"$T/rb.err"; then
	ok "random BERT regenerated from its seed"
	[ "$(wc -l <"$T/rb.gguf.txt")" -eq 8 ]; ok "the fixture's texts"
	for p in mean cls; do
		$E --queries -m "$T/rb.gguf" --pooling $p <"$T/rb.gguf.txt" | $E --list --full >"$T/rb-$p.jsonl"
		python3 - "$T/rb-$p.jsonl" "$FM_TOP/tests/fixtures/bert-random-ref.txt" $p <<'PY'
import json, math, sys
rows = [json.loads(l)["vec"] for l in open(sys.argv[1])]
ref = [l.split("\t") for l in open(sys.argv[2]) if l.startswith(sys.argv[3] + "\t")]
assert len(rows) == len(ref) == 8, (len(rows), len(ref))
for i, (v, r) in enumerate(zip(rows, ref)):
    if r[1].split() == ["101", "102"]:
        assert not any(v), "an empty text has the zero vector"
        continue
    w = [float(x) for x in r[2].split()]
    c = sum(a * b for a, b in zip(v, w)) / math.sqrt(sum(a * a for a in v) * sum(b * b for b in w))
    assert c >= 0.9999, (i, c)
PY
		ok "fm-embed --queries --pooling $p: cosine >= 0.9999 with PyTorch for every text"
	done
	yes 'lighthouse' | head -n 700 | tr '\n' ' ' >"$T/long"; echo >>"$T/long"
	$E --queries -m "$T/rb.gguf" -o "$T/lt.fme" "$T/long" 2>"$T/lt.err"
	[ $? -eq 0 ] && [ "$(wc -l <"$T/lt.err")" -eq 1 ] && grep -q "1 chunk longer than 510 tokens truncated" "$T/lt.err"
	ok "an over-long text: truncated, counted in one warning"
	$E --queries -m "$T/rb.gguf" --long split -o "$T/ls.fme" "$T/long" 2>"$T/ls.err"
	[ $? -eq 0 ] && [ ! -s "$T/ls.err" ] && ! cmp -s "$T/lt.fme" "$T/ls.fme"; ok "--long split: no warning, another vector"
	# --device: auto takes the CPU when no GPU works, and says so with -v.
	$E --queries -m "$T/rb.gguf" --device cpu -o "$T/dc.fme" "$T/rb.gguf.txt" &&
		$E --queries -m "$T/rb.gguf" -v -o "$T/da.fme" "$T/rb.gguf.txt" 2>"$T/da.err"
	ok "bert on --device cpu and auto"
	if grep -q "device cuda" "$T/da.err"; then
		ok "# SKIP auto without a GPU: this machine has one"
	else
		grep -q "device cpu" "$T/da.err" && cmp -s "$T/dc.fme" "$T/da.fme"
		ok "auto without a usable GPU: the CPU, the same file as --device cpu"
		expect_fail 5 "cuda: \(no CUDA device found\|this build has no CUDA\)" "bert on --device cuda without a GPU: status 5" -- $E -m "$T/rb.gguf" --device cuda --queries -o "$T/x.fme" "$T/rb.gguf.txt"
	fi
	# Batches of another size change the order of sums, not the vectors beyond rounding.
	FM_EMBED_BATCH_TOKENS=256 $E --queries -m "$T/rb.gguf" --device cpu -o "$T/db.fme" "$T/rb.gguf.txt" &&
		$E --list --full "$T/dc.fme" >"$T/dc.jsonl" && $E --list --full "$T/db.fme" >"$T/db.jsonl" &&
		python3 - "$T/dc.jsonl" "$T/db.jsonl" <<'PY'
import json, sys
a = [json.loads(l)["vec"] for l in open(sys.argv[1])]
b = [json.loads(l)["vec"] for l in open(sys.argv[2])]
assert len(a) == len(b) == 8
for u, v in zip(a, b):
    assert max(abs(x - y) for x, y in zip(u, v)) < 1e-5
PY
	ok "FM_EMBED_BATCH_TOKENS=256: the same vectors within 1e-5"
	FM_EMBED_BATCH_TOKENS=12 $E --queries -m "$T/rb.gguf" --device cpu -o "$T/db.fme" "$T/rb.gguf.txt" 2>"$T/db.err"
	grep -q "FM_EMBED_BATCH_TOKENS: '12' ignored" "$T/db.err"; ok "FM_EMBED_BATCH_TOKENS out of range: a warning"
	r1=$(rss $E -m "$T/rb.gguf" -o /dev/null "$T/m1.fmc")
	r10=$(rss $E -m "$T/rb.gguf" -o /dev/null "$T/m10.fmc")
	[ "$r10" -lt $((r1 + 8192)) ]; ok "bert: peak memory for 10x the chunks ($r10 KiB) is that of 1x ($r1 KiB), within 8 MiB"
	# scripts/bert-to-gguf.py on the same model as a Hugging Face directory.
	if python3 -c 'import numpy' 2>/dev/null; then
		python3 "$FM_TOP/tests/cli/gguf-to-hf.py" "$T/rb.gguf" "$T/hf" &&
			python3 "$FM_TOP/scripts/bert-to-gguf.py" --name fm-random-bert "$T/hf" "$T/conv.gguf" &&
			$E --queries -m "$T/rb.gguf" -o "$T/a.fme" "$T/rb.gguf.txt" &&
			$E --queries -m "$T/conv.gguf" -o "$T/b.fme" "$T/rb.gguf.txt" && cmp -s "$T/a.fme" "$T/b.fme"
		ok "bert-to-gguf.py: the model through a Hugging Face directory and back gives the same file"
		rm -rf "$T/hf" "$T/conv.gguf"
	else
		ok "# SKIP bert-to-gguf.py round trip: no NumPy"
	fi
	$C -t "$BGE" -n 32 "$DOCS"/*.txt | $E -m "$T/rb.gguf" --dtype f16 | $E --list >"$T/rbd.jsonl"
	[ "$(wc -l <"$T/rbd.jsonl")" -eq "$nchunks" ]; ok "fm-chunk | fm-embed -m | fm-embed --list"
else
	sed 's/^/# /' "$T/rb.err"; false; ok "random BERT regenerated from its seed"
fi

# --- bad input ------------------------------------------------------------------
expect_fail 5 "cuda:99: \(no CUDA device\|this build has no CUDA\)" "--device cuda:99: status 5" -- $E --device cuda:99 -o "$T/x.fme" "$T/docs.fmc"
if nvidia-smi -L >/dev/null 2>&1; then
	ok "# SKIP --device cuda without a GPU: this machine has one"
else
	expect_fail 5 "cuda: \(no CUDA device found\|this build has no CUDA\)" "--device cuda without a GPU: status 5" -- $E --device cuda -o "$T/x.fme" "$T/docs.fmc"
fi
expect_fail 3 "architecture 'llama' is not supported as an encoder" "a llama model as encoder: status 3" -- $E -m "$M/stories260K.gguf" -o "$T/x.fme" "$T/docs.fmc"
expect_fail 4 "nonexistent.gguf: " "a missing model: status 4" -- $E -m "$T/nonexistent.gguf" -o "$T/x.fme" "$T/docs.fmc"
expect_fail 4 "nonexistent: cannot open" "a missing input: status 4" -- $E -o "$T/x.fme" "$T/nonexistent"
expect_fail 3 "empty input, not a chunk file" "empty input: status 3" -- $E -o "$T/x.fme" /dev/null
expect_fail 3 "not a chunk file (bad magic)" "an embedding file as input: status 3" -- $E -o "$T/x.fme" "$T/docs.fme"
size=$(wc -c <"$T/docs.fmc")
head -c $((size - 10)) "$T/docs.fmc" >"$T/trunc.fmc"
echo old >"$T/keep.fme"
expect_fail 3 "trunc.fmc: truncated at record" "a truncated chunk file: status 3" -- $E -o "$T/keep.fme" "$T/trunc.fmc"
[ "$(cat "$T/keep.fme")" = old ] && [ -z "$(ls "$T" | grep tmp)" ]; ok "the old output is untouched, no temporary file left"
python3 -c "import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[len(b) // 2] ^= 0x20; open(sys.argv[2], 'wb').write(b)" "$T/docs.fmc" "$T/flip.fmc"
expect_fail 3 "flip.fmc: .* at record" "a damaged chunk file: status 3" -- $E -o "$T/x.fme" "$T/flip.fmc"
cat "$T/trunc.fmc" | $E >"$T/pipe.fme" 2>"$T/pipe.err"; [ $? -eq 3 ] && grep -q "(stdin): truncated" "$T/pipe.err"
ok "a truncated chunk file on stdin: status 3"
[ ! -e "$T/x.fme" ]; ok "no output file after any of these"
: >"$T/empty.txt"
$C -t "$BGE" -o "$T/nochunks.fmc" "$T/empty.txt" 2>/dev/null
expect_fail 1 "no chunks" "a chunk file with no chunks: status 1" -- $E -o "$T/none.fme" "$T/nochunks.fmc"
$E --list "$T/none.fme" >"$T/none.jsonl" && [ ! -s "$T/none.jsonl" ]; ok "... and a valid, empty embedding file"
printf 'good line\nbad \377 line\n' >"$T/badq"
expect_fail 3 "badq: line 2: invalid UTF-8 at byte 5" "invalid UTF-8 in a query: status 3, line named" -- $E --queries -o "$T/bq.fme" "$T/badq"
[ ! -e "$T/bq.fme" ]; ok "no output file after invalid UTF-8"
printf 'caf\303\251\r\n\n' | $E --queries | $E --list >"$T/crlf.jsonl"; [ "$(wc -l <"$T/crlf.jsonl")" -eq 2 ]
ok "CRLF lines and an empty line are queries"
expect_fail 4 "/dev/full: " "a full disk: status 4" -- $E -o /dev/full "$T/docs.fmc"
expect_fail 4 "is a directory" "output to a directory: status 4" -- $E -o "$T" "$T/docs.fmc"
cp "$T/docs.fme" "$T/bad.fme"; printf 'x' >>"$T/bad.fme"
expect_fail 3 "trailing data" "--list of a damaged embedding file: status 3" -- $E --list "$T/bad.fme"
done_testing
