# select.sh - fm-index and fm-select from the command line: building from
# a whole embedding file and from shards in any order, the index read back
# by a reader written here from fm-formats(5), selections against a
# brute-force reference over the same vectors, output forms, and every kind
# of bad input with its message and exit status.
. "$FM_TOP/tests/cli-lib.sh"
I=$FM_BUILD/fm-index
S=$FM_BUILD/fm-select
C=$FM_BUILD/fm-chunk
E=$FM_BUILD/fm-embed
DOCS=$FM_TOP/examples/docs

# --- options and help -------------------------------------------------------
for tool in fm-index fm-select; do
	"$FM_BUILD/$tool" --help >"$T/help" 2>&1; ok "$tool --help exits 0"
	synopsis=$(mandoc -Tascii "$FM_TOP/man/$tool.1" | col -bx |
		sed -n '/^SYNOPSIS/,/^DESCRIPTION/p' | sed '1d;$d' | tr -s ' \n' '  ' | sed 's/^ //;s/ $//')
	usage=$(sed -n '1,/^$/p' "$T/help" | sed 's/^usage: //;/^$/d' | tr -s ' \n' '  ' | sed 's/^ //;s/ $//')
	[ -n "$synopsis" ] && [ "$synopsis" = "$usage" ]; ok "$tool --help usage lines are the man page's SYNOPSIS"
done
expect_usage "unrecognized option" "fm-index: unknown option" -- $I --bogus
expect_usage "required" "fm-index: -c and -o required" -- $I x.fme
expect_usage "exclude" "fm-index: --list with --stats refused" -- $I --list --stats x.fmi
expect_usage "no index" "fm-select: an index is required" -- $S -q x
expect_usage "exclude each other" "fm-select: -q with --query-file refused" -- $S -q x --query-file y x.fmi
expect_usage "needs -c" "fm-select: --text without -c refused" -- $S --text -q x x.fmi
expect_fail 2 "-k: expected a whole number of at least 1, got '0'" "fm-select: -k 0 refused" -- $S -k 0 -q x x.fmi
expect_fail 2 "--budget: expected" "fm-select: --budget 0% refused" -- $S --budget 0% -q x x.fmi
expect_fail 2 "--budget: expected" "fm-select: --budget 120% refused" -- $S --budget 120% -q x x.fmi
expect_fail 2 "--threshold: expected a number" "fm-select: --threshold junk refused" -- $S --threshold 0.5x -q x x.fmi
expect_fail 2 "--device: expected" "fm-select: --device tpu refused" -- $S --device tpu -q x x.fmi
expect_fail 2 "needs --threshold" "fm-select: --page-score count without a threshold refused" -- $S --pages 2 --page-score count -q x x.fmi

