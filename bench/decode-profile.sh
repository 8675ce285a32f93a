#!/bin/sh
# decode-profile.sh - where a decode step's time goes on a GPU: fm-decode's
# decode rate on a random-weight 1B-class F16 llama (median of 3), then one
# step's kernels under Nsight Compute at the GPU's own clocks with the caches
# flushed between kernels (a decode step streams 2 GB of weights, so nothing
# of one kernel's is left in the 50 MB L2 for the next): time per kernel
# name, their sum, and what is left of the step for the gaps between them.
#
# usage: bench/decode-profile.sh      (env NEW: tokens to time, 256)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. bench/gpu-build.sh || exit 1
new=${NEW:-256}
m=$B/random-1b.gguf
[ -f $m ] || python3 scripts/make-random-llama.py -o $m --ctx 8192 >/dev/null || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
p="The history of the city begins in the early morning light, when the first traders arrive"
for i in 1 2 3; do
	$B/fm-decode -m $m -n $new --temp 0 -p "$p" --device cuda -v 2>&1 >/dev/null | grep -i decode
done
# A step is about 7 kernels a layer; skip the prefill and the first steps.
command -v ncu >/dev/null || exit 0
ncu --clock-control none --cache-control all --launch-skip 600 --launch-count 300 --csv \
	--metrics gpu__time_duration.sum,dram__bytes_read.sum \
	$B/fm-decode -m $m -n 12 --temp 0 -p "$p" --device cuda >$B/ncu.csv 2>$B/ncu.err ||
	{ tail -5 $B/ncu.err; exit 1; }
python3 - $B/ncu.csv <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
h = rows[0]; rows = rows[1:]
ik, im, iv = h.index("Kernel Name"), h.index("Metric Name"), h.index("Metric Value")
per = collections.defaultdict(lambda: [0, 0.0, 0.0])
idx = h.index("ID")
seen = {}
for r in rows:
    k = r[ik].split("(")[0].split("<")[0].replace("void ", "")
    v = float(r[iv].replace(",", ""))
    key = (r[idx], k)
    seen.setdefault(key, {})[r[im]] = v
for (i, k), d in seen.items():
    t = d.get("gpu__time_duration.sum", 0)
    b = d.get("dram__bytes_read.sum", 0)
    per[k][0] += 1; per[k][1] += t; per[k][2] += b
n = len(seen)
print("one layer's kernels in order:")
ids = sorted(seen, key=lambda x: int(x[0]))
for (i, k) in ids[20:27]:
    d = seen[(i, k)]
    t, b = d.get("gpu__time_duration.sum", 0), d.get("dram__bytes_read.sum", 0)
    print("  %-26s %7.2f us %8.2f MB %6.2f TB/s" % (k, t / 1e3, b / 1e6, b / t / 1e3 if t else 0))
tot = sum(p[1] for p in per.values())
print("%d kernels profiled, %.1f us in all (%.2f us each on average)" % (n, tot / 1e3, tot / 1e3 / max(n, 1)))
for k, (c, t, b) in sorted(per.items(), key=lambda x: -x[1][1]):
    print("%-28s %5d launches %9.1f us %7.2f us each  %6.2f TB/s" % (k, c, t / 1e3, t / 1e3 / c, b / t / 1e3 if t else 0))
PY
