#!/usr/bin/env python3
"""gguf-to-hf.py - the inverse of scripts/bert-to-gguf.py, for tests/cli/embed.sh:
writes a bert GGUF (F16/F32 tensors) as a Hugging Face model directory
(config.json, vocab.txt, model.safetensors in F32, names prefixed "bert." as
a BertModel checkpoint has them), so the converter can be checked by a round
trip without a downloaded model.

usage: gguf-to-hf.py MODEL.gguf OUT_DIR      (FM_TOP names the repository)
"""
import json, os, struct, sys
import numpy as np
sys.path.insert(0, os.path.join(os.environ["FM_TOP"], "bench"))
from bert_reference import read_gguf
meta, w = read_gguf(sys.argv[1])
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
L = meta["bert.block_count"]
json.dump({"model_type": "bert", "hidden_act": "gelu", "num_hidden_layers": L,
           "hidden_size": meta["bert.embedding_length"], "intermediate_size": meta["bert.feed_forward_length"],
           "num_attention_heads": meta["bert.attention.head_count"],
           "max_position_embeddings": meta["bert.context_length"], "type_vocab_size": 2,
           "layer_norm_eps": meta["bert.attention.layer_norm_epsilon"]}, open(out + "/config.json", "w"))
def plain(t):
    if t.startswith("[") and t.endswith("]"):
        return t
    return t[1:] if t.startswith("\u2581") else "##" + t
with open(out + "/vocab.txt", "w", encoding="utf-8") as f:
    for t in meta["tokenizer.ggml.tokens"]:
        f.write(plain(t) + "\n")
names = {"token_embd.weight": "embeddings.word_embeddings.weight",
         "position_embd.weight": "embeddings.position_embeddings.weight",
         "token_types.weight": "embeddings.token_type_embeddings.weight",
         "token_embd_norm.weight": "embeddings.LayerNorm.weight", "token_embd_norm.bias": "embeddings.LayerNorm.bias"}
parts = {"attn_q": "attention.self.query", "attn_k": "attention.self.key", "attn_v": "attention.self.value",
         "attn_output": "attention.output.dense", "attn_output_norm": "attention.output.LayerNorm",
         "ffn_up": "intermediate.dense", "ffn_down": "output.dense", "layer_output_norm": "output.LayerNorm"}
for i in range(L):
    for gg, hf in parts.items():
        for p in ("weight", "bias"):
            names["blk.%d.%s.%s" % (i, gg, p)] = "bert.encoder.layer.%d.%s.%s" % (i, hf, p)
header, blobs, off = {}, [], 0
for gg, hf in names.items():
    raw = w[gg].astype("<f4").tobytes()
    header[hf] = {"dtype": "F32", "shape": list(w[gg].shape), "data_offsets": [off, off + len(raw)]}
    blobs.append(raw)
    off += len(raw)
h = json.dumps(header).encode()
with open(out + "/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for b in blobs:
        f.write(b)