# --- a chunk file and embedding files written here from fm-formats(5) ----------
$C -t "$M/stories260K.gguf" -n 16 --page-chunks 3 -o "$T/docs.fmc" "$DOCS"/*.txt; ok "chunk the bundled documents"
cat >"$T/fm.py" <<'PY'
import math, random, struct, sys

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

def fnv(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h

def rec(tag, p):
    r = tag + struct.pack('<I', len(p)) + p
    return r + struct.pack('<I', crc32c(r))

def chunkfile(path):
    """tok_fingerprint, n_chunks, content_hash: from the header and the END record."""
    c = open(path, 'rb').read()
    n_chunks, chash = struct.unpack_from('<QQ', c, len(c) - 32 + 12)
    return struct.unpack_from('<Q', c, 16)[0], n_chunks, chash

def vectors(n, dim, seed):
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        v = [rnd.gauss(0, 1) for _ in range(dim)]
        s = math.sqrt(sum(x * x for x in v))
        out.append([x / s for x in v])
    return out

def embedfile(out, chunkpath, dim=16, dtype=0, si=0, sn=1, source=0, enc=0x5E1EC7, seed=1, name=b'test-enc', n=None):
    tok, n_chunks, chash = chunkfile(chunkpath)
    if source == 1:
        tok, n_chunks, chash = 0, n, 0x51
    body = struct.pack('<IHHIIIQQ', dim, dtype, 0, source, si, sn, enc, tok) + struct.pack('<H', len(name)) + name
    h = b'\x89FME\r\n\x1a\n' + struct.pack('<II', 1, 16 + len(body) + 4) + body
    f = h + struct.pack('<I', crc32c(h))
    vs = vectors(n_chunks, dim, seed)
    rows = 0
    for i in range(si, n_chunks, sn):
        f += rec(b'EROW', struct.pack('<Q', i) + struct.pack('<%d%s' % (dim, 'fe'[dtype]), *vs[i]))
        rows += 1
    f += rec(b'END ', struct.pack('<QQQQ', rows, n_chunks, chash, fnv(f)))
    open(out, 'wb').write(f)

def index(path):
    """An index file read from fm-formats(5) alone: header, sections, pages."""
    b = open(path, 'rb').read()
    assert b[:8] == b'\x89FMI\r\n\x1a\n' and struct.unpack_from('<II', b, 8) == (1, 512)
    assert struct.unpack_from('<I', b, 508)[0] == crc32c(b[:508])
    dim, dtype, pooling, flags, pc, nc, npg, ntok, ndoc, nsh = struct.unpack_from('<IHHIIQQQII', b, 16)
    assert struct.unpack_from('<Q', b, 88)[0] == len(b)
    secs = {}
    end = 512
    for s in range(4):
        tag, crc, off, size = struct.unpack_from('<4sIQQ', b, 384 + 24 * s)
        assert off == (end + 63) // 64 * 64 and crc32c(b[off:off + size]) == crc
        secs[tag] = b[off:off + size]
        end = off + size
    assert end == len(b)
    vec = [list(struct.unpack_from('<%d%s' % (dim, 'fe'[dtype]), secs[b'VECS'], i * dim * (4, 2)[dtype])) for i in range(nc)]
    pages = [struct.unpack_from('<QIIIIQ', secs[b'PAGE'], 32 * g) for g in range(npg)]
    toks = list(struct.unpack_from('<%dI' % nc, secs[b'TOKS']))
    sums = [list(struct.unpack_from('<%df' % dim, secs[b'PSUM'], 4 * dim * g)) for g in range(npg)]
    return dict(dim=dim, dtype=dtype, pc=pc, n=nc, ndoc=ndoc, ntok=ntok, vec=vec, pages=pages, toks=toks, sums=sums)

def ranked(ix, q):
    s = [sum(a * b for a, b in zip(v, q)) for v in ix['vec']]
    return s, sorted(range(len(s)), key=lambda i: (-s[i], i))
PY
py() { PYTHONPATH=$T python3 -c "import fm; $1"; }
py "fm.embedfile('$T/whole.fme', '$T/docs.fmc')"
for i in 0 1 2; do py "fm.embedfile('$T/s$i.fme', '$T/docs.fmc', si=$i, sn=3)"; done
py "fm.embedfile('$T/q.fme', '$T/docs.fmc', source=1, n=5, seed=99)"
ok "embedding files: whole, three shards, five queries"

# --- building ---------------------------------------------------------------
$I -c "$T/docs.fmc" -o "$T/whole.fmi" "$T/whole.fme"; ok "index a whole embedding file"
$I -c "$T/docs.fmc" -o "$T/s012.fmi" "$T/s0.fme" "$T/s1.fme" "$T/s2.fme"; ok "index three shards"
$I -c "$T/docs.fmc" -o "$T/s201.fmi" "$T/s2.fme" "$T/s0.fme" "$T/s1.fme"
cmp -s "$T/s012.fmi" "$T/s201.fmi"; ok "shards in another order: the same index, byte for byte"
[ "$($I --list "$T/whole.fmi" | md5sum)" = "$($I --list "$T/s012.fmi" | md5sum)" ]; ok "shards and the whole file: the same chunks"
$C --list "$T/docs.fmc" >"$T/docs.jsonl"
$I --list "$T/whole.fmi" >"$T/list.jsonl"
$I --stats "$T/whole.fmi" >"$T/stats.json"
python3 - "$T" <<'PY'; ok "the index read from fm-formats(5): vectors, pages, tokens, sums and --list match the chunk file"
import json, sys
sys.path.insert(0, sys.argv[1])
import fm
T = sys.argv[1]
ix = fm.index(T + '/whole.fmi')
ch = [json.loads(l) for l in open(T + '/docs.jsonl')]
ls = [json.loads(l) for l in open(T + '/list.jsonl')]
st = json.loads(open(T + '/stats.json').read())
_, n, _ = fm.chunkfile(T + '/docs.fmc')
assert ix['n'] == n == len(ch) == len(ls) == st['chunks']
vs = fm.vectors(n, 16, 1)
assert all(abs(a - b) < 1e-6 for v, w in zip(ix['vec'], vs) for a, b in zip(v, w))
assert ix['toks'] == [c['n_tokens'] for c in ch] and ix['ntok'] == sum(ix['toks']) == st['tokens']
for c, l in zip(ch, ls):
    assert (l['id'], l['doc'], l['chunk'], l['page'], l['n_tokens']) == (c['id'], c['doc_index'], c['chunk'], c['page'], c['n_tokens'])
pages = sorted(set((c['doc_index'], c['page']) for c in ch))
assert len(pages) == len(ix['pages']) == st['pages']
for g, (first, cnt, doc, page, zero, ntok) in enumerate(ix['pages']):
    mine = [c for c in ch if (c['doc_index'], c['page']) == (doc, page)]
    assert first == mine[0]['id'] and cnt == len(mine) and ntok == sum(c['n_tokens'] for c in mine)
    for j in range(16):
        assert abs(ix['sums'][g][j] - sum(ix['vec'][c['id']][j] for c in mine)) < 1e-5
assert st['dim'] == 16 and st['dtype'] == 'f32' and st['documents'] == 3 and st['encoder'] == 'test-enc'
PY
$I -c "$T/docs.fmc" -o "$T/h.fmi" --dtype f16 "$T/whole.fme" && $I --verify "$T/h.fmi" &&
	[ "$($I --stats "$T/h.fmi" | sed 's/.*"dtype":"\([^"]*\)".*/\1/')" = f16 ]; ok "--dtype f16: stored as half floats, verifies"
