#!/bin/sh
# decode-cuda.sh - fm-decode on a GPU, in one go: builds with CUDA
# (bench/gpu-build.sh), runs the kernel tests plainly and under
# compute-sanitizer (memcheck, racecheck), checks that the CPU and CUDA paths
# write the same greedy text, measures the read bandwidth the GPU reaches
# (bench/hbm_read.cu), then times a random-weight 1B-class F16 llama: decode
# at batch 1 against the HBM roofline, prefill of 4096 tokens in TFLOP/s (as
# fm-decode -v times its one prefill, and warm, bench/prefill_cuda.c), a
# decode step's kernels (bench/decode-profile.sh) and PyTorch on the same
# weights when it is installed.  Logs go to build/cuda-bench, and the main
# ones to $OUT when it is set.
#
# usage: bench/decode-cuda.sh
# env:   PEAK_TBS (HBM TB/s, 3.35), PEAK_TFLOPS (dense FP16, 989.5), NEW (256)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
out=$top/build/cuda-bench
mkdir -p "$out"
export PATH="/usr/local/cuda/bin:$PATH"
peak_tbs=${PEAK_TBS:-3.35}
peak_tflops=${PEAK_TFLOPS:-989.5}
new=${NEW:-256}
say() { echo "== $*"; }

say machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$out/gpu.txt"
nvcc --version | tail -n 1

say build
B=build/cuda-bench/build
. bench/gpu-build.sh || exit 1
for t in test_gpu_ops test_decode_ref; do
	cc $CF -o $B/tests/$t tests/unit/$t.c $B/libfm.a $L || exit 1
done
cc $CF -o $B/prefill_cuda bench/prefill_cuda.c $B/libfm.a $L || exit 1
nvcc -O2 -gencode arch=compute_90,code=sm_90 -o $B/hbm_read bench/hbm_read.cu || exit 1
echo ok

say "the read bandwidth this GPU reaches (the practical ceiling of decode)"
$B/hbm_read 2048

say tests
export FM_TOP=$top
$B/tests/test_gpu_ops >"$out/test_gpu_ops.log" 2>&1; echo "test_gpu_ops: status $?"
grep -E '^not ok|^# ' "$out/test_gpu_ops.log" | head -n 20
grep -E '^ok' "$out/test_gpu_ops.log" | grep -E 'attention|forward|greedy|logits|GPU' | head -n 30
$B/tests/test_decode_ref >"$out/test_decode_ref.log" 2>&1; echo "test_decode_ref: status $?"
for tool in memcheck racecheck; do
	timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 $B/tests/test_gpu_ops \
		>"$out/sanitizer-$tool.log" 2>&1
	echo "compute-sanitizer --tool $tool test_gpu_ops: status $?"
	grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|^not ok' "$out/sanitizer-$tool.log" | head -n 5
done

say "CPU and CUDA on stories260K"
S=models/stories260K.gguf
$B/fm-decode -m $S --temp 0 -n 200 --device cpu -p 'Once upon a time' >"$out/cpu.txt"
$B/fm-decode -m $S --temp 0 -n 200 --device cuda -p 'Once upon a time' -v >"$out/cuda.txt" 2>"$out/cuda.err"
cat "$out/cuda.err"
if cmp -s "$out/cpu.txt" "$out/cuda.txt"; then echo "same greedy text ($(wc -c <"$out/cpu.txt") bytes)"; else
	echo "greedy text DIFFERS"; diff "$out/cpu.txt" "$out/cuda.txt" | head -n 6; fi
$B/fm-decode -m $S --temp 0 -n 50 --device cpu --kv-type f32 -p 'Once upon a time' --trace "$out/cpu.jsonl" >/dev/null
$B/fm-decode -m $S --temp 0 -n 50 --device cuda --kv-type f32 -p 'Once upon a time' --trace "$out/cuda.jsonl" >/dev/null
python3 - "$out/cpu.jsonl" "$out/cuda.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
same = sum(x['next'] == y['next'] for x, y in zip(a, b))
worst = max(abs(p[1] - q[1]) for x, y in zip(a, b) for p, q in zip(x['top'], y['top']) if p[0] == q[0])
print('trace: %d positions, next token equal at %d, worst top-5 logit difference %.3g' % (len(a), same, worst))
PY

