#!/usr/bin/env python3
"""gen_embedfile_corpus.py - writes the seed corpus of the embedding file fuzzer.

An encoder of its own, written from fm-formats(5) and sharing no code with
common/embedfile.c.  valid-* files must be accepted to their end, bad-*
files refused; every file stays under 4 KiB.

usage: gen_embedfile_corpus.py [DIR]   (default tests/fuzz/corpus/embedfile)
"""
import math
import os
import struct
import sys

from fmformat import crc32c, fnv1a64, record


def header(version=1, dim=4, dtype=0, pooling=1, source=0, si=0, sn=1,
           enc_fp=0x1122334455667788, tok_fp=0x0123456789ABCDEF, name=b"tiny-bert"):
    body = struct.pack("<IHHIIIQQ", dim, dtype, pooling, source, si, sn, enc_fp, tok_fp)
    body += struct.pack("<H", len(name)) + name
    hlen = 16 + len(body) + 4
    h = b"\x89FME\r\n\x1a\n" + struct.pack("<II", version, hlen) + body
    return h + struct.pack("<I", crc32c(h))


def vec(i, dim):
    v = [math.sin(i * dim + k + 0.5) for k in range(dim)]
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def row(i, dim, dtype, values=None):
    v = values if values is not None else vec(i, dim)
    fmt = "<%d%s" % (dim, "f" if dtype == 0 else "e")
    return record(b"EROW", struct.pack("<Q", i) + struct.pack(fmt, *v))


def end(body, n_rows, n_source, source_hash=0xFEEDFACE, content_hash=None):
    if content_hash is None:
        content_hash = fnv1a64(body)
    return record(b"END ", struct.pack("<QQQQ", n_rows, n_source, source_hash, content_hash))


def file(dim=4, dtype=0, si=0, sn=1, n_source=5, ids=None, **kw):
    body = header(dim=dim, dtype=dtype, si=si, sn=sn, **kw)
    ids = list(range(si, n_source, sn)) if ids is None else ids
    for i in ids:
        body += row(i, dim, dtype)
    return body + end(body, len(ids), n_source)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/embedfile"
    os.makedirs(out, exist_ok=True)
    good = file()
    files = {
        "valid-f32.fme": good,
        "valid-f16.fme": file(dtype=1, dim=6),
        "valid-shard-1-of-3.fme": file(si=1, sn=3, n_source=8),
        "valid-empty-shard.fme": file(si=4, sn=5, n_source=3),
        "valid-queries.fme": file(source=1, pooling=2, tok_fp=0, name=b""),
        "bad-truncated.fme": good[:-7],
        "bad-flipped.fme": good[:60] + bytes([good[60] ^ 4]) + good[61:],
        "bad-version.fme": file(version=2),
        "bad-trailing.fme": good + b"\0",
        "bad-missing-row.fme": file(ids=[0, 1, 3, 4]),
        "bad-short-shard.fme": file(si=1, sn=2, n_source=6, ids=[1, 3]),
    }
    body = header()
    body += row(0, 4, 0, [0.5, 0.5, 0.5, 0.6])
    files["bad-not-unit.fme"] = body + end(body, 1, 1)
    body = header(dtype=1)
    body += record(b"EROW", struct.pack("<Q", 0) + struct.pack("<4H", 0x7C00, 0, 0, 0))
    files["bad-infinite.fme"] = body + end(body, 1, 1)
    body = header()
    files["bad-hash.fme"] = body + end(body, 0, 0, content_hash=1)
    for name, data in files.items():
        assert len(data) < 4096
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
