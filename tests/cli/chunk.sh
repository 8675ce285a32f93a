# chunk.sh - fm-chunk from the command line: the tokenizer test vectors,
# chunk files and their listing, archives and pipes, and every kind of bad
# input with its message and exit status.
. "$FM_TOP/tests/cli-lib.sh"
C=$FM_BUILD/fm-chunk
S=$M/stories260K.gguf
DOCS=$FM_TOP/examples/docs

# --- options and help -------------------------------------------------------
$C --help >"$T/help" 2>&1; ok "--help exits 0"
synopsis=$(mandoc -Tascii "$FM_TOP/man/fm-chunk.1" | col -bx |
	sed -n '/^SYNOPSIS/,/^DESCRIPTION/p' | sed '1d;$d' | tr -s ' \n' '  ' | sed 's/^ //;s/ $//')
usage=$(sed -n '1,/^$/p' "$T/help" | sed 's/^usage: //;/^$/d' | tr -s ' \n' '  ' | sed 's/^ //;s/ $//')
[ "$synopsis" = "$usage" ]; ok "--help usage lines are the man page's SYNOPSIS"
[ -n "$synopsis" ] && [ "$(printf '%s' "$synopsis" | grep -o 'fm-chunk -t' | wc -l)" -eq 2 ]; ok "SYNOPSIS parsed"
expect_usage "unrecognized option" "unknown option is a usage error" -- $C --bogus
expect_usage "model.gguf is required" "-t is required" -- $C "$DOCS/garden.txt"
expect_fail 2 "chunk-tokens: expected a whole number" "-n 0 refused" -- $C -t "$S" -n 0 -o "$T/x" "$DOCS/garden.txt"
expect_fail 2 "chunk-tokens: expected a whole number" "-n junk refused" -- $C -t "$S" -n 12x -o "$T/x" "$DOCS/garden.txt"
expect_fail 2 "overlap 8 must be smaller" "overlap >= chunk size refused" -- $C -t "$S" -n 8 --overlap 8 -o "$T/x" "$DOCS/garden.txt"

