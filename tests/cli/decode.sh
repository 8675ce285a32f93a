# decode.sh - fm-decode from the command line: greedy output on stories260K,
# the three prompt sources, the trace, sampling determinism, the context
# limit, and every kind of bad input with its one-line message and status.
. "$FM_TOP/tests/cli-lib.sh"
D=$FM_BUILD/fm-decode
S=$M/stories260K.gguf

# Rewrites a copy of a GGUF: tensor NAME gets a new name, shape or type.
patch_gguf() { # in out name field value
	python3 - "$@" <<'PY'
import struct, sys
src, dst, name, field, value = sys.argv[1:6]
b = bytearray(open(src, 'rb').read())
o = 8
n_t, n_kv = struct.unpack_from('<QQ', b, o); o += 16
sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def skip(t):
    global o
    if t == 8:
        n, = struct.unpack_from('<Q', b, o); o += 8 + n
    elif t == 9:
        et, n = struct.unpack_from('<IQ', b, o); o += 12
        for _ in range(n): skip(et)
    else:
        o += sizes[t]
for _ in range(n_kv):
    n, = struct.unpack_from('<Q', b, o); o += 8 + n
    t, = struct.unpack_from('<I', b, o); o += 4
    skip(t)
for _ in range(n_t):
    n, = struct.unpack_from('<Q', b, o); o += 8
    tname = bytes(b[o:o + n]).decode(); name_at = o; o += n
    nd, = struct.unpack_from('<I', b, o); o += 4
    ne_at = o; o += 8 * nd
    type_at = o; o += 4 + 8
    if tname != name:
        continue
    if field == 'name':
        assert len(value) == n
        b[name_at:name_at + n] = value.encode()
    elif field == 'shape':
        dims = [int(x) for x in value.split(',')]
        assert len(dims) == nd
        struct.pack_into('<%dQ' % nd, b, ne_at, *dims)
    elif field == 'type':
        struct.pack_into('<I', b, type_at, int(value))
open(dst, 'wb').write(b)
PY
}

# --- options and help -------------------------------------------------------
$D --help >"$T/help" 2>&1; ok "--help exits 0"
synopsis=$(mandoc -Tascii "$FM_TOP/man/fm-decode.1" | col -bx |
	sed -n '/^SYNOPSIS/,/^DESCRIPTION/p' | sed '1d;$d' | tr -s ' \n\t' '   ' | sed 's/^ //;s/ $//')
usage=$(sed -n '/^usage:/,/^$/p' "$T/help" | sed 's/^usage: //;/^$/d' | tr -s ' \n' '  ' | sed 's/^ //;s/ $//')
[ -n "$usage" ] && [ "$synopsis" = "$usage" ]; ok "--help usage lines are the man page's SYNOPSIS"

# --- greedy decoding ----------------------------------------------------------
once='Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day,'
$D -m "$S" --temp 0 -n 30 -p 'Once upon a time' >"$T/greedy" 2>"$T/err"; ok "greedy run exits 0"
[ "$(cat "$T/greedy")" = "$once" ] && [ ! -s "$T/err" ]; ok "greedy continuation of 'Once upon a time' (the reference's tokens, see test_decode_ref)"
printf 'Once upon a time' | $D -m "$S" --temp 0 -n 30 >"$T/stdin"; cmp -s "$T/greedy" "$T/stdin"; ok "prompt from standard input"
printf 'Once upon a time' >"$T/prompt"; $D -m "$S" --temp 0 -n 30 -f "$T/prompt" >"$T/file"; cmp -s "$T/greedy" "$T/file"; ok "prompt from -f"
$D -m "$S" --temp 0 -n 30 -f - <"$T/prompt" >"$T/dash"; cmp -s "$T/greedy" "$T/dash"; ok "-f - reads standard input"
$D -m "$S" --temp 0 -n 12 </dev/null >"$T/empty"; ok "empty prompt is not an error"
[ "$(cat "$T/empty")" = 'Once upon a time, there was a little girl' ]; ok "empty prompt: generation from BOS alone, no leading space"
$D -m "$S" --temp 0 -n 0 -p 'Once upon a time' >"$T/n0"; [ "$(cat "$T/n0")" = 'Once upon a time' ]; ok "-n 0 prints the prompt and a newline"
$D -m "$S" --temp 0 -n 30 --kv-type f32 -p 'Once upon a time' >"$T/f32"; cmp -s "$T/greedy" "$T/f32"; ok "--kv-type f32: same greedy text"
$D -m "$S" --temp 0 -n 30 --device cpu -p 'Once upon a time' >"$T/cpu"; cmp -s "$T/greedy" "$T/cpu"; ok "--device cpu"
$D -m "$S" --temp 0 -n 2000 -p 'Once upon a time' >"$T/eos" 2>"$T/eos.err"; ok "a long greedy run exits 0"
[ "$(wc -c <"$T/eos")" -lt 8000 ] && [ ! -s "$T/eos.err" ]; ok "it stops at the end-of-sequence token, not at -n"

