#!/usr/bin/env python3
"""st_bench.py - the sentence-transformers side of bench/embed-cuda.sh.

  st_bench.py layers IN.gguf N OUT.gguf
      OUT is IN (a bert GGUF, e.g. the random one of `test_bert --write-gguf`)
      with N blocks: block i is a copy of IN's block i mod (IN's count).
      Tensors and metadata are copied byte for byte otherwise.

  st_bench.py texts MODEL.gguf N OUT.txt [SEED]
      N lines of lowercase words drawn from MODEL's vocabulary, each a whole
      word piece, so that a line of k words is k + 2 encoder tokens; k is
      uniform in 62..254 (64 to 256 tokens with [CLS] and [SEP]).  Prints
      the total of encoder tokens.

  st_bench.py bench MODEL.gguf TEXTS [--runs R] [--fm-list CMD FME]
      sentence-transformers (a transformers BertModel with MODEL's weights
      and a WordPiece tokenizer made from its vocabulary, then mean
      pooling), fp16 on cuda: a short sweep of batch sizes on the first
      10000 texts, then R timed encodes of all of them with the best.
      Prints tokens/s of each.  With --fm-list, the cosine of its vectors
      against the first 2000 rows that CMD --list --full FME prints.
"""
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bert_reference import hf_bert, read_gguf  # noqa: E402


# ---- a GGUF copier that changes the block count -------------------------------------

def gguf_layout(data):
    """(kv list of (key, raw bytes of type+value), tensors [(name, ne, type, off)], data start)."""
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def skip_value(t):
        nonlocal pos
        sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
        if t == 8:
            n = take("Q")
            pos += n
        elif t == 9:
            et, n = take("I"), take("Q")
            for _ in range(n):
                skip_value(et)
        else:
            pos += sizes[t]

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n].decode()
        pos += n
        return s

    assert data[:4] == b"GGUF"
    pos = 4
    take("I")
    n_t, n_kv = take("Q"), take("Q")
    kvs = []
    for _ in range(n_kv):
        k = string()
        start = pos
        skip_value(take("I"))
        kvs.append((k, data[start:pos]))
    ts = []
    for _ in range(n_t):
        name = string()
        nd = take("I")
        ne = [take("Q") for _ in range(nd)]
        ts.append((name, ne, take("I"), take("Q")))
    return kvs, ts, pos


def cmd_layers(src, n, dst):
    data = open(src, "rb").read()
    kvs, ts, pos = gguf_layout(data)
    meta = dict(kvs)
    align = struct.unpack("<II", meta["general.alignment"])[1] if "general.alignment" in meta else 32
    base = (pos + align - 1) // align * align
    n_src = struct.unpack("<II", meta["bert.block_count"])[1]

    def nbytes(ne, typ):
        return int(np.prod(ne)) * {0: 4, 1: 2}[typ]

    out_t = []
    for name, ne, typ, off in ts:
        if not name.startswith("blk."):
            out_t.append((name, ne, typ, off))
    for i in range(n):
        j = i % n_src
        for name, ne, typ, off in ts:
            if name.startswith("blk.%d." % j):
                out_t.append(("blk.%d.%s" % (i, name.split(".", 2)[2]), ne, typ, off))
    hdr = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(out_t), len(kvs)))
    for k, raw in kvs:
        hdr += struct.pack("<Q", len(k)) + k.encode()
        hdr += struct.pack("<II", 4, n) if k == "bert.block_count" else raw
    off = 0
    blobs = []
    for name, ne, typ, src_off in out_t:
        hdr += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", len(ne))
        hdr += b"".join(struct.pack("<Q", x) for x in ne) + struct.pack("<IQ", typ, off)
        nb = nbytes(ne, typ)
        blobs.append(data[base + src_off:base + src_off + nb])
        off += (nb + align - 1) // align * align
    with open(dst, "wb") as f:
        f.write(hdr)
        f.write(b"\0" * ((-len(hdr)) % align))
        for b in blobs:
            f.write(b)
            f.write(b"\0" * ((-len(b)) % align))


# ---- texts ---------------------------------------------------------------------------

def cmd_texts(model, n, out, seed=20261123):
    toks = read_gguf(model)[0]["tokenizer.ggml.tokens"]
    words = [t[1:] for t in toks if t.startswith("\u2581") and 2 <= len(t) - 1 <= 12
             and t[1:].isascii() and t[1:].isalpha() and t[1:].islower()]
    words = np.array(words)
    rng = np.random.default_rng(seed)
    lens = rng.integers(62, 255, size=n)
    total = 0
    with open(out, "w") as f:
        for k in lens:
            f.write(" ".join(words[rng.integers(0, len(words), size=k)]))
            f.write("\n")
            total += int(k) + 2
    print(total)


# ---- sentence-transformers -----------------------------------------------------------

def build_st(model_path, tmp):
    import torch
    from sentence_transformers import SentenceTransformer, models
    meta, w = read_gguf(model_path)
    bert = hf_bert(meta, w, torch.float32)
    bert.save_pretrained(tmp)
    save_tokenizer(meta, tmp)
    dim, ctx = meta["bert.embedding_length"], meta["bert.context_length"]
    try:
        tr = models.Transformer(tmp, max_seq_length=ctx)
        st = SentenceTransformer(modules=[tr, models.Pooling(dim, "mean")], device="cuda")
    except Exception as e:   # the API of another version: the directory alone, mean pooling
        print("note: models.Transformer failed (%s); SentenceTransformer(directory)" % e)
        st = SentenceTransformer(tmp, device="cuda")
        st.max_seq_length = ctx
    return st.half().eval()


