#!/usr/bin/env python3
"""bert_reference.py - reference vectors for the BERT encoder test.

Loads a bert GGUF (the random one that `build/tests/test_bert --write-gguf
PATH` writes) with a GGUF reader of its own, runs the token ids of
PATH.ids through transformers' BertModel (float64, eager attention, on the
CPU) and writes, for mean and CLS pooling, each text's ids and L2-normalised
vector: the fixture tests/fixtures/bert-random-ref.txt.

With --numpy it runs an independent float64 NumPy implementation of the same
model instead (for machines without torch); the fixture records which.

With --bench IDS it is the baseline of bench/embed-cpu.sh: the NumPy model in
float32, one sequence at a time (matrix products on NumPy's BLAS, erf by the
vectorised Abramowitz-Stegun formula that fm uses) over the sequences of IDS
(one line of ids each, [CLS] and [SEP] included), printing tokens/s.

usage: bert_reference.py [--numpy] MODEL.gguf OUT.txt
       bert_reference.py --bench IDS MODEL.gguf
"""
import struct
import sys

import numpy as np

GGML_F32, GGML_F16 = 0, 1


def read_gguf(path):
    """Returns (metadata dict, {name: float64 array shaped (ne1, ne0)})."""
    data = open(path, "rb").read()
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals[0] if len(vals) == 1 else vals

    def string():
        nonlocal pos
        n = take("Q")
        s = data[pos:pos + n]
        pos += n
        return s.decode("utf-8", "replace")

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
              11: "q", 12: "d"}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(scalar[t])

    assert data[:4] == b"GGUF"
    pos = 4
    _version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
    meta = {}
    for _ in range(n_kv):
        k = string()
        meta[k] = value(take("I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        nd = take("I")
        ne = [take("Q") for _ in range(nd)]
        infos.append((name, ne, take("I"), take("Q")))
    align = meta.get("general.alignment", 32)
    base = (pos + align - 1) // align * align
    tensors = {}
    for name, ne, typ, off in infos:
        n = int(np.prod(ne))
        dt = {GGML_F32: np.float32, GGML_F16: np.float16}[typ]
        a = np.frombuffer(data, dtype=dt, count=n, offset=base + off).astype(np.float64)
        tensors[name] = a.reshape(list(reversed(ne))) if len(ne) > 1 else a
    return meta, tensors


def hf_bert(meta, w, dtype, eager=False):
    """A transformers BertModel (no pooler) holding the GGUF's weights, in dtype."""
    import torch
    from transformers import BertConfig, BertModel

    L = meta["bert.block_count"]
    cfg = BertConfig(vocab_size=w["token_embd.weight"].shape[0],
                     hidden_size=meta["bert.embedding_length"], num_hidden_layers=L,
                     num_attention_heads=meta["bert.attention.head_count"],
                     intermediate_size=meta["bert.feed_forward_length"], hidden_act="gelu",
                     max_position_embeddings=meta["bert.context_length"],
                     type_vocab_size=w["token_types.weight"].shape[0],
                     layer_norm_eps=meta["bert.attention.layer_norm_epsilon"],
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if not eager:
        model = BertModel(cfg, add_pooling_layer=False)
    else:
        try:
            model = BertModel(cfg, add_pooling_layer=False, attn_implementation="eager")
        except TypeError:
            cfg._attn_implementation = "eager"
            model = BertModel(cfg, add_pooling_layer=False)
    sd = {
        "embeddings.word_embeddings.weight": w["token_embd.weight"],
        "embeddings.position_embeddings.weight": w["position_embd.weight"],
        "embeddings.token_type_embeddings.weight": w["token_types.weight"],
        "embeddings.LayerNorm.weight": w["token_embd_norm.weight"],
        "embeddings.LayerNorm.bias": w["token_embd_norm.bias"],
    }
    names = {"attention.self.query": "attn_q", "attention.self.key": "attn_k",
             "attention.self.value": "attn_v", "attention.output.dense": "attn_output",
             "attention.output.LayerNorm": "attn_output_norm", "intermediate.dense": "ffn_up",
             "output.dense": "ffn_down", "output.LayerNorm": "layer_output_norm"}
    for i in range(L):
        for hf, gg in names.items():
            for p in ("weight", "bias"):
                sd["encoder.layer.%d.%s.%s" % (i, hf, p)] = w["blk.%d.%s.%s" % (i, gg, p)]
    sd = {k: torch.tensor(v, dtype=dtype) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")
               and not m.endswith("token_type_ids")]
    assert not missing and not unexpected, (missing, unexpected)
    return model


def run_torch(meta, w, seqs):
    import torch

    model = hf_bert(meta, w, torch.float64, eager=True)
    model = model.double().eval()
    states = []
    with torch.no_grad():
        for ids in seqs:
            x = torch.tensor([ids])
            out = model(input_ids=x, attention_mask=torch.ones_like(x),
                        token_type_ids=torch.zeros_like(x)).last_hidden_state[0]
            states.append(out.numpy())
    return states, "transformers %s BertModel, torch %s, float64, CPU" % (
        __import__("transformers").__version__, torch.__version__)


def erf_as(x):
    """Abramowitz and Stegun 7.1.26, vectorised (|error| < 1.5e-7)."""
    z = np.abs(x)
    t = 1 / (1 + 0.3275911 * z)
    y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t
             + 0.254829592) * t * np.exp(-z * z)
    return np.copysign(y, x).astype(x.dtype)


def run_numpy(meta, w, seqs, dtype=np.float64):
    from math import erf
    verf = np.vectorize(erf, otypes=[dtype]) if dtype == np.float64 else erf_as
    w = {k: v.astype(dtype) for k, v in w.items()}
    eps = meta["bert.attention.layer_norm_epsilon"]
    H = meta["bert.attention.head_count"]

    def ln(x, g, b):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(v + eps) * g + b

    states = []
    for ids in seqs:
        n = len(ids)
        x = w["token_embd.weight"][ids] + w["position_embd.weight"][:n] + w["token_types.weight"][0]
        x = ln(x, w["token_embd_norm.weight"], w["token_embd_norm.bias"])
        for i in range(meta["bert.block_count"]):
            p = lambda s: w["blk.%d.%s" % (i, s)]
            q = x @ p("attn_q.weight").T + p("attn_q.bias")
            k = x @ p("attn_k.weight").T + p("attn_k.bias")
            v = x @ p("attn_v.weight").T + p("attn_v.bias")
            d = q.shape[1] // H
            o = np.zeros_like(q)
            for h in range(H):
                s = q[:, h * d:(h + 1) * d] @ k[:, h * d:(h + 1) * d].T / dtype(np.sqrt(d))
                s = np.exp(s - s.max(1, keepdims=True))
                s /= s.sum(1, keepdims=True)
                o[:, h * d:(h + 1) * d] = s @ v[:, h * d:(h + 1) * d]
            x = ln(x + o @ p("attn_output.weight").T + p("attn_output.bias"),
                   p("attn_output_norm.weight"), p("attn_output_norm.bias"))
            u = x @ p("ffn_up.weight").T + p("ffn_up.bias")
            u = 0.5 * u * (1 + verf(u / dtype(np.sqrt(2))))
            x = ln(x + u @ p("ffn_down.weight").T + p("ffn_down.bias"),
                   p("layer_output_norm.weight"), p("layer_output_norm.bias"))
        states.append(x)
    return states, "independent NumPy %s implementation, float64" % np.__version__


def bench(ids_path, model):
    import time
    meta, w = read_gguf(model)
    seqs = [[int(t) for t in line.split()] for line in open(ids_path)]
    t0 = time.perf_counter()
    run_numpy(meta, w, seqs, np.float32)
    secs = time.perf_counter() - t0
    n = sum(len(s) for s in seqs)
    print("numpy-f32: %d sequences, %d tokens in %.3f s: %.0f tokens/s" % (len(seqs), n, secs, n / secs))


def main():
    args = sys.argv[1:]
    if args and args[0] == "--bench":
        return bench(args[1], args[2])
    use_numpy = "--numpy" in args
    args = [a for a in args if a != "--numpy"]
    model, out = args
    meta, w = read_gguf(model)
    seqs = [[int(t) for t in line.split()] for line in open(model + ".ids")]
    states, how = (run_numpy if use_numpy else run_torch)(meta, w, seqs)
    with open(out, "w") as f:
        f.write("# reference vectors of bench/bert_reference.py: %s\n" % how)
        f.write("# model %s (seed %s); lines: pooling, ids, normalised vector\n"
                % (meta.get("general.name"), meta.get("general.seed")))
        for pool in ("mean", "cls"):
            for ids, s in zip(seqs, states):
                v = s.mean(0) if pool == "mean" else s[0]
                v = v / np.linalg.norm(v)
                f.write("%s\t%s\t%s\n" % (pool, " ".join(map(str, ids)),
                                          " ".join("%.9g" % x for x in v)))


if __name__ == "__main__":
    main()