# --- trace --------------------------------------------------------------------
$D -m "$S" --temp 0 -n 8 -p 'Once upon a time' --trace "$T/trace.jsonl" >/dev/null; ok "--trace run exits 0"
python3 - "$T/trace.jsonl" <<'PY'; ok "trace: one line per position, next = following token, top 5 sorted, greedy next = top-1"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 5 + 8 - 1, len(rows)
assert [r['pos'] for r in rows] == list(range(len(rows)))
assert rows[0]['token'] == 1 and [r['token'] for r in rows[:5]] == [1, 403, 407, 261, 378]
for a, b in zip(rows, rows[1:]):
    assert a['next'] == b['token']
for r in rows:
    top = r['top']
    assert len(top) == 5 and all(len(t) == 2 for t in top)
    assert all(top[i][1] >= top[i + 1][1] for i in range(4))
for r in rows[4:]:
    assert r['next'] == r['top'][0][0]
PY
$D -m "$S" --temp 0 -n 0 -p 'Once upon a time' --trace "$T/n0.jsonl" >/dev/null
[ "$(wc -l <"$T/n0.jsonl")" -eq 5 ] && tail -n 1 "$T/n0.jsonl" | grep -q '"next":-1,'; ok "-n 0 traces the prompt, next -1 at its end"

# --- sampling -----------------------------------------------------------------
$D -m "$S" --temp 1 --seed 5 -n 40 -p Lily >"$T/s5a"
$D -m "$S" --temp 1 --seed 5 -n 40 -p Lily >"$T/s5b"
$D -m "$S" --temp 1 --seed 6 -n 40 -p Lily >"$T/s6"
cmp -s "$T/s5a" "$T/s5b"; ok "the same seed gives the same text"
! cmp -s "$T/s5a" "$T/s6"; ok "another seed gives another text"
$D -m "$S" --temp 0.9 --top-k 1 -n 30 -p 'Once upon a time' >"$T/k1"; cmp -s "$T/greedy" "$T/k1"; ok "--top-k 1 is greedy"
$D -m "$S" -v -n 5 -p Lily >/dev/null 2>"$T/v"
grep -q '^fm-decode: prefill: .* tokens/s$' "$T/v" && grep -q '^fm-decode: decode: .* tokens/s$' "$T/v" &&
	grep -q '^fm-decode: kv cache: f16, .* bytes resident' "$T/v"; ok "-v prints speeds and KV cache bytes"

# --- the context ----------------------------------------------------------------
$D -m "$S" --temp 0 --ctx 10 -n 50 -p 'Once upon a time' --trace "$T/ctx.jsonl" >"$T/ctx" 2>"$T/ctx.err"; ok "a full context ends the run with status 0"
grep -q 'warning: the context of 10 tokens is full after 6 new tokens' "$T/ctx.err" && [ "$(wc -l <"$T/ctx.jsonl")" -eq 10 ]; ok "with a warning, after using all 10 positions"
$D -m "$S" --temp 0 --ctx 3000 -n 3 -p Lily >/dev/null 2>"$T/long.err"; ok "a context beyond the trained length runs"
grep -q "warning: context of 3000 tokens exceeds the model's trained length of 2048" "$T/long.err"; ok "with a warning"
expect_fail 2 "^fm-decode: --ctx: the prompt has 5 tokens, more than the context of 3$" "a prompt longer than the context" -- $D -m "$S" --ctx 3 -p 'Once upon a time'