def save_tokenizer(meta, tmp):
    """The GGUF's vocabulary as a Hugging Face WordPiece tokenizer, [CLS] ... [SEP] added."""
    toks = meta["tokenizer.ggml.tokens"]
    # Word-initial pieces bare, the rest "##" (the GGUF has them the other way round).
    hf = []
    for t in toks:
        if t.startswith("\u2581"):
            t = t[1:]
        elif not (t.startswith("[") and t.endswith("]")):
            t = "##" + t
        hf.append(t)
    ctx = meta["bert.context_length"]
    try:
        from tokenizers import Tokenizer, models as tm, normalizers, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast
        vocab = {}
        for i, t in enumerate(hf):
            vocab.setdefault(t, i)
        tk = Tokenizer(tm.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tk.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                   strip_accents=True, lowercase=True)
        tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", cls_token="[CLS]",
                                sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]",
                                model_max_length=ctx).save_pretrained(tmp)
    except Exception as e:
        print("note: tokenizers route failed (%s); BertTokenizerFast(vocab.txt)" % e)
        try:
            from transformers import BertTokenizerFast as Tok
        except ImportError:
            from transformers import BertTokenizer as Tok
        with open(os.path.join(tmp, "vocab.txt"), "w") as f:
            f.write("".join(t + "\n" for t in hf))
        Tok(vocab_file=os.path.join(tmp, "vocab.txt"), do_lower_case=True,
            model_max_length=ctx).save_pretrained(tmp)


def cmd_bench(model, texts_path, runs, fm_cmd, fme):
    import torch
    import sentence_transformers
    import transformers

    texts = open(texts_path).read().split("\n")[:-1]
    ntok = sum(len(t.split()) + 2 for t in texts)
    with tempfile.TemporaryDirectory() as tmp:
        st = build_st(model, tmp)
    print("sentence-transformers %s, transformers %s, torch %s, %s, attention %s" % (
        sentence_transformers.__version__, transformers.__version__, torch.__version__,
        torch.cuda.get_device_name(), getattr(st[0].auto_model.config, "_attn_implementation",
                                              "?")))

    # Both sides must see the same tokens: a line of k words is k + 2 of them.
    n0 = len(st.tokenize([texts[0]])["input_ids"][0])
    assert n0 == len(texts[0].split()) + 2, (n0, len(texts[0].split()))

    def enc(xs, bs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        v = st.encode(xs, batch_size=bs, convert_to_numpy=True, show_progress_bar=False)
        torch.cuda.synchronize()
        return v, time.perf_counter() - t0

    sweep = texts[:10000]
    sweep_tok = sum(len(t.split()) + 2 for t in sweep)
    enc(sweep[:1000], 64)   # warm-up
    best = None
    for bs in (32, 128, 512):
        _, s = enc(sweep, bs)
        print("st sweep: batch %d: %.0f tokens/s" % (bs, sweep_tok / s))
        if best is None or s < best[1]:
            best = (bs, s)
    bs = best[0]
    rates = []
    v = None
    for r in range(runs):
        v, s = enc(texts, bs)
        rates.append(ntok / s)
        print("st run %d: batch %d, %d texts, %d tokens in %.3f s: %.0f tokens/s" % (
            r + 1, bs, len(texts), ntok, s, ntok / s))
    print("st median: %.0f tokens/s (batch %d)" % (statistics.median(rates), bs))
    if fm_cmd and fme:
        p = subprocess.Popen([fm_cmd, "--list", "--full", fme], stdout=subprocess.PIPE, text=True)
        import json
        cos = []
        for i, line in enumerate(p.stdout):
            if i >= 2000:
                break
            a = np.array(json.loads(line)["vec"], dtype=np.float64)
            b = v[i].astype(np.float64)
            cos.append(a @ b / np.sqrt((a @ a) * (b @ b)))
        p.kill()
        p.wait()
        print("agreement: fm cuda vs sentence-transformers fp16 on %d texts: min cosine %.6f, "
              "median %.7f" % (len(cos), min(cos), statistics.median(cos)))


def main():
    a = sys.argv[1:]
    if a[:1] == ["layers"] and len(a) == 4:
        return cmd_layers(a[1], int(a[2]), a[3])
    if a[:1] == ["texts"] and len(a) in (4, 5):
        return cmd_texts(a[1], int(a[2]), a[3], *(int(x) for x in a[4:]))
    if a[:1] == ["bench"] and len(a) >= 3:
        runs, fm_cmd, fme = 3, None, None
        rest = a[3:]
        while rest:
            if rest[0] == "--runs":
                runs, rest = int(rest[1]), rest[2:]
            elif rest[0] == "--fm-list":
                fm_cmd, fme, rest = rest[1], rest[2], rest[3:]
            else:
                sys.exit("st_bench.py: unknown option %s" % rest[0])
        return cmd_bench(a[1], a[2], runs, fm_cmd, fme)
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
