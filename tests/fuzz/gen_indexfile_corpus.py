#!/usr/bin/env python3
"""gen_indexfile_corpus.py - writes the seed corpus of the index file fuzzer.

An encoder of its own, written from fm-formats(5) and sharing no code with
common/indexfile.c.  valid-* files must open and verify, bad-* files be
refused; every file stays under 4 KiB.

usage: gen_indexfile_corpus.py [DIR]   (default tests/fuzz/corpus/indexfile)
"""
import math
import os
import struct
import sys

from fmformat import crc32c


def rounded(x, fmt):
    """x as the file stores it: binary32 ('f') or binary16 ('e')."""
    return struct.unpack('<' + fmt, struct.pack('<' + fmt, x))[0]


def index(docs=((0, 5), (2, 2)), dim=4, dtype=0, page_chunks=2, n_docs=3, name=b'builtin-hash',
          version=1, mangle=None):
    """docs: (doc index, chunks) pairs; each chunk has 7 + id tokens."""
    vecs, pages, toks = [], [], []
    cid = 0
    for doc, nch in docs:
        for k in range(nch):
            v = [math.sin(cid * dim + j + 0.5) for j in range(dim)]
            s = math.sqrt(sum(x * x for x in v))
            v = [x / s for x in v]
            v = [rounded(x, 'fe'[dtype]) for x in v]
            vecs.append(v)
            toks.append(7 + cid)
            if k % page_chunks == 0:
                pages.append([cid, 0, doc, k // page_chunks, 0, 0, []])
            p = pages[-1]
            p[1] += 1
            p[5] += 7 + cid
            p[6].append(cid)
            cid += 1
    fmt = 'f' if dtype == 0 else 'e'
    secs = [b''.join(struct.pack('<%d%s' % (dim, fmt), *v) for v in vecs),
            b''.join(struct.pack('<QIIIIQ', *p[:6]) for p in pages),
            b''.join(struct.pack('<%df' % dim, *[sum(vecs[i][j] for i in p[6]) for j in range(dim)])
                     for p in pages),
            struct.pack('<%dI' % len(toks), *toks)]
    body, toc, off = b'', b'', 512
    for tag, s in zip((b'VECS', b'PAGE', b'PSUM', b'TOKS'), secs):
        start = (off + 63) // 64 * 64
        body += b'\0' * (start - off) + s
        toc += tag + struct.pack('<IQQ', crc32c(s), start, len(s))
        off = start + len(s)
    h = b'\x89FMI\r\n\x1a\n' + struct.pack('<IIIHHIIQQQIIQQQQ', version, 512, dim, dtype, 0, 0,
                                            page_chunks, len(vecs), len(pages), sum(toks), n_docs, 1,
                                            0x1122, 0x3344, 0x5566, off)
    h += struct.pack('<H', len(name)) + name
    h += b'\0' * (384 - len(h)) + toc
    h += b'\0' * (508 - len(h))
    f = bytearray(h + struct.pack('<I', crc32c(h)) + body)
    if mangle:
        mangle(f)
        f[508:512] = struct.pack('<I', crc32c(bytes(f[:508])))
    return bytes(f)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else 'tests/fuzz/corpus/indexfile'
    os.makedirs(out, exist_ok=True)
    good = index()
    files = {
        'valid-f32.fmi': good,
        'valid-f16.fmi': index(dtype=1, dim=6),
        'valid-one-chunk.fmi': index(docs=((0, 1),), n_docs=1),
        'valid-empty.fmi': index(docs=(), n_docs=0),
        'valid-pages-of-one.fmi': index(docs=((0, 3), (1, 2)), page_chunks=1, n_docs=2),
        'bad-truncated.fmi': good[:len(good) - 3],
        'bad-header-only.fmi': good[:512],
        'bad-version-2.fmi': index(version=2),
        'bad-page-overlap.fmi': index(mangle=lambda f: f.__setitem__(slice(640 + 32, 648 + 32),
                                                                    struct.pack('<Q', 1))),
        'bad-huge-count.fmi': index(mangle=lambda f: f.__setitem__(slice(32, 40),
                                                                  struct.pack('<Q', 1 << 62))),
        'bad-doc-order.fmi': index(docs=((2, 2), (0, 2))),
        'bad-not-index.fmi': b'not an index, just text\n',
    }
    for name, data in files.items():
        assert len(data) < 4096, name
        with open(os.path.join(out, name), 'wb') as f:
            f.write(data)


if __name__ == '__main__':
    main()