$I --verify -v "$T/whole.fmi" "$T/s012.fmi" 2>"$T/v.err" && [ "$(grep -c ': ok' "$T/v.err")" -eq 2 ]; ok "--verify -v: ok for each"
cat "$T/whole.fme" | $I -c "$T/docs.fmc" -o "$T/stdin.fmi" - && cmp -s "$T/stdin.fmi" "$T/whole.fmi"; ok "embedding file from standard input"

# --- selection against a brute-force reference ---------------------------------
$S --query-file "$T/q.fme" -k 5 "$T/whole.fmi" >"$T/k5"; ok "-k 5 over five queries"
$S --query-file "$T/q.fme" -k 5 --order score --json "$T/whole.fmi" >"$T/k5.json"
$S --query-file "$T/q.fme" --threshold 0.4 "$T/whole.fmi" >"$T/th"; st=$?
$S --query-file "$T/q.fme" --pages 2 --sink 2 --recent 3 --json "$T/whole.fmi" >"$T/pg.json"
$S --query-file "$T/q.fme" --budget 10% --order score "$T/whole.fmi" >"$T/bud"
$S --query-file "$T/q.fme" -k 4 "$T/h.fmi" >"$T/f16"
python3 - "$T" $st <<'PY'; ok "top-k, threshold, pages, sink, recent, budget, f16 equal the reference; JSON fields right"
import json, math, sys
sys.path.insert(0, sys.argv[1])
import fm
T = sys.argv[1]
ix = fm.index(T + '/whole.fmi')
ix16 = fm.index(T + '/h.fmi')
n = ix['n']
qs = fm.vectors(5, 16, 99)
lines = lambda f: [l.rstrip('\n').split('\t') for l in open(T + '/' + f)]
k5 = lines('k5')
js = [json.loads(l) for l in open(T + '/k5.json')]
th = lines('th')
pg = [json.loads(l) for l in open(T + '/pg.json')]
bud = lines('bud')
f16 = lines('f16')
pages = ix['pages']
page_of = {}
for g, p in enumerate(pages):
    for i in range(p[0], p[0] + p[1]):
        page_of[i] = g
