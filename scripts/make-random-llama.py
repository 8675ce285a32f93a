#!/usr/bin/env python3
"""make-random-llama.py - writes a llama-architecture GGUF of any shape with
random weights, so that fm-decode can be timed at real sizes without
downloading a model.  The vocabulary (tokenizer.* metadata) is copied from a
GGUF that has one, by default the Llama 2 vocabulary in models/.

    scripts/make-random-llama.py -o 1b.gguf --dim 2048 --layers 16 \\
        --heads 32 --kv-heads 8 --ffn 8192 --type f16

Only the standard library is used.  Weights are drawn once into a 64 MiB
pool of valid encodings (random sign and mantissa, magnitudes between about
0.002 and 0.03, so activations stay finite through any depth) and tensors are
cut from it at random offsets: fast for billions of weights, and the same
file for the same seed.
"""
import argparse
import os
import random
import struct
import sys

GGUF_UINT32, GGUF_FLOAT32, GGUF_STRING = 4, 6, 8
TYPES = {"f32": (0, 4, 1), "f16": (1, 2, 1), "bf16": (30, 2, 1), "q8_0": (8, 34, 32)}
ALIGN = 32
POOL = 64 << 20


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv_u32(k, v):
    return gguf_str(k) + struct.pack("<II", GGUF_UINT32, v)


def kv_f32(k, v):
    return gguf_str(k) + struct.pack("<If", GGUF_FLOAT32, v)


def kv_str(k, v):
    return gguf_str(k) + struct.pack("<I", GGUF_STRING) + gguf_str(v)


def tokenizer_kvs(path):
    """The raw bytes of every tokenizer.* key-value pair of a GGUF, and its vocabulary size."""
    b = open(path, "rb").read()
    if b[:4] != b"GGUF":
        sys.exit("make-random-llama: %s: not a GGUF file" % path)
    o = 8
    n_t, n_kv = struct.unpack_from("<QQ", b, o)
    o += 16
    size = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    out, n_vocab = [], None

    def skip(t, o):
        if t == 8:
            n, = struct.unpack_from("<Q", b, o)
            return o + 8 + n
        if t == 9:
            et, n = struct.unpack_from("<IQ", b, o)
            o += 12
            if et in size:
                return o + n * size[et]
            for _ in range(n):
                o = skip(et, o)
            return o
        return o + size[t]

    for _ in range(n_kv):
        start = o
        n, = struct.unpack_from("<Q", b, o)
        key = b[o + 8:o + 8 + n].decode()
        o += 8 + n
        t, = struct.unpack_from("<I", b, o)
        o = skip(t, o + 4)
        if key.startswith("tokenizer."):
            out.append(b[start:o])
            if key == "tokenizer.ggml.tokens":
                n_vocab, = struct.unpack_from("<Q", b, start + 8 + n + 8)
    if n_vocab is None:
        sys.exit("make-random-llama: %s: no tokenizer.ggml.tokens" % path)
    return out, n_vocab


def make_pool(kind, rng):
    """POOL bytes of valid random encodings of type kind."""
    raw = bytearray(b"".join(rng.randbytes(1 << 20) for _ in range(POOL >> 20)))
    if kind == "f16":
        # high byte: sign, exponent 6..9 (2^-9 .. 2^-6 times 1.x), top mantissa bits
        table = bytes((v & 0x83) | ((6 + ((v >> 2) & 3)) << 2) for v in range(256))
        raw[1::2] = raw[1::2].translate(table)
    elif kind in ("bf16", "f32"):
        # top byte: sign and the high exponent bits (exponents 118..121)
        table = bytes((v & 0x80) | (59 + ((v >> 6) & 1)) for v in range(256))
        step = 2 if kind == "bf16" else 4
        raw[step - 1::step] = raw[step - 1::step].translate(table)
    elif kind == "q8_0":
        n = POOL // 34
        raw = raw[:n * 34]
        d = struct.pack("<e", 0.03 / 127)
        raw[0::34] = d[0:1] * n
        raw[1::34] = d[1:2] * n
    return bytes(raw)


