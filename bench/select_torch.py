#!/usr/bin/env python3
"""select_torch.py - the PyTorch baseline of bench/select-gpu.sh: the same
vectors and queries as bench/select_gpu_speed.c (a hash of each value's
index, rebuilt here on the GPU), scored with torch.matmul and ranked with
torch.topk, one query and a batch; compares its top ids with fm's.

usage: select_torch.py n dim k batch runs fm_ids_file
"""
import sys
import time

import torch


def values(lo, count, dim, dev):
    """lowbias32 of each index mod 2^32, as select_gpu_speed.c computes it."""
    m = 0xFFFFFFFF
    x = (torch.arange(lo, lo + count, device=dev, dtype=torch.int64)) & m
    x ^= x >> 16
    x = (x * 0x7feb352d) & m
    x ^= x >> 15
    x = (x * 0x846ca68b) & m
    x ^= x >> 16
    scale = torch.tensor(3.0 / dim, dtype=torch.float32, device=dev).sqrt()
    return ((x.to(torch.float32) / 4294967296.0 * 2.0 - 1.0) * scale).half()


def timed(fn, runs):
    ts = []
    for r in range(runs + 1):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        if r:
            ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2], out


def main():
    n, dim, k, batch, runs = map(int, sys.argv[1:6])
    dev = 'cuda'
    t0 = time.perf_counter()
    v = torch.empty((n, dim), dtype=torch.float16, device=dev)
    step = 1 << 20
    for i in range(0, n, step):
        m = min(step, n - i)
        v[i:i + m] = values(i * dim, m * dim, dim, dev).view(m, dim)
    q = values(n * dim, batch * dim, dim, dev).view(batch, dim)
    print('data: %.1f s' % (time.perf_counter() - t0), file=sys.stderr)
    q1 = q[0]
    ts, s = timed(lambda: v @ q1, runs)
    tk, top = timed(lambda: torch.topk(s.float(), k), runs)
    tt, _ = timed(lambda: torch.topk((v @ q1).float(), k), runs)
    bytes_ = n * dim * 2
    print('device: %s, torch %s' % (torch.cuda.get_device_name(), torch.__version__))
    print('torch one query: matmul %.3f ms (%.0f GB/s), topk %.3f ms, matmul+topk %.3f ms'
          % (ts * 1e3, bytes_ / ts / 1e9, tk * 1e3, tt * 1e3))
    mine = [int(l.split()[0]) for l in open(sys.argv[6])]
    ids = top.indices.tolist()
    print('top-%d ids shared with fm: %d' % (k, len(set(ids) & set(mine))))
    del s
    # The batch in the groups fm used, so both hold the same scores at once.
    sub = int(sys.argv[7]) if len(sys.argv) > 7 else batch

    def run_batch():
        for i in range(0, batch, sub):
            torch.topk(q[i:i + sub] @ v.T, k, dim=1)
    tb, _ = timed(run_batch, max(1, runs // 2))
    tg, _ = timed(lambda: [q[i:i + sub] @ v.T for i in range(0, batch, sub)][-1], max(1, runs // 2))
    print('torch batch of %d (matmuls of %d): matmul %.2f ms (%.0f TFLOP/s), matmul+topk %.2f ms (%.0f queries/s)'
          % (batch, sub, tg * 1e3, 2.0 * n * dim * batch / tg / 1e12, tb * 1e3, batch / tb))


if __name__ == '__main__':
    main()