# --- llama.cpp's tokenizer test vectors, through the command line -----------
split_cases() { # file.inp dir: one file per case, named 0000, 0001, ...
	python3 - "$1" "$2" <<'PY'
import sys, os
data = open(sys.argv[1], 'rb').read()
cases = data.split(b'\n__ggml_vocab_test__\n')
if cases and cases[-1] == b'':
    cases.pop()
os.makedirs(sys.argv[2], exist_ok=True)
for i, c in enumerate(cases):
    open(os.path.join(sys.argv[2], '%04d' % i), 'wb').write(c)
PY
}
for v in llama-spm bert-bge; do
	split_cases "$M/ggml-vocab-$v.gguf.inp" "$T/$v"
	$C -t "$M/ggml-vocab-$v.gguf" --print-tokens "$T/$v"/* >"$T/$v.out" 2>"$T/$v.err"
	ok "--print-tokens over every $v case exits 0"
	cmp -s "$T/$v.out" "$M/ggml-vocab-$v.gguf.out"; ok "--print-tokens equals llama.cpp's $v vectors byte for byte"
	[ "$(wc -l <"$T/$v.out")" -eq "$(ls "$T/$v" | wc -l)" ]; ok "$v: one line per input"
done
printf 'Once upon a time' | $C -t "$S" --print-tokens >"$T/once"
[ "$(cat "$T/once")" = " 403 407 261 378" ]; ok "stories260K: 'Once upon a time' -> 403 407 261 378 (no BOS)"

# --- chunk files --------------------------------------------------------------
$C -t "$S" -n 16 --page-chunks 3 -o "$T/docs.fmc" "$DOCS"/*.txt; ok "chunk the bundled documents"
$C --list "$T/docs.fmc" >"$T/docs.jsonl"; ok "--list reads them back"
$C -t "$S" --print-tokens "$DOCS"/*.txt >"$T/docs.tokens"
python3 - "$T/docs.jsonl" "$T/docs.tokens" "$DOCS" <<'PY'; ok "chunks: text spans rebuild each document, tokens equal --print-tokens, pages, ids, sizes"
import json, sys, os
rows = [json.loads(l) for l in open(sys.argv[1])]
toks = [l.split() for l in open(sys.argv[2])]
docs = sorted(f for f in os.listdir(sys.argv[3]) if f.endswith('.txt'))
assert [r['id'] for r in rows] == list(range(len(rows)))
for d, name in enumerate(docs):
    mine = [r for r in rows if r['doc_index'] == d]
    assert mine and all(r['doc'].endswith(name) for r in mine), name
    src = open(os.path.join(sys.argv[3], name), 'rb').read().decode()
    assert ''.join(r['text'] for r in mine) == src, 'text spans of ' + name
    ids = [str(t) for r in mine for t in r['tokens']]
    assert ids == toks[d], 'tokens of ' + name
    for i, r in enumerate(mine):
        assert r['chunk'] == i and r['page'] == i // 3 and r['n_tokens'] == len(r['tokens'])
        assert r['n_tokens'] == 16 or i == len(mine) - 1
        assert src.encode()[r['offset']:r['offset'] + r['length']].decode() == r['text']
PY
$C -t "$S" -n 16 --overlap 5 -o "$T/ov.fmc" "$DOCS/garden.txt" && $C --list "$T/ov.fmc" >"$T/ov.jsonl"
python3 - "$T/ov.jsonl" <<'PY'; ok "overlap: each chunk starts with the previous chunk's last 5 tokens"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) > 3
for a, b in zip(rows, rows[1:]):
    assert b['tokens'][:5] == a['tokens'][-5:]
    assert b['offset'] <= a['offset'] + a['length']
PY
$C -t "$S" -n 16 --page-chunks 3 "$DOCS"/*.txt | cmp -s - "$T/docs.fmc"; ok "stdout output equals -o output (deterministic)"
cat "$DOCS/garden.txt" | $C -t "$S" | $C --list | grep -q '"doc":"-"'; ok "stdin in, stdout out, stdin listed: document named -"

# --- archives ---------------------------------------------------------------
tar -C "$FM_TOP/examples" -cf "$T/d.tar" docs
gzip -c "$T/d.tar" >"$T/d.tar.gz"
(cd "$FM_TOP/examples" && zip -q -r "$T/d.zip" docs 2>/dev/null) || python3 -c "
import zipfile, sys, os
z = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)
for f in sorted(os.listdir(sys.argv[2])): z.write(os.path.join(sys.argv[2], f), 'docs/' + f)" "$T/d.zip" "$DOCS"
gzip -c "$DOCS/garden.txt" >"$T/garden.txt.gz"
for a in d.tar d.tar.gz d.zip; do
	$C -t "$S" -o "$T/$a.fmc" "$T/$a" && $C --list "$T/$a.fmc" >"$T/$a.jsonl"
	[ "$(grep -c '"doc":"docs/garden.txt"' "$T/$a.jsonl")" -gt 0 ] &&
		[ "$(sed 's/.*"doc":"\([^"]*\)".*/\1/' "$T/$a.jsonl" | sort -u | wc -l)" -eq 3 ]
	ok "$a: three members, named by their paths"
