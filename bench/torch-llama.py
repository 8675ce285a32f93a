#!/usr/bin/env python3
"""torch-llama.py - the PyTorch baseline of bench/decode-cuda.sh: the same
llama GGUF (F16 matrices) in fp16 on the GPU, greedy decoding at batch 1 and
a 4096-token prefill, timed the way fm-decode -v times them.

With Hugging Face transformers installed, its LlamaForCausalLM (SDPA
attention, KV cache) runs generate(); otherwise a plain PyTorch llama loop
with a preallocated KV cache and F.scaled_dot_product_attention does.  The
weights are the GGUF's bytes, unpermuted: HF's rotate-half RoPE pairs other
dimensions than llama.cpp's, which changes the tokens, not the work.

usage: torch-llama.py model.gguf n_new
"""
import struct
import sys
import time

import torch
import torch.nn.functional as F


def read_gguf(path):
    """Hyperparameters and F16/F32 tensors (as torch tensors on the CPU) of a GGUF."""
    b = open(path, "rb").read()
    o = 8
    n_t, n_kv = struct.unpack_from("<QQ", b, o)
    o += 16
    size = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    fmt = {4: "<I", 5: "<i", 6: "<f", 10: "<Q"}
    kv = {}

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
        n, = struct.unpack_from("<Q", b, o)
        key = b[o + 8:o + 8 + n].decode()
        o += 8 + n
        t, = struct.unpack_from("<I", b, o)
        if t in fmt:
            kv[key], = struct.unpack_from(fmt[t], b, o + 4)
        o = skip(t, o + 4)
    infos = []
    for _ in range(n_t):
        n, = struct.unpack_from("<Q", b, o)
        name = b[o + 8:o + 8 + n].decode()
        o += 8 + n
        nd, = struct.unpack_from("<I", b, o)
        ne = struct.unpack_from("<%dQ" % nd, b, o + 4)
        t, off = struct.unpack_from("<IQ", b, o + 4 + 8 * nd)
        o += 4 + 8 * nd + 12
        infos.append((name, ne, t, off))
    align = 32
    data = (o + align - 1) // align * align
    tensors = {}
    buf = bytearray(b)
    for name, ne, t, off in infos:
        n = 1
        for d in ne:
            n *= d
        dt, es = {0: (torch.float32, 4), 1: (torch.float16, 2)}[t]
        x = torch.frombuffer(buf, dtype=dt, count=n, offset=data + off)
        tensors[name] = x.reshape(list(reversed(ne))) if len(ne) > 1 else x
    return kv, tensors


