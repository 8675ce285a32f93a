#!/usr/bin/env python3
"""bert-to-gguf.py - converts a Hugging Face BERT sentence encoder to a GGUF
that fm-embed reads, laid out as llama.cpp's convert_hf_to_gguf.py writes the
`bert` architecture (all-MiniLM-L6-v2, bge-small and the like).

The input is a model directory: config.json, vocab.txt, model.safetensors
(F32, F16 or BF16), and, for a sentence-transformers model, 1_Pooling/
config.json, which sets the pooling (mean unless it says CLS).  Matrices and
embeddings are written as F16 (or F32 with --f32), norms, biases and the
token-type embeddings as F32.
The vocabulary is written in llama.cpp's "phantom space" form: a word-initial
token gets U+2581 in front, a continuation loses its "##", a bracketed token
stays; [PAD] [UNK] [CLS] [SEP] [MASK] are control tokens.

No dependency but NumPy: safetensors and GGUF are read and written here.

usage: bert-to-gguf.py [--f32] [--name NAME] MODEL_DIR OUT.gguf
"""
import json
import os
import struct
import sys

import numpy as np

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def read_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[base + a:base + b]
        dt = info["dtype"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            continue   # position_ids and other integer buffers
        out[name] = arr.reshape(info["shape"]).astype(np.float32)
    return out


def tensor_map(n_layer):
    m = {
        "embeddings.word_embeddings.weight": "token_embd.weight",
        "embeddings.position_embeddings.weight": "position_embd.weight",
        "embeddings.token_type_embeddings.weight": "token_types.weight",
        "embeddings.LayerNorm.weight": "token_embd_norm.weight",
        "embeddings.LayerNorm.bias": "token_embd_norm.bias",
    }
    parts = {"attention.self.query": "attn_q", "attention.self.key": "attn_k",
             "attention.self.value": "attn_v", "attention.output.dense": "attn_output",
             "attention.output.LayerNorm": "attn_output_norm", "intermediate.dense": "ffn_up",
             "output.dense": "ffn_down", "output.LayerNorm": "layer_output_norm"}
    for i in range(n_layer):
        for hf, gg in parts.items():
            for p in ("weight", "bias"):
                m["encoder.layer.%d.%s.%s" % (i, hf, p)] = "blk.%d.%s.%s" % (i, gg, p)
    return m


class Writer:
    def __init__(self):
        self.kv = []
        self.tensors = []

    @staticmethod
    def s(b):
        b = b.encode() if isinstance(b, str) else b
        return struct.pack("<Q", len(b)) + b

    def add(self, key, typ, payload):
        self.kv.append(self.s(key) + struct.pack("<I", typ) + payload)

    def str(self, key, v):
        self.add(key, 8, self.s(v))

    def u32(self, key, v):
        self.add(key, 4, struct.pack("<I", v))

    def f32(self, key, v):
        self.add(key, 6, struct.pack("<f", v))

    def bool(self, key, v):
        self.add(key, 7, struct.pack("<B", int(v)))

    def arr_str(self, key, items):
        self.add(key, 9, struct.pack("<IQ", 8, len(items)) + b"".join(self.s(x) for x in items))

    def arr_i32(self, key, items):
        self.add(key, 9, struct.pack("<IQ", 5, len(items)) + struct.pack("<%di" % len(items), *items))

    def write(self, path, align=32):
        infos, blobs, off = [], [], 0
        for name, arr, typ in self.tensors:
            raw = arr.astype("<f2" if typ == 1 else "<f4").tobytes()
            ne = list(reversed(arr.shape))
            infos.append(self.s(name) + struct.pack("<I", len(ne)) +
                         b"".join(struct.pack("<Q", x) for x in ne) + struct.pack("<IQ", typ, off))
            pad = (-len(raw)) % align
            blobs.append(raw + b"\0" * pad)
            off += len(raw) + pad
        head = b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(self.kv))
        head += b"".join(self.kv) + b"".join(infos)
        head += b"\0" * ((-len(head)) % align)
        with open(path + ".tmp", "wb") as f:
            f.write(head)
            for b in blobs:
                f.write(b)
        os.replace(path + ".tmp", path)


def main():
    args = sys.argv[1:]
    f32 = "--f32" in args
    args = [a for a in args if a != "--f32"]
    name = None
    if "--name" in args:
        i = args.index("--name")
        name = args[i + 1]
        del args[i:i + 2]
    if len(args) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    src, out = args
    cfg = json.load(open(os.path.join(src, "config.json")))
    if cfg.get("model_type", "bert") != "bert":
        sys.exit("bert-to-gguf: %s: model_type '%s' is not bert" % (src, cfg.get("model_type")))
    if cfg.get("hidden_act", "gelu") != "gelu":
        sys.exit("bert-to-gguf: %s: hidden_act '%s' is not gelu" % (src, cfg["hidden_act"]))
    vocab = [l.rstrip("\n") for l in open(os.path.join(src, "vocab.txt"), encoding="utf-8")]
    w = read_safetensors(os.path.join(src, "model.safetensors"))
    w = {(k[5:] if k.startswith("bert.") else k): v for k, v in w.items()}
    pooling = 1
    pool_cfg = os.path.join(src, "1_Pooling", "config.json")
    if os.path.exists(pool_cfg) and json.load(open(pool_cfg)).get("pooling_mode_cls_token"):
        pooling = 2

    L = cfg["num_hidden_layers"]
    g = Writer()
    g.str("general.architecture", "bert")
    g.str("general.name", name or os.path.basename(os.path.normpath(src)))
    g.u32("general.alignment", 32)
    g.u32("bert.context_length", cfg["max_position_embeddings"])
    g.u32("bert.embedding_length", cfg["hidden_size"])
    g.u32("bert.feed_forward_length", cfg["intermediate_size"])
    g.u32("bert.block_count", L)
    g.u32("bert.attention.head_count", cfg["num_attention_heads"])
    g.f32("bert.attention.layer_norm_epsilon", cfg.get("layer_norm_eps", 1e-12))
    g.bool("bert.attention.causal", False)
    g.u32("bert.pooling_type", pooling)
    g.u32("general.file_type", 0 if f32 else 1)
    g.u32("tokenizer.ggml.token_type_count", cfg.get("type_vocab_size", 2))
    g.str("tokenizer.ggml.model", "bert")

    def phantom(t):
        if t.startswith("[") and t.endswith("]"):
            return t
        return t[2:] if t.startswith("##") else "\u2581" + t
    g.arr_str("tokenizer.ggml.tokens", [phantom(t) for t in vocab])
    g.arr_i32("tokenizer.ggml.token_type", [3 if t in SPECIAL else 1 for t in vocab])
    for key, tok in (("unknown", "[UNK]"), ("seperator", "[SEP]"), ("padding", "[PAD]"),
                     ("cls", "[CLS]"), ("mask", "[MASK]")):
        if tok in vocab:
            g.u32("tokenizer.ggml.%s_token_id" % key, vocab.index(tok))
    for hf, gg in tensor_map(L).items():
        if hf not in w:
            sys.exit("bert-to-gguf: %s: tensor %s missing" % (src, hf))
        a = w[hf]
        # token_types is 2 rows: F32 costs nothing and keeps it exact.
        g.tensors.append((gg, a, 1 if a.ndim == 2 and not f32 and gg != "token_types.weight" else 0))
    g.write(out)


if __name__ == "__main__":
    main()