for q in range(5):
    s, order = fm.ranked(ix, qs[q])
    mine = [(int(i), float(v)) for qq, i, v in k5 if int(qq) == q]
    assert [i for i, _ in mine] == sorted(order[:5]), (q, mine)
    assert all(abs(v - s[i]) < 1e-5 for i, v in mine)
    j = [o for o in js if o['query'] == q]
    assert [o['id'] for o in j] == order[:5] and all(o['reason'] == 'topk' for o in j)
    for o in j:
        p = pages[page_of[o['id']]]
        assert (o['doc'], o['page'], o['chunk']) == (p[2], p[3], p[3] * ix['pc'] + o['id'] - p[0])
    want = [i for i in range(n) if s[i] >= 0.4]
    assert [int(i) for qq, i, v in th if int(qq) == q] == want
    # Two densest pages by score sum, sink 2, recent 3.
    ps = [sum(s[i] for i in range(p[0], p[0] + p[1])) for p in pages]
    best = sorted(range(len(pages)), key=lambda g: (-ps[g], g))[:2]
    keep = {i for g in best for i in range(pages[g][0], pages[g][0] + pages[g][1])} | {0, 1, n - 3, n - 2, n - 1}
    got = [o for o in pg if o['query'] == q]
    assert [o['id'] for o in got] == sorted(keep), (q, [o['id'] for o in got], sorted(keep))
    for o in got:
        assert o['reason'] == ('page' if page_of[o['id']] in best else 'sink' if o['id'] < 2 else 'recent')
    # 10% of the tokens, by score, stopping at the first that does not fit.
    budget = ix['ntok'] * 10 // 100
    used, want = 0, []
    for i in order:
        if used + ix['toks'][i] > budget:
            break
        used += ix['toks'][i]
        want.append(i)
    assert [int(i) for qq, i, v in bud if int(qq) == q] == want
    _, order16 = fm.ranked(ix16, qs[q])
    assert [int(i) for qq, i, v in f16 if int(qq) == q] == sorted(order16[:4])
assert int(sys.argv[2]) == (0 if all(any(int(qq) == q for qq, _, _ in th) for q in range(5)) else 1)
PY
$S --query-file "$T/q.fme" -k 5 "$T/s012.fmi" | cmp -s - "$T/k5"; ok "the index from shards selects the same"
$S --query-file "$T/q.fme" -k 3 --text -c "$T/docs.fmc" "$T/whole.fmi" >"$T/text"
$S --query-file "$T/q.fme" -k 3 --text -c "$T/docs.fmc" --json "$T/whole.fmi" >"$T/text.json"
python3 - "$T" <<'PY'; ok "--text: each chunk's text from the chunk file, escaped to one line; in JSON as a string"
import json, sys
T = sys.argv[1]
ch = {c['id']: c['text'] for c in map(json.loads, open(T + '/docs.jsonl'))}
esc = lambda t: t.replace('\\', '\\\\').replace('\t', '\\t').replace('\n', '\\n').replace('\r', '\\r')
rows = [l.rstrip('\n').split('\t') for l in open(T + '/text')]
assert len(rows) == 15 and all(len(r) == 4 and r[3] == esc(ch[int(r[1])]) for r in rows)
js = [json.loads(l) for l in open(T + '/text.json')]
assert [o['text'] for o in js] == [ch[int(r[1])] for r in rows]
PY
$S --query-file "$T/q.fme" --threshold 0.99 "$T/whole.fmi" >"$T/none" 2>"$T/none.err"
[ $? -eq 1 ] && [ ! -s "$T/none" ] && [ ! -s "$T/none.err" ]; ok "a threshold above every score: no lines, status 1"
$S -v --query-file "$T/q.fme" "$T/whole.fmi" 2>"$T/verbose" >"$T/k8" && grep -q " on \(cpu\|cuda\)" "$T/verbose" &&
	[ "$(wc -l <"$T/k8")" -eq 40 ]; ok "no policy: -k 8; -v names the device"