say "1B-class F16 model"
M=$B/random-1b-f16.gguf
[ -f $M ] || python3 scripts/make-random-llama.py -o $M --ctx 16384 --dim 2048 --layers 16 --heads 32 \
	--kv-heads 8 --ffn 8192 --type f16 2>&1
prompt='Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.'
for i in 1 2 3; do
	$B/fm-decode -m $M --device cuda --temp 0 -n "$new" -p "$prompt" -v 2>&1 >/dev/null |
		grep -E 'device|model|prefill|decode|gpu memory'
done >"$out/decode.txt"
cat "$out/decode.txt"
wb=$(sed -n 's/.*, \([0-9]*\) weight bytes per token$/\1/p' "$out/decode.txt" | head -n 1)
sed -n 's/^fm-decode: decode: .*, \([0-9.]*\) tokens\/s$/\1/p' "$out/decode.txt" | sort -g |
	awk -v wb="$wb" -v peak="$peak_tbs" '{ v[NR] = $1 } END { m = v[int((NR + 1) / 2)];
	    printf "decode median %.1f tokens/s; %.3f GB read per token; roofline %.1f tokens/s at %.2f TB/s; %.1f%% of it\n",
	    m, wb / 1e9, peak * 1e12 / wb, peak, 100 * m * wb / (peak * 1e12) }'

python3 -c "print('the' + ' the' * 4094, end='')" >"$out/prompt4k.txt"
for i in 1 2 3; do
	$B/fm-decode -m $M --device cuda --temp 0 -n 1 -f "$out/prompt4k.txt" -v 2>&1 >/dev/null |
		grep -E 'prefill'
done >"$out/prefill.txt"
cat "$out/prefill.txt"
sed -n 's/^fm-decode: prefill: \([0-9]*\) tokens in \([0-9.]*\) s.*/\1 \2/p' "$out/prefill.txt" | sort -k2 -g |
	awk -v peak="$peak_tflops" 'NR == 2 { n = $1; t = $2 }
	END { if (n == 0) exit; p = 2 * (16 * (2048 * 2048 * 2 + 2 * 2048 * 512 + 3 * 2048 * 8192)) * n;
	    a = 16 * 32 * 64 * 4 * n * n / 2;
	    printf "prefill median of 3: %d tokens in %.4f s: %.0f tokens/s, %.1f TFLOP/s (GEMMs %.2f + attention %.2f TFLOP), %.1f%% of %.1f dense FP16\n",
	    n, t, n / t, (p + a) / t / 1e12, p / 1e12, a / 1e12, 100 * (p + a) / t / 1e12 / peak, peak }'

# The same prefill in a warm process: fm-decode -v above pays the one-time costs.
$B/prefill_cuda $M 4096 6 | tail -n 1 | sed 's/^/warm prefill, 4096 tokens: /'
$B/prefill_cuda $M 16384 4 | tail -n 1 | sed 's/^/warm prefill, 16384 tokens: /'

# Decode far into the context, where attention reads the most keys: 3968 prompt tokens, 128 new.
python3 -c "print('the' + ' the' * 3966, end='')" >"$out/prompt4k-128.txt"
$B/fm-decode -m $M --device cuda --temp 0 -n 128 -f "$out/prompt4k-128.txt" -v 2>&1 >/dev/null |
	grep -E 'prefill|decode' | sed 's/^/at 4K context: /'

say "kernel times of a decode step (ncu, the GPU's own clocks)"
B=$B timeout 200 sh bench/decode-profile.sh 2>&1 | grep -v '^fm-decode' | tail -n 14

say "PyTorch on the same weights"
if python3 -c 'import torch' 2>/dev/null; then
	timeout 300 python3 bench/torch-llama.py $M "$new" 2>&1 | tail -n 8
else
	echo "PyTorch is not installed here"
fi

[ -n "${OUT:-}" ] && cp "$out/build.log" "$out/test_gpu_ops.log" "$out/sanitizer-memcheck.log" \
	"$out/sanitizer-racecheck.log" "$out/test_decode_ref.log" "$out/ncu.txt" "$OUT/" 2>/dev/null
exit 0