done
$C -t "$S" <"$T/d.tar.gz" | $C --list | grep -q '"doc":"docs/lighthouse.txt"'; ok "tar.gz through a pipe"
$C -t "$S" "$T/garden.txt.gz" | $C --list >"$T/gz.jsonl" && $C -t "$S" "$DOCS/garden.txt" | $C --list >"$T/plain.jsonl"
[ "$(sed 's/"doc":"[^"]*"//' "$T/gz.jsonl")" = "$(sed 's/"doc":"[^"]*"//' "$T/plain.jsonl")" ]; ok "a lone .gz file is one document, same chunks as the plain file"

# --- streaming: output begins before input ends -------------------------------
mkfifo "$T/fifo"
$C -t "$S" <"$T/fifo" >"$T/stream.fmc" &
pid=$!
exec 3>"$T/fifo"
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do cat "$DOCS"/*.txt; done >&3
sleep 1
size=$(wc -c <"$T/stream.fmc")
exec 3>&-
wait $pid
[ "$size" -gt 4096 ]; ok "output flows while input is still open ($size bytes before EOF)"
$C --list "$T/stream.fmc" >/dev/null; ok "the streamed file is complete and valid"

# --- memory stays bounded by a segment, not the input ---------------------------
for i in $(seq 1 600); do cat "$DOCS"/*.txt; done >"$T/m1.txt"
for i in $(seq 1 10); do cat "$T/m1.txt"; done >"$T/m10.txt"
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n 1; }
r1=$(rss $C -t "$S" -o /dev/null "$T/m1.txt")
r10=$(rss $C -t "$S" -o /dev/null "$T/m10.txt")
[ "$r10" -lt $((r1 + 8192)) ]; ok "peak memory for 20 MB ($r10 KiB) is that of 2 MB ($r1 KiB), within 8 MiB"
rm -f "$T/m1.txt" "$T/m10.txt"

# --- bad input ----------------------------------------------------------------
expect_fail 1 "empty" "empty input: status 1, one line" -- $C -t "$S" -o "$T/e.fmc" /dev/null
expect_fail 4 "is a directory" "a directory: status 4" -- $C -t "$S" -o "$T/dir.fmc" "$T"
expect_fail 4 "No such file" "a missing file: status 4" -- $C -t "$S" -o "$T/m.fmc" "$T/nonexistent"
head -c 20000 /dev/urandom >"$T/garbage"; printf '\0\0\0' >>"$T/garbage"
printf 'x\0' | cat - "$T/garbage" >"$T/garbage2"
expect_fail 3 "garbage2: binary data" "binary garbage: skipped, status 3" -- $C -t "$S" -o "$T/g.fmc" "$T/garbage2"
python3 -c "import sys, random; random.seed(7); sys.stdout.buffer.write(bytes(random.choice([0xff, 0xc3, 0x80, 0xe2, 0x41, 0x20, 0x0a, 0xf0]) for _ in range(50000)))" >"$T/badutf8"
$C -t "$S" -o "$T/u.fmc" "$T/badutf8" && $C --list "$T/u.fmc" | python3 -c "import sys, json; [json.loads(l) for l in sys.stdin]"
ok "invalid UTF-8 is chunked, listed as valid JSON"
for v in bert-bge; do
	$C -t "$M/ggml-vocab-$v.gguf" -o "$T/u2.fmc" "$T/badutf8"; ok "invalid UTF-8 through the $v tokenizer"
done
$C -t "$S" -o "$T/mixed.fmc" "$DOCS/garden.txt" "$T/garbage2" "$DOCS/clockmaker.txt" 2>"$T/mixed.err"
[ $? -eq 3 ] && [ "$(wc -l <"$T/mixed.err")" -eq 1 ] && [ "$($C --list "$T/mixed.fmc" | sed 's/.*"doc_index":\([0-9]*\).*/\1/' | sort -u | wc -l)" -eq 2 ]
ok "a bad input among good ones: the good ones are chunked, status 3"

head -c 5000 "$S" >"$T/trunc.gguf"
expect_fail 3 "trunc.gguf: " "truncated GGUF: status 3" -- $C -t "$T/trunc.gguf" -o "$T/t.fmc" "$DOCS/garden.txt"
[ ! -e "$T/t.fmc" ] && [ -z "$(ls "$T" | grep 'tmp')" ]; ok "no output file after a failed model"
printf 'not a gguf at all, just text\n' >"$T/text.gguf"
expect_fail 3 "text.gguf: " "not a GGUF: status 3" -- $C -t "$T/text.gguf" -o "$T/t.fmc" "$DOCS/garden.txt"
python3 - "$T" <<'PY'
import struct, sys
def s(x): return struct.pack('<Q', len(x)) + x
def kv_str(k, v): return s(k) + struct.pack('<I', 8) + s(v)
def gguf(kvs):
    return b'GGUF' + struct.pack('<IQQ', 3, 0, len(kvs)) + b''.join(kvs)
open(sys.argv[1] + '/notok.gguf', 'wb').write(gguf([kv_str(b'general.architecture', b'llama')]))
open(sys.argv[1] + '/gpt2.gguf', 'wb').write(gguf([kv_str(b'general.architecture', b'gpt2'), kv_str(b'tokenizer.ggml.model', b'gpt2')]))
PY
expect_fail 3 "notok.gguf: .*tokenizer" "GGUF without a tokenizer: status 3" -- $C -t "$T/notok.gguf" -o "$T/t.fmc" "$DOCS/garden.txt"
expect_fail 3 "gpt2.gguf: .*gpt2" "unsupported tokenizer: status 3, named" -- $C -t "$T/gpt2.gguf" -o "$T/t.fmc" "$DOCS/garden.txt"
head -c 300 "$T/d.tar.gz" >"$T/broken.tar.gz"
$C -t "$S" -o "$T/b.fmc" "$T/broken.tar.gz" 2>"$T/b.err"; st=$?
[ $st -eq 3 ] && [ "$(wc -l <"$T/b.err")" -eq 1 ] && grep -q "broken.tar.gz\|docs/" "$T/b.err"; ok "damaged archive: status 3, one line"
dd if="$T/d.tar" of="$T/cut.tar" bs=1 count=3000 2>/dev/null
$C -t "$S" -o "$T/c.fmc" "$T/cut.tar" 2>"$T/c.err"; st=$?
[ $st -eq 3 ] && grep -q "cut.tar\|docs/" "$T/c.err"; ok "truncated tar: status 3"

# --- output failures ----------------------------------------------------------
expect_fail 4 "nonexistent/x.fmc: cannot create" "unwritable output: status 4" -- $C -t "$S" -o "$T/nonexistent/x.fmc" "$DOCS/garden.txt"
expect_fail 4 "/dev/full: write error" "full disk (-o /dev/full): status 4" -- $C -t "$S" -o /dev/full "$DOCS"/*.txt
expect_fail 4 "write error" "full disk on stdout: status 4" -- sh -c "$C -t $S $DOCS/*.txt >/dev/full"
expect_fail 4 "write error" "--print-tokens to a full disk: status 4" -- sh -c "$C -t $S --print-tokens $DOCS/*.txt >/dev/full"
echo keep >"$T/keep.fmc"
$C -t "$S" -o "$T/keep.fmc" "$DOCS/garden.txt" /dev/null "$T/nonexistent" 2>/dev/null
$C --list "$T/keep.fmc" >/dev/null; ok "output written despite bad inputs is complete"
for i in $(seq 1 300); do cat "$DOCS"/*.txt; done >"$T/big.txt"
st=$( { $C -t "$S" "$T/big.txt" 2>"$T/pipe.err"; echo $? >"$T/pipe.st"; } | head -c 100 >/dev/null; cat "$T/pipe.st")
[ "$st" -eq 141 ] && [ ! -s "$T/pipe.err" ]; ok "closed pipe: quiet, SIGPIPE status (got $st)"
$C -t "$S" -o "$T/big.fmc" "$T/big.txt"
st=$( { $C --list "$T/big.fmc" 2>"$T/pipe.err"; echo $? >"$T/pipe.st"; } | head -n 1 >/dev/null; cat "$T/pipe.st")
[ "$st" -eq 141 ] && [ ! -s "$T/pipe.err" ]; ok "--list into a closed pipe: quiet (got $st)"
# A signal mid-run leaves neither the target nor a temporary file.
mkfifo "$T/slow"
$C -t "$S" -o "$T/sig.fmc" "$T/slow" 2>/dev/null &
pid=$!
exec 4>"$T/slow"; cat "$DOCS"/*.txt >&4; sleep 0.5
kill -TERM $pid; wait $pid; exec 4>&-
[ ! -e "$T/sig.fmc" ] && [ -z "$(ls "$T" | grep 'sig.fmc')" ]; ok "killed mid-run: no output, no temporary file"

# --- failing system calls (tests/fault/fault.c, preloaded) -------------------------
F=$FM_BUILD/tests/libfault.so
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0"
FM_FAULT_READ=1000 LD_PRELOAD=$F $C -t "$S" -o "$T/rf.fmc" "$DOCS/garden.txt" 2>"$T/rf.err"
[ $? -eq 4 ] && grep -q "garden.txt: read error" "$T/rf.err" && [ "$(wc -l <"$T/rf.err")" -eq 1 ]
ok "a read error mid-document: status 4, one line"
$C --list "$T/rf.fmc" >"$T/rf.jsonl" && [ -s "$T/rf.jsonl" ]; ok "what was read before the error is a valid chunk file"
FM_FAULT_FSYNC=1 LD_PRELOAD=$F $C -t "$S" -o "$T/fs.fmc" "$DOCS/garden.txt" 2>"$T/fs.err"
[ $? -eq 4 ] && grep -q "fs.fmc: write error" "$T/fs.err" && [ ! -e "$T/fs.fmc" ] && [ -z "$(ls "$T" | grep 'fs.fmc')" ]
ok "a failing fsync: status 4, no output, no temporary file"

# --- damaged chunk files --------------------------------------------------------
size=$(wc -c <"$T/docs.fmc")
head -c $((size - 7)) "$T/docs.fmc" >"$T/short.fmc"
expect_fail 3 "short.fmc: .*truncated" "--list of a truncated chunk file: status 3" -- $C --list "$T/short.fmc"
python3 -c "
import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[len(b) // 2] ^= 0x10
open(sys.argv[2], 'wb').write(b)" "$T/docs.fmc" "$T/flip.fmc"
expect_fail 3 "flip.fmc: " "--list of a corrupted chunk file: status 3" -- $C --list "$T/flip.fmc"
expect_fail 3 "garden.txt: " "--list of a text file: status 3" -- $C --list "$DOCS/garden.txt"

# -o through a symbolic link writes the file it points to and leaves the link a link.
: >"$T/target.fmc"; ln -s target.fmc "$T/link.fmc"
$C -t "$S" -o "$T/link.fmc" "$DOCS/garden.txt" && [ -L "$T/link.fmc" ] && [ -s "$T/target.fmc" ] &&
	$C --list "$T/link.fmc" >/dev/null; ok "-o through a symbolic link: the link stays, its target is written"

done_testing