# --- bad input ----------------------------------------------------------------
py "fm.embedfile('$T/d8.fme', '$T/docs.fmc', dim=8)"
py "fm.embedfile('$T/enc2.fme', '$T/docs.fmc', si=1, sn=3, enc=7, name=b'other')"
py "fm.embedfile('$T/s1of2.fme', '$T/docs.fmc', si=1, sn=2)"
py "fm.embedfile('$T/q8.fme', '$T/docs.fmc', source=1, n=2, dim=8)"
py "fm.embedfile('$T/qenc.fme', '$T/docs.fmc', source=1, n=2, enc=7)"
$C -t "$M/stories260K.gguf" -n 16 -o "$T/other.fmc" "$DOCS/garden.txt"
py "fm.embedfile('$T/s1other.fme', '$T/other.fmc', si=1, sn=3)"
expect_fail 3 "s1.fme: shard 1/3 given twice (also .*s1.fme)" "a shard given twice: named" -- $I -c "$T/docs.fmc" -o "$T/x.fmi" "$T/s0.fme" "$T/s1.fme" "$T/s1.fme"
expect_fail 3 "s0.fme: shard 2/3 is missing" "a missing shard: named" -- $I -c "$T/docs.fmc" -o "$T/x.fmi" "$T/s0.fme" "$T/s1.fme"
expect_fail 3 "d8.fme: dimension 8, but .*s0.fme has 16" "another dimension: named" -- $I -c "$T/docs.fmc" -o "$T/x.fmi" "$T/s0.fme" "$T/d8.fme"
expect_fail 3 "enc2.fme: made by another encoder (other)" "another encoder: named" -- $I -c "$T/docs.fmc" -o "$T/x.fmi" "$T/s0.fme" "$T/enc2.fme" "$T/s2.fme"
expect_fail 3 "s1of2.fme: shard 1/2, but .*s0.fme is one of 3" "a shard of another split: named" -- $I -c "$T/docs.fmc" -o "$T/x.fmi" "$T/s0.fme" "$T/s1of2.fme"
expect_fail 3 "s1other.fme: " "a shard of another chunk file: named" -- $I -c "$T/docs.fmc" -o "$T/x.fmi" "$T/s0.fme" "$T/s1other.fme" "$T/s2.fme"
expect_fail 3 "whole.fme: made from another chunk file than .*other.fmc" "another chunk file given with -c" -- $I -c "$T/other.fmc" -o "$T/x.fmi" "$T/whole.fme"
expect_fail 3 "q.fme: holds query vectors" "query vectors are not an index's" -- $I -c "$T/docs.fmc" -o "$T/x.fmi" "$T/q.fme"
[ ! -e "$T/x.fmi" ] && [ -z "$(ls "$T" | grep 'x.fmi')" ]; ok "no index, no temporary file after a refusal"
expect_fail 3 "q8.fme: dimension 8, but" "fm-select: query vectors of another dimension" -- $S --query-file "$T/q8.fme" "$T/whole.fmi"
expect_fail 3 "qenc.fme: made by another encoder" "fm-select: query vectors of another encoder" -- $S --query-file "$T/qenc.fme" "$T/whole.fmi"
expect_fail 3 "whole.fmi: built with encoder 'test-enc', not the built-in one" "fm-select: text queries for an index of another encoder" -- $S -q "lamp" "$T/whole.fmi"
expect_fail 2 "whole.fmi: -k 1000 is more than its" "fm-select: -k larger than the collection" -- $S -k 1000 --query-file "$T/q.fme" "$T/whole.fmi"
expect_fail 3 "other.fmc: not the chunk file of" "fm-select --text: another chunk file" -- $S --query-file "$T/q.fme" --text -c "$T/other.fmc" "$T/whole.fmi"
expect_fail 5 "--device: .*CUDA" "fm-select: --device cuda:99: status 5" -- $S --device cuda:99 --query-file "$T/q.fme" "$T/whole.fmi"
for p in "-k 5" "-k 3 --sink 2 --recent 2" "--threshold 0.3" "--pages 2"; do
	# shellcheck disable=SC2086
	$S $p --device cpu --query-file "$T/q.fme" "$T/h.fmi" | cut -f 1,2 >"$T/dcpu"
	# shellcheck disable=SC2086
	$S $p --device auto --query-file "$T/q.fme" "$T/h.fmi" | cut -f 1,2 >"$T/dauto"
	cmp -s "$T/dcpu" "$T/dauto"; ok "$p: --device auto (a GPU where there is one) selects what the CPU selects"
