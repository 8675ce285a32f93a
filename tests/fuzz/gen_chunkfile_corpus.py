#!/usr/bin/env python3
"""gen_chunkfile_corpus.py - writes the seed corpus of the chunk file fuzzer.

An encoder of its own, written from fm-formats(5) and sharing no code with
common/chunkfile.c, so the unit test that reads these files checks the
specification as much as the library.  valid-* files must be accepted to
their end, bad-* files refused; every file stays under 4 KiB.

usage: gen_chunkfile_corpus.py [DIR]   (default tests/fuzz/corpus/chunkfile)
"""
import os
import struct
import sys

from fmformat import crc32c, fnv1a64, record


def header(version=1, fingerprint=0x0123456789ABCDEF, n_vocab=1000, chunk_tokens=4,
           overlap=1, page_chunks=2, kind=b"llama", model=b"tiny-model"):
    body = struct.pack("<QIIII", fingerprint, n_vocab, chunk_tokens, overlap, page_chunks)
    body += struct.pack("<H", len(kind)) + kind + struct.pack("<H", len(model)) + model
    hlen = 8 + 4 + 4 + len(body) + 4
    h = b"\x89FMC\r\n\x1a\n" + struct.pack("<II", version, hlen) + body
    return h + struct.pack("<I", crc32c(h))


def docb(doc, name):
    return record(b"DOCB", struct.pack("<II", doc, len(name)) + name)


def chnk(cid, doc, chunk, page, ids, offset, text):
    p = struct.pack("<QIIIIQI", cid, doc, chunk, page, len(ids), offset, len(text))
    p += struct.pack("<%di" % len(ids), *ids) + text
    return record(b"CHNK", p)


def doce(doc, nbytes, n_tokens, n_chunks, flags=0):
    return record(b"DOCE", struct.pack("<IQQII", doc, nbytes, n_tokens, n_chunks, flags))


def end(prefix, n_docs, n_chunks, content_hash=None):
    h = fnv1a64(prefix) if content_hash is None else content_hash
    return record(b"END ", struct.pack("<IQQ", n_docs, n_chunks, h))


class File:
    """Builds a chunk file document by document, cutting token windows as fm-chunk does."""

    def __init__(self, **hdr):
        self.hdr = dict(chunk_tokens=4, overlap=1, page_chunks=2)
        self.hdr.update(hdr)
        self.b = header(**self.hdr)
        self.docs = 0
        self.chunks = 0

    def doc(self, name, text, spans, ids, flags=0):
        """spans[i] = (start, end) byte span of token i in text."""
        ct, ov, pc = self.hdr["chunk_tokens"], self.hdr["overlap"], self.hdr["page_chunks"]
        d = self.docs
        self.b += docb(d, name)
        k, start = 0, 0
        while start < len(ids):
            stop = min(start + ct, len(ids))
            lo, hi = spans[start][0], spans[stop - 1][1]
            self.b += chnk(self.chunks, d, k, k // pc, ids[start:stop], lo, text[lo:hi])
            self.chunks += 1
            k += 1
            if stop == len(ids):
                break
            start = stop - ov
        self.b += doce(d, len(text), len(ids), k, flags)
        self.docs += 1

    def finish(self):
        return self.b + end(self.b, self.docs, self.chunks)


def words(text):
    """One token per byte run between spaces (the space goes with the word after it)."""
    spans, i = [], 0
    while i < len(text):
        j = i + 1
        while j < len(text) and text[j:j + 1] != b" ":
            j += 1
        spans.append((i, j))
        i = j
    return spans


def simple_doc(f, name, text, flags=0, vocab=1000):
    spans = words(text)
    ids = [(sum(text[a:b]) * 7 + len(text[a:b])) % vocab for a, b in spans]
    f.doc(name, text, spans, ids, flags)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/chunkfile"
    os.makedirs(out, exist_ok=True)
    files = {}

    f = File()
    simple_doc(f, b"docs/a.txt", b"The quick brown fox jumps over the lazy dog again")
    simple_doc(f, b"empty", b"")
    simple_doc(f, b"bin\xffary", b"a\x00b \xff\xfe \xc3( tail", flags=1)
    sample = f.finish()
    sample_docs, sample_chunks = f.docs, f.chunks
    files["valid-sample.fmc"] = sample

    files["valid-empty.fmc"] = File(kind=b"bert", model=b"").finish()

    f = File(kind=b"bert", model=b"bge-small", n_vocab=30522, chunk_tokens=3, overlap=0,
             page_chunks=1)
    simple_doc(f, b"one", b"alpha beta gamma delta epsilon zeta eta")
    simple_doc(f, b"two", b"short")
    files["valid-overlap0.fmc"] = f.finish()

    f = File(chunk_tokens=2, overlap=1, page_chunks=3, n_vocab=50)
    simple_doc(f, b"pages", b"a b c d e f g h i", vocab=50)
    files["valid-pages.fmc"] = f.finish()

    f = File(chunk_tokens=1, overlap=0, page_chunks=1, n_vocab=1)
    f.doc(b"", b"", [(0, 0), (0, 0)], [0, 0])
    files["valid-minimal-vocab.fmc"] = f.finish()

    files["bad-truncated.fmc"] = sample[:len(sample) * 2 // 3]
    flipped = bytearray(sample)
    flipped[len(sample) // 2] ^= 0x20
    files["bad-flipped.fmc"] = bytes(flipped)
    files["bad-version.fmc"] = header(version=2)
    files["bad-trailing.fmc"] = sample + b"\n"
    files["bad-noend.fmc"] = sample[:-32]
    files["bad-hash.fmc"] = sample[:-32] + end(b"", sample_docs, sample_chunks, content_hash=0)

    h = header()
    b = h + docb(0, b"x") + chnk(0, 0, 0, 0, [1, 2, 3, 4], 0, b"abcd")
    b += chnk(1, 0, 1, 0, [9, 5, 6, 7], 3, b"defg")
    files["bad-overlap.fmc"] = b + doce(0, 7, 7, 2) + end(b, 1, 2)

    files["bad-hugelen.fmc"] = h + docb(0, b"x") + b"CHNK" + struct.pack("<I", 0xFFFFFFFF)
    b = h + b"CHNK" + struct.pack("<I", 256 << 20)
    b += struct.pack("<QIIIIQI", 0, 0, 0, 0, 1, 0, (256 << 20) - 40) + b"\x01\x00\x00\x00"
    files["bad-claims-256mib.fmc"] = b + b"text"
    b = h + docb(0, b"x") + chnk(0, 0, 0, 0, [1, 1000], 0, b"ab")
    files["bad-oov.fmc"] = b + doce(0, 2, 2, 1) + end(b + doce(0, 2, 2, 1), 1, 1)

    for name, data in sorted(files.items()):
        assert len(data) < 4096, name
        with open(os.path.join(out, name), "wb") as fp:
            fp.write(data)


if __name__ == "__main__":
    main()
