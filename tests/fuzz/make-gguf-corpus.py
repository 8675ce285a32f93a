#!/usr/bin/env python3
"""make-gguf-corpus.py - writes the seed corpus for fuzz_gguf into
tests/fuzz/corpus/gguf/: small valid GGUF files that cover every metadata
type, nested arrays, v2 and v3, custom alignment and the tensor types, and a
few hostile ones, each under 4 KiB.  Seeds that reach deep into the format
let the fuzzer mutate the interesting parts instead of rediscovering the
header.  Run from anywhere; the output is committed beside this script.
Written from the GGUF specification, independently of common/gguf.c.
"""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
          F32: "<f", BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q8_0, GGML_Q6_K, GGML_BF16 = 0, 1, 2, 8, 14, 30


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    """Encodes a value of type t; arrays are (elem_type, [items])."""
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(value(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


def gguf(kvs, tensors=(), version=3, align=32, n_kv=None, n_tensors=None, tail=b""):
    """kvs: [(key, type, value)]; tensors: [(name, dims, ggml_type, data bytes)]."""
    out = b"GGUF" + struct.pack("<IQQ", version,
                                len(tensors) if n_tensors is None else n_tensors,
                                len(kvs) if n_kv is None else n_kv)
    for k, t, v in kvs:
        out += gstr(k) + struct.pack("<I", t) + value(t, v)
    offsets, off = [], 0
    for _, _, _, data in tensors:
        offsets.append(off)
        off = (off + len(data) + align - 1) // align * align
    for (name, dims, t, _), o in zip(tensors, offsets):
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", t, o)
    if tensors:
        out += b"\0" * (-len(out) % align)
        base = len(out)
        for (_, _, _, data), o in zip(tensors, offsets):
            out += b"\0" * (base + o - len(out)) + data
    return out + tail


def f16(x):
    return struct.pack("<e", x)


def q8_block(d, qs):
    return f16(d) + struct.pack("<32b", *qs)


def seeds():
    every = [
        ("general.architecture", STR, "llama"),
        ("u8", U8, 200), ("i8", I8, -5), ("u16", U16, 60000), ("i16", I16, -300),
        ("u32", U32, 4000000000), ("i32", I32, -70000), ("f32", F32, 0.25),
        ("bool", BOOL, 1), ("u64", U64, 2**64 - 1), ("i64", I64, -2**63),
        ("f64", F64, -1e300), ("empty", STR, ""),
        ("a.u8", ARR, (U8, [1, 2, 255])), ("a.i64", ARR, (I64, [-1, 42])),
        ("a.f32", ARR, (F32, [0.5, -8.0])), ("a.bool", ARR, (BOOL, [0, 1])),
        ("a.str", ARR, (STR, ["a", "", "ccc"])), ("a.empty", ARR, (U32, [])),
        ("a.nest", ARR, (ARR, [(U32, [1, 2]), (STR, ["x"]), (I8, [])])),
    ]
    f32_rows = struct.pack("<6f", 1.5, -2.25, 0.0, 1e30, -1e-30, 3.0)
    f16_row = b"".join(f16(x) for x in (1.0, -2.0, 0.5, 2**-24))
    bf16_row = struct.pack("<3H", 0x3F80, 0xC040, 0x7F80)
    q8 = q8_block(0.5, range(-16, 16)) + q8_block(-2.0, range(0, 32))
    tensors = [
        ("t.f32", [3, 2], GGML_F32, f32_rows),
        ("t.f16", [4], GGML_F16, f16_row),
        ("t.bf16", [3, 1, 1], GGML_BF16, bf16_row),
        ("t.q8_0", [64, 1, 1, 1], GGML_Q8_0, q8),
    ]
    nested = (U8, [7])
    for _ in range(7):
        nested = (ARR, [nested])

    yield "valid-every-type", gguf(every)
    yield "valid-tensors-v3", gguf([("general.architecture", STR, "llama")], tensors)
    yield "valid-tensors-v2", gguf([("general.alignment", U32, 8)], tensors, version=2, align=8)
    yield "valid-align-64", gguf(every[:4] + [("general.alignment", U32, 64)], tensors[:2], align=64)
    yield "valid-align-1", gguf([("general.alignment", U32, 1)], tensors, align=1)
    yield "valid-nested-8", gguf([("deep", ARR, nested)])
    yield "valid-vocab", gguf([("tokenizer.ggml.model", STR, "llama"),
                               ("tokenizer.ggml.tokens", ARR, (STR, ["<unk>", "<s>", "</s>", "\u2581a"])),
                               ("tokenizer.ggml.scores", ARR, (F32, [0.0, 0.0, 0.0, -1.5])),
                               ("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3, 1]))])
    yield "valid-q4_0-q6_K", gguf([], [("q4", [32], GGML_Q4_0, bytes(18)),
                                       ("q6", [256, 2], GGML_Q6_K, bytes(420))])
    yield "valid-empty", gguf([])

    yield "bad-magic", b"GGML" + bytes(20)
    yield "bad-version-1", b"GGUF" + struct.pack("<III", 1, 0, 0)
    yield "bad-big-endian", b"GGUF" + struct.pack(">IQQ", 3, 0, 0)
    yield "bad-n-kv-huge", gguf([("a", U8, 1)], n_kv=2**63)
    yield "bad-string-length", gguf([], n_kv=1) + struct.pack("<Q", 2**64 - 3) + b"abcdefghijklm"
    yield "bad-array-count", gguf([("a", ARR, (U32, []))])[:-8] + struct.pack("<Q", 2**62)
    yield "bad-nested-9", gguf([("deep", ARR, (ARR, [nested]))])
    yield "bad-value-type", gguf([("x", U8, 0)])[:-5] + struct.pack("<IB", 13, 0)
    yield "bad-tensor-type", gguf([], [("w", [4], 99, bytes(16))])
    yield "bad-n-dims-5", gguf([], [("w", [1, 1, 1, 1, 4], GGML_F32, bytes(16))])
    yield "bad-dims-overflow", gguf([], [("w", [2**32, 2**32], GGML_F32, bytes(16))])
    yield "bad-q8-row", gguf([], [("w", [33], GGML_Q8_0, bytes(34))])
    yield "bad-alignment-3", gguf([("general.alignment", U32, 3)], [("w", [1], GGML_F32, bytes(4))])
    yield "bad-duplicate-key", gguf([("k", U8, 1), ("k", U8, 2)])
    yield "bad-duplicate-tensor", gguf([], [("w", [1], GGML_F32, bytes(4)), ("w", [1], GGML_F32, bytes(4))])
    yield "bad-truncated", gguf([("general.architecture", STR, "llama")], tensors)[:-7]


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")
    os.makedirs(out, exist_ok=True)
    for name, data in seeds():
        if len(data) >= 4096:
            sys.exit(f"make-gguf-corpus: {name}: {len(data)} bytes, over 4 KiB")
        with open(os.path.join(out, name + ".gguf"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