done
$C -t "$M/stories260K.gguf" -o "$T/empty.fmc" /dev/null 2>/dev/null
py "fm.embedfile('$T/empty.fme', '$T/empty.fmc')"
$I -c "$T/empty.fmc" -o "$T/empty.fmi" "$T/empty.fme" && [ "$(wc -c <"$T/empty.fmi")" -eq 512 ]; ok "an empty chunk file gives an empty index (512 bytes)"
expect_fail 1 "empty.fmi: the index holds no chunks" "fm-select: an empty index: status 1" -- $S --query-file "$T/q.fme" "$T/empty.fmi"
size=$(wc -c <"$T/whole.fmi")
head -c $((size - 5)) "$T/whole.fmi" >"$T/short.fmi"
expect_fail 3 "short.fmi: truncated" "fm-select: a truncated index: status 3" -- $S --query-file "$T/q.fme" "$T/short.fmi"
expect_fail 3 "short.fmi: truncated" "fm-index --verify: a truncated index: status 3" -- $I --verify "$T/short.fmi"
python3 -c "
import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[1000] ^= 0x10
open(sys.argv[2], 'wb').write(b)" "$T/whole.fmi" "$T/flip.fmi"
expect_fail 3 "flip.fmi: checksum mismatch in section VECS" "fm-index --verify: a changed vector byte: status 3" -- $I --verify "$T/flip.fmi"
python3 -c "
import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[20] ^= 0x01
open(sys.argv[2], 'wb').write(b)" "$T/whole.fmi" "$T/hflip.fmi"
expect_fail 3 "hflip.fmi: checksum mismatch in the header" "fm-select: a changed header byte: status 3" -- $S --query-file "$T/q.fme" "$T/hflip.fmi"
expect_fail 3 "docs.fmc: not an index file" "fm-select: a chunk file for an index: status 3" -- $S --query-file "$T/q.fme" "$T/docs.fmc"
expect_fail 4 "nonexistent.fmi: cannot open" "fm-select: a missing index: status 4" -- $S --query-file "$T/q.fme" "$T/nonexistent.fmi"
expect_fail 4 "cannot create" "fm-index: an unwritable output: status 4" -- $I -c "$T/docs.fmc" -o "$T/no/x.fmi" "$T/whole.fme"
F=$FM_BUILD/tests/libfault.so
FM_FAULT_FSYNC=1 LD_PRELOAD=$F ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0" \
	$I -c "$T/docs.fmc" -o "$T/fs.fmi" "$T/whole.fme" 2>"$T/fs.err"
[ $? -eq 4 ] && grep -q "fs.fmi: write error" "$T/fs.err" && [ "$(wc -l <"$T/fs.err")" -eq 1 ] &&
	[ -z "$(ls "$T" | grep 'fs.fmi')" ]; ok "fm-index: a failing fsync: status 4, no index, no temporary file"
expect_fail 4 "write error" "fm-select: a full disk on stdout: status 4" -- sh -c "$S --query-file $T/q.fme $T/whole.fmi >/dev/full"
py "fm.embedfile('$T/q300.fme', '$T/docs.fmc', source=1, n=300, seed=5)"
st=$( { $S -k 100 --query-file "$T/q300.fme" "$T/whole.fmi" 2>"$T/pipe.err"; echo $? >"$T/pipe.st"; } | head -n 1 >/dev/null; cat "$T/pipe.st")
[ "$st" -eq 141 ] && [ ! -s "$T/pipe.err" ]; ok "fm-select into a closed pipe: quiet, SIGPIPE status (got $st)"

# --- the pipeline with the built-in encoder ---------------------------------------
$E -o "$T/b.fme" "$T/docs.fmc" 2>/dev/null && $I -c "$T/docs.fmc" -o "$T/b.fmi" "$T/b.fme"; ok "fm-embed, then fm-index"
$S -k 1 --text -c "$T/docs.fmc" -q "lighthouse keeper lamp" "$T/b.fmi" | grep -qi "lamp\|lighthouse"; ok "-q text: the best chunk shares the query's words"
printf 'lighthouse lamp\n\nclockmaker apprentice\n' | $S -k 2 "$T/b.fmi" >"$T/batch"
[ "$(cut -f 1 "$T/batch" | sort -u | tr '\n' ' ')" = "0 2 " ]; ok "stdin lines: a batch, numbered by line, the blank line skipped"
$E --queries -o "$T/bq.fme" <<EOF2 2>/dev/null
lighthouse lamp
clockmaker apprentice
EOF2
printf 'lighthouse lamp\nclockmaker apprentice\n' | $S -k 3 "$T/b.fmi" >"$T/bt"
$S -k 3 --query-file "$T/bq.fme" "$T/b.fmi" | cmp -s - "$T/bt"; ok "fm-embed --queries vectors select what the same text lines select"

done_testing