def main():
    path, n_new = sys.argv[1], int(sys.argv[2])
    kv, t = read_gguf(path)
    dim, L = kv["llama.embedding_length"], kv["llama.block_count"]
    H, KH = kv["llama.attention.head_count"], kv["llama.attention.head_count_kv"]
    ffn, V = kv["llama.feed_forward_length"], t["token_embd.weight"].shape[0]
    hd, eps = dim // H, kv.get("llama.attention.layer_norm_rms_epsilon", 1e-5)
    dev = torch.device("cuda")
    g = lambda name: t[name].to(dev, torch.float16)
    prompt = torch.randint(3, V, (1, 27), device=dev)
    long = torch.full((1, 4096), 1000, device=dev)
    sync = torch.cuda.synchronize

    try:
        from transformers import LlamaConfig, LlamaForCausalLM
        cfg = LlamaConfig(vocab_size=V, hidden_size=dim, intermediate_size=ffn, num_hidden_layers=L,
                          num_attention_heads=H, num_key_value_heads=KH, rms_norm_eps=eps,
                          max_position_embeddings=8192, tie_word_embeddings=False)
        with torch.device(dev):
            model = LlamaForCausalLM(cfg).to(torch.float16).eval()
        sd = {"model.embed_tokens.weight": g("token_embd.weight"), "model.norm.weight": g("output_norm.weight"),
              "lm_head.weight": g("output.weight")}
        names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                 "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
        for i in range(L):
            for a, b in names.items():
                sd["model.layers.%d.%s.weight" % (i, b)] = g("blk.%d.%s.weight" % (i, a))
        model.load_state_dict(sd, strict=False)
        kind = "transformers LlamaForCausalLM (sdpa), generate()"

        @torch.no_grad()
        def prefill(ids):
            model(ids, use_cache=False)

        @torch.no_grad()
        def generate(ids, n):
            model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           pad_token_id=0, eos_token_id=None)
    except ImportError:
        kind = "plain PyTorch llama loop (SDPA, preallocated KV cache)"
        emb, onorm, out = g("token_embd.weight"), g("output_norm.weight"), g("output.weight")
        layers = [{k: g("blk.%d.%s.weight" % (i, k)) for k in
                   ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
                    "attn_norm", "ffn_norm")} for i in range(L)]
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, device=dev, dtype=torch.float32) / hd))

        def rms(x, w):
            return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).half() * w

        def rope(x, pos):
            ang = pos[:, None].float() * inv[None, :]
            c, s = ang.cos().half()[None, :, None, :], ang.sin().half()[None, :, None, :]
            x1, x2 = x[..., 0::2], x[..., 1::2]
            return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), -1).flatten(-2)

        @torch.no_grad()
        def forward(ids, pos0, kc, vc):
            n = ids.shape[1]
            pos = torch.arange(pos0, pos0 + n, device=dev)
            x = emb[ids]
            for i, w in enumerate(layers):
                h = rms(x, w["attn_norm"])
                q = rope((h @ w["attn_q"].T).view(1, n, H, hd), pos)
                k = rope((h @ w["attn_k"].T).view(1, n, KH, hd), pos)
                v = (h @ w["attn_v"].T).view(1, n, KH, hd)
                kc[i][:, pos0:pos0 + n] = k
                vc[i][:, pos0:pos0 + n] = v
                kk = kc[i][:, :pos0 + n].repeat_interleave(H // KH, 2).transpose(1, 2)
                vv = vc[i][:, :pos0 + n].repeat_interleave(H // KH, 2).transpose(1, 2)
                a = F.scaled_dot_product_attention(q.transpose(1, 2), kk, vv, is_causal=n > 1)
                x = x + a.transpose(1, 2).reshape(1, n, dim) @ w["attn_output"].T
                h = rms(x, w["ffn_norm"])
                x = x + (F.silu(h @ w["ffn_gate"].T) * (h @ w["ffn_up"].T)) @ w["ffn_down"].T
            return rms(x[:, -1:], onorm) @ out.T

        def cache(n):
            return ([torch.empty(1, n, KH, hd, device=dev, dtype=torch.float16) for _ in range(L)],
                    [torch.empty(1, n, KH, hd, device=dev, dtype=torch.float16) for _ in range(L)])

        def prefill(ids):
            kc, vc = cache(ids.shape[1])
            forward(ids, 0, kc, vc)

        def generate(ids, n):
            kc, vc = cache(ids.shape[1] + n)
            logits = forward(ids, 0, kc, vc)
            for p in range(n - 1):
                nxt = logits[:, -1].argmax(-1, keepdim=True)
                logits = forward(nxt, ids.shape[1] + p, kc, vc)

    def timed(fn, *a):
        sync()
        t0 = time.perf_counter()
        fn(*a)
        sync()
        return time.perf_counter() - t0

    generate(prompt, 4)   # warm-up
    tp = sorted(timed(prefill, prompt) for _ in range(3))[1]
    tg = sorted(timed(generate, prompt, n_new) for _ in range(3))[1]
    prefill(long)
    t4 = sorted(timed(prefill, long) for _ in range(3))[1]
    print("torch %s, %s" % (torch.__version__, kind))
    print("torch decode: %d tokens in %.3f s, %.1f tokens/s" % (n_new - 1, tg - tp, (n_new - 1) / (tg - tp)))
    print("torch prefill: 4096 tokens in %.4f s, %.0f tokens/s" % (t4, 4096 / t4))


if __name__ == "__main__":
    main()