def write_tensor(f, pool, nbytes, unit, rng):
    """nbytes of weights cut from the pool at random offsets that are multiples of unit."""
    while nbytes > 0:
        off = rng.randrange(0, (len(pool) - unit) // unit) * unit
        n = min(nbytes, len(pool) - off)
        f.write(pool[off:off + n])
        nbytes -= n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--ffn", type=int, default=8192)
    ap.add_argument("--ctx", type=int, default=4096, help="llama.context_length")
    ap.add_argument("--type", choices=sorted(TYPES), default="f16")
    ap.add_argument("--tied", action="store_true", help="no output.weight: the embedding is the classifier")
    ap.add_argument("--seed", type=int, default=1)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--vocab-from", default=os.path.join(here, "..", "models", "ggml-vocab-llama-spm.gguf"),
                    help="GGUF whose tokenizer is copied")
    a = ap.parse_args()
    if a.dim % a.heads or a.heads % a.kv_heads or (a.dim // a.heads) % 2:
        sys.exit("make-random-llama: heads must divide dim into even head sizes, kv-heads must divide heads")
    gtype, block_bytes, block = TYPES[a.type]
    if a.dim % block or a.ffn % block:
        sys.exit("make-random-llama: %s needs dim and ffn to be multiples of %d" % (a.type, block))
    tok, n_vocab = tokenizer_kvs(a.vocab_from)
    hd = a.dim // a.heads

    kvs = [kv_str("general.architecture", "llama"),
           kv_str("general.name", "random-llama-%dx%d" % (a.layers, a.dim)),
           kv_u32("llama.context_length", a.ctx),
           kv_u32("llama.embedding_length", a.dim),
           kv_u32("llama.block_count", a.layers),
           kv_u32("llama.feed_forward_length", a.ffn),
           kv_u32("llama.attention.head_count", a.heads),
           kv_u32("llama.attention.head_count_kv", a.kv_heads),
           kv_u32("llama.rope.dimension_count", hd),
           kv_f32("llama.rope.freq_base", 10000.0),
           kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)] + tok

    # (name, dims (ne0 = row length first), matrix?)
    tensors = [("token_embd.weight", [a.dim, n_vocab], True),
               ("output_norm.weight", [a.dim], False)]
    if not a.tied:
        tensors.append(("output.weight", [a.dim, n_vocab], True))
    for l in range(a.layers):
        p = "blk.%d." % l
        tensors += [(p + "attn_norm.weight", [a.dim], False),
                    (p + "attn_q.weight", [a.dim, a.dim], True),
                    (p + "attn_k.weight", [a.dim, hd * a.kv_heads], True),
                    (p + "attn_v.weight", [a.dim, hd * a.kv_heads], True),
                    (p + "attn_output.weight", [a.dim, a.dim], True),
                    (p + "ffn_norm.weight", [a.dim], False),
                    (p + "ffn_gate.weight", [a.dim, a.ffn], True),
                    (p + "ffn_up.weight", [a.dim, a.ffn], True),
                    (p + "ffn_down.weight", [a.ffn, a.dim], True)]

    def nbytes(dims, matrix):
        n = 1
        for d in dims:
            n *= d
        return n // block * block_bytes if matrix else 4 * n

    infos, off = [], 0
    for name, dims, matrix in tensors:
        infos.append(gguf_str(name) + struct.pack("<I", len(dims)) +
                     struct.pack("<%dQ" % len(dims), *dims) +
                     struct.pack("<IQ", gtype if matrix else 0, off))
        off += (nbytes(dims, matrix) + ALIGN - 1) // ALIGN * ALIGN

    rng = random.Random(a.seed)
    pool = make_pool(a.type, rng)
    tmp = a.output + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
        for kv in kvs:
            f.write(kv)
        for info in infos:
            f.write(info)
        f.write(b"\0" * (-f.tell() % ALIGN))
        for name, dims, matrix in tensors:
            n = nbytes(dims, matrix)
            if matrix:
                write_tensor(f, pool, n, block_bytes if block > 1 else 4 if a.type == "f32" else 2, rng)
            else:
                f.write(struct.pack("<f", 1.0) * (n // 4))
            f.write(b"\0" * (-n % ALIGN))
    os.replace(tmp, a.output)
    params = sum(d[0] * (d[1] if len(d) > 1 else 1) for _, d, _ in tensors)
    print("make-random-llama: %s: %d tensors, %.1fM parameters, %s, vocab %d" %
          (a.output, len(tensors), params / 1e6, a.type, n_vocab), file=sys.stderr)


if __name__ == "__main__":
    main()
