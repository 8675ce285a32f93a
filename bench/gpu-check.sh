#!/bin/sh
# gpu-check.sh - on a GPU machine: build every CUDA path (without libarchive,
# which only fm-chunk needs), run the kernel tests plain and under
# compute-sanitizer, and compare the CPU and CUDA paths of fm-decode and
# fm-select end to end.  Results go to stdout; exit 1 if any check failed.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export FM_TOP=$top
fail=0
. bench/gpu-build.sh || exit 1
for t in test_gpu_ops test_select_gpu; do
	cc $CF -o $B/tests/$t tests/unit/$t.c $B/libfm.a $L || exit 1
	$B/tests/$t >$B/$t.log 2>&1 && echo "PASS $t ($(grep -c '^ok' $B/$t.log) checks)" || { echo "FAIL $t"; grep '^not ok' $B/$t.log | head; fail=1; }
	compute-sanitizer --tool memcheck --error-exitcode 9 $B/tests/$t >$B/$t.cs.log 2>&1 &&
		echo "PASS $t under compute-sanitizer memcheck" || { echo "FAIL $t under memcheck"; tail -5 $B/$t.cs.log; fail=1; }
done
m=models/stories260K.gguf
$B/fm-decode -m $m -n 200 --temp 0 -p "Once upon a time" --device cpu >$B/cpu.txt
$B/fm-decode -m $m -n 200 --temp 0 -p "Once upon a time" --device cuda -v >$B/cuda.txt 2>$B/cuda.err
cmp -s $B/cpu.txt $B/cuda.txt && echo "PASS fm-decode: greedy text equal on cpu and cuda ($(wc -c <$B/cpu.txt) bytes)" || { echo "FAIL fm-decode cpu vs cuda"; fail=1; }
grep device $B/cuda.err
# Every weight type through both paths: small random llamas (head 64, so the
# prefill takes the tensor-core attention; a tied one too), a prompt of
# about 700 tokens and 8 new, CPU against CUDA traces: the top logits of
# every position within 2% of the largest (the GPU's prefill GEMMs take
# F16/BF16 inputs), and how often the top token agrees (random weights give
# near ties, so this one is a count, not a test).
cat examples/docs/*.txt | head -c 3000 >$B/types-prompt.txt
for t in f32 f16 bf16 q8_0; do
	tied=; [ $t = f16 ] && tied=--tied
	python3 scripts/make-random-llama.py -o $B/small-$t.gguf --dim 256 --layers 2 --heads 4 \
		--kv-heads 2 --ffn 512 --type $t $tied >/dev/null || exit 1
	for dev in cpu cuda; do
		$B/fm-decode -m $B/small-$t.gguf --device $dev --temp 0 -n 8 -f $B/types-prompt.txt \
			--trace $B/small-$t.$dev.jsonl >/dev/null || fail=1
	done
	python3 - $B/small-$t.cpu.jsonl $B/small-$t.cuda.jsonl $t <<'PY2' || fail=1
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
span = max(abs(v) for x in a for _, v in x["top"])
worst = max(abs(p[1] - q[1]) for x, y in zip(a, b) for p, q in zip(x["top"], y["top"]))
same = sum(x["top"][0][0] == y["top"][0][0] for x, y in zip(a, b))
ok = len(a) == len(b) and worst <= 0.02 * span
print("%s fm-decode %s weights: %d positions, top-5 logits within %.3g of %.3g, top token equal at %d" %
      ("PASS" if ok else "FAIL", sys.argv[3], len(a), worst, span, same))
sys.exit(0 if ok else 1)
PY2
done
# LSA decode on the bundled stories (LSA_DATA: docs.fmc and docs.fmi made
# beforehand with fm-chunk -t stories260K -n 32, fm-embed, fm-index, and
# question.txt): the
# same text and the same resident sets on the CPU and CUDA, and the CUDA run
# under compute-sanitizer.
l=${LSA_DATA:-.lsabench}
if [ -f "$l/docs.fmi" ]; then
	lsa="-m $m -c $l/docs.fmc -i $l/docs.fmi -f $l/question.txt --budget 30% --interval 16 --temp 0 -n 120"
	$B/fm-decode $lsa --device cpu --audit $B/lsa.cpu.jsonl >$B/lsa.cpu.txt
	$B/fm-decode $lsa --device cuda --audit $B/lsa.cuda.jsonl -v >$B/lsa.cuda.txt 2>$B/lsa.cuda.err
	cmp -s $B/lsa.cpu.txt $B/lsa.cuda.txt && echo "PASS fm-decode LSA: greedy text equal on cpu and cuda ($(wc -c <$B/lsa.cpu.txt) bytes)" || { echo "FAIL fm-decode LSA cpu vs cuda"; diff $B/lsa.cpu.txt $B/lsa.cuda.txt | head -5; fail=1; }
	cmp -s $B/lsa.cpu.jsonl $B/lsa.cuda.jsonl && echo "PASS fm-decode LSA: the same resident sets in all $(wc -l <$B/lsa.cpu.jsonl) windows" || { echo "FAIL fm-decode LSA audits differ"; fail=1; }
	grep -E 'kv peak|lsa:' $B/lsa.cuda.err
	compute-sanitizer --tool memcheck --error-exitcode 9 --log-file $B/lsa.cs.log $B/fm-decode $lsa --device cuda >$B/lsa.cs.txt 2>$B/lsa.cs.err &&
		cmp -s $B/lsa.cpu.txt $B/lsa.cs.txt && echo "PASS fm-decode LSA on cuda under compute-sanitizer memcheck" || { echo "FAIL fm-decode LSA under memcheck"; tail -5 $B/lsa.cs.log; fail=1; }
	# --audit-attention on cuda: the GPU's queries, measured on the CPU, give the CPU's recall.
	$B/fm-decode $lsa --device cpu --audit-attention --stats-json $B/aa.cpu.json >/dev/null
	$B/fm-decode $lsa --device cuda --audit-attention --stats-json $B/aa.cuda.json >/dev/null
	python3 - $B/aa.cpu.json $B/aa.cuda.json <<'PY' || fail=1
import json, sys
a, b = (json.load(open(p))["attention_recall"] for p in sys.argv[1:3])
ok = abs(a - b) < 2e-3
print("%s fm-decode LSA --audit-attention: recall %.5f on cpu, %.5f on cuda" % ("PASS" if ok else "FAIL", a, b))
sys.exit(0 if ok else 1)
PY
	# The gate: --attention dense on cuda equals dense decoding of the same tokens.
	$B/fm-decode -m $m -c $l/docs.fmc -f $l/question.txt --attention dense --temp 0 -n 120 --device cuda >$B/gate.cuda.txt
	$B/fm-decode -m $m -c $l/docs.fmc -i $l/docs.fmi -f $l/question.txt --budget 100% --temp 0 -n 120 --device cuda >$B/full.cuda.txt
	cmp -s $B/gate.cuda.txt $B/full.cuda.txt && echo "PASS fm-decode LSA on cuda: a 100% budget gives the dense text" || { echo "FAIL LSA 100% vs dense on cuda"; fail=1; }
fi
# fm-select on an index made beforehand (GPU_CHECK_DATA: n.fmi, n16.fmi and
# n/questions.txt from bench/needle.py, fm-chunk, fm-embed and fm-index):
# the CPU and CUDA selections of every question, for several policies.
d=${GPU_CHECK_DATA:-.gpucheck}
if [ -f "$d/n.fmi" ]; then
	for ix in n.fmi n16.fmi; do
		for pol in "-k 8" "-k 200 --order score" "--threshold 0.3" "--budget 5%" "--pages 2" "-k 4 --sink 2 --recent 3"; do
			$B/fm-select $pol --device cpu $d/$ix <$d/n/questions.txt >$B/sel.cpu 2>&1
			$B/fm-select $pol --device cuda $d/$ix <$d/n/questions.txt >$B/sel.cuda 2>&1
			same=$(paste $B/sel.cpu $B/sel.cuda | awk -F'\t' '$1 == $4 && $2 == $5' | wc -l)
			echo "fm-select $ix $pol: $(wc -l <$B/sel.cpu) lines on cpu, $(wc -l <$B/sel.cuda) on cuda, $same with equal query and id"
		done
	done
fi
# --- fm-embed: the BERT encoder on CUDA ---------------------------------------
# The kernels against their CPU twins and the whole encoder against the CPU's
# and the PyTorch fixture (test_gpu_bert, which has test_bert beside it write
# the random BERT), plain and under compute-sanitizer; then fm-embed on cpu and
# cuda over the fixture's texts, the bundled documents' lines and longer cuts
# of them (up to the 512-token context): cosine >= 0.9999 for every vector,
# mean and CLS pooling.
for t in test_bert test_gpu_bert; do
	cc $CF -o $B/tests/$t tests/unit/$t.c $B/libfm.a $L || exit 1
done
t=test_gpu_bert
$B/tests/$t >$B/$t.log 2>&1 && echo "PASS $t ($(grep -c '^ok' $B/$t.log) checks)" || { echo "FAIL $t"; grep '^not ok' $B/$t.log | head; fail=1; }
grep -E 'cosine|MiB' $B/$t.log | sed 's/^/    /'
compute-sanitizer --tool memcheck --error-exitcode 9 $B/tests/$t >$B/$t.cs.log 2>&1 &&
	echo "PASS $t under compute-sanitizer memcheck" || { echo "FAIL $t under memcheck"; tail -5 $B/$t.cs.log; fail=1; }
$B/tests/test_bert --write-gguf $B/rb.gguf >/dev/null || exit 1
{
	cat $B/rb.gguf.txt examples/docs/*.txt
	for n in 300 700 1500 2500 4000; do cat examples/docs/*.txt | tr '\n' ' ' | cut -c1-$n; done
} >$B/eq.txt
for p in mean cls; do
	if $B/fm-embed --queries -m $B/rb.gguf --pooling $p --device cpu -o $B/e.cpu.fme $B/eq.txt &&
	    $B/fm-embed --queries -m $B/rb.gguf --pooling $p --device cuda -v -o $B/e.cuda.fme $B/eq.txt 2>$B/e.cuda.err &&
	    $B/fm-embed --list --full $B/e.cpu.fme >$B/e.cpu.jsonl && $B/fm-embed --list --full $B/e.cuda.fme >$B/e.cuda.jsonl; then
		python3 - $B/e.cpu.jsonl $B/e.cuda.jsonl $p <<'PY' || fail=1
import json, math, sys
a = [json.loads(l)["vec"] for l in open(sys.argv[1])]
b = [json.loads(l)["vec"] for l in open(sys.argv[2])]
cs = [sum(x * y for x, y in zip(u, v)) / math.sqrt(sum(x * x for x in u) * sum(y * y for y in v))
      for u, v in zip(a, b) if any(u) and any(v)]
ok = len(a) == len(b) and all(any(u) == any(v) for u, v in zip(a, b)) and min(cs) >= 0.9999
print("%s fm-embed %s pooling: %d vectors on cpu and cuda, worst cosine %.7f" %
      ("PASS" if ok else "FAIL", sys.argv[3], len(a), min(cs)))
sys.exit(0 if ok else 1)
PY
	else
		echo "FAIL fm-embed $p pooling on cpu or cuda"; cat $B/e.cuda.err; fail=1
	fi
done
grep -E 'device|truncated' $B/e.cuda.err
exit $fail