# --- bad options ----------------------------------------------------------------
expect_usage "^fm-decode: -m model.gguf is required$" "-m is required" -- $D -p x
expect_usage "unrecognized option" "unknown option is a usage error" -- $D -m "$S" --bogus
expect_usage "^usage: fm-decode" "an operand is a usage error" -- $D -m "$S" extra
expect_fail 2 "^fm-decode: -n: out of range$" "-n too large" -- $D -m "$S" -n 99999999999
expect_fail 2 "^fm-decode: -n: not a number$" "-n negative" -- $D -m "$S" -n -1
expect_fail 2 "^fm-decode: -n: not a number$" "-n junk" -- $D -m "$S" -n 12x
expect_fail 2 "^fm-decode: --ctx: out of range$" "--ctx 0" -- $D -m "$S" --ctx 0
expect_fail 2 "^fm-decode: --top-p: out of range$" "--top-p 0" -- $D -m "$S" --top-p 0
expect_fail 2 "^fm-decode: --temp: out of range$" "--temp -1" -- $D -m "$S" --temp -1
expect_fail 2 "^fm-decode: --kv-type: unknown type (f16 or f32)$" "--kv-type f8" -- $D -m "$S" --kv-type f8
expect_fail 2 "^fm-decode: -p: cannot be given with -f$" "-p with -f" -- $D -m "$S" -p x -f "$T/prompt"
expect_fail 2 "^fm-decode: tpu: unknown device (auto, cpu, cuda or cuda:N)$" "unknown device" -- $D -m "$S" --device tpu -p x
expect_fail 2 "^fm-decode: cuda:x: unknown device" "malformed cuda device" -- $D -m "$S" --device cuda:x -p x
$D -m "$S" --device cuda:0 -n 1 -p x >/dev/null 2>"$T/cuda.err"; st=$?
if [ $st -eq 0 ]; then
	true; ok "--device cuda:0 runs (this machine has a GPU)"
else
	[ $st -eq 5 ] && [ "$(wc -l <"$T/cuda.err")" -eq 1 ] && grep -q '^fm-decode: cuda:0: ' "$T/cuda.err"; ok "--device cuda:0 without a usable GPU: status 5, one line"
fi

# --- bad models -----------------------------------------------------------------
expect_fail 4 "^fm-decode: $T/none.gguf: " "missing model file" -- $D -m "$T/none.gguf" -p x
head -c 600000 "$S" >"$T/trunc.gguf"
expect_fail 3 "^fm-decode: $T/trunc.gguf: " "truncated model" -- $D -m "$T/trunc.gguf" -p x
printf 'GGUF\003\000\000\000' >"$T/short.gguf"
expect_fail 3 "^fm-decode: $T/short.gguf: " "model cut inside its header" -- $D -m "$T/short.gguf" -p x
expect_fail 3 "^fm-decode: $M/ggml-vocab-bert-bge.gguf: architecture 'bert' is not supported, only 'llama'$" "wrong architecture" -- $D -m "$M/ggml-vocab-bert-bge.gguf" -p x
expect_fail 3 "^fm-decode: $M/ggml-vocab-llama-spm.gguf: missing tensor token_embd.weight$" "a vocabulary-only GGUF" -- $D -m "$M/ggml-vocab-llama-spm.gguf" -p x
patch_gguf "$S" "$T/noup.gguf" blk.2.ffn_up.weight name blk.2.ffn_xx.weight
expect_fail 3 "^fm-decode: $T/noup.gguf: missing tensor blk.2.ffn_up.weight$" "missing tensor" -- $D -m "$T/noup.gguf" -p x
patch_gguf "$S" "$T/shape.gguf" blk.0.attn_q.weight shape 32,128
expect_fail 3 "^fm-decode: $T/shape.gguf: tensor blk.0.attn_q.weight has shape \[32, 128, 1, 1\] where \[64, 64\] was expected$" "wrong shape" -- $D -m "$T/shape.gguf" -p x
patch_gguf "$S" "$T/q4.gguf" blk.1.attn_v.weight type 2
expect_fail 3 "^fm-decode: $T/q4.gguf: tensor blk.1.attn_v.weight has type q4_0; supported are f32, f16, bf16 and q8_0$" "unsupported tensor type" -- $D -m "$T/q4.gguf" -p x
expect_fail 4 "^fm-decode: $T/none.txt: cannot open: " "missing prompt file" -- $D -m "$S" -f "$T/none.txt"

# --- output ---------------------------------------------------------------------
if [ -w /dev/full ]; then
	expect_fail 4 "^fm-decode: (stdout): write error: No space left on device$" "a full disk is an error" -- sh -c "$D -m $S -n 5 -p Lily >/dev/full"
fi
expect_fail 4 "^fm-decode: $T/nodir/t.jsonl: " "trace in a missing directory" -- $D -m "$S" -n 2 -p Lily --trace "$T/nodir/t.jsonl"
( $D -m "$S" --temp 0 -n 500 -p 'Once upon a time' 2>"$T/pipe.err"; echo $? >"$T/pipe.st" ) | head -c 4 >/dev/null
[ "$(cat "$T/pipe.st")" -eq 141 ] && [ ! -s "$T/pipe.err" ]; ok "a closed pipe ends it quietly, as SIGPIPE"

done_testing
