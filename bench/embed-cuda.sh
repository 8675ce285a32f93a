#!/bin/sh
# embed-cuda.sh - on a GPU machine: fm-embed's CUDA encoder against
# sentence-transformers (fp16, on the same GPU) with the same weights on the
# same texts, in the same run.  The model is the random MiniLM-shaped BERT
# of test_bert (384 dims, 12 heads, FFN 1536) with its 6 blocks repeated to
# LAYERS (12); the texts are CHUNKS (100000) lines of whole-word pieces, 64
# to 256 encoder tokens each ([CLS] and [SEP] included).  Both sides
# tokenize the text themselves and the time counts it: fm-embed's -v
# tokens/s (after the model is on the GPU), sentence-transformers' encode()
# (after the model is built), each RUNS (3) times; then the fraction of the
# H100's dense fp16 tensor-core peak (989.5 TFLOP/s) that each reaches,
# counting 2 x (4 d^2 + 2 d f) per token and layer plus attention's 4 L d.
#
# Builds like bench/gpu-check.sh (into build/gpu-check, without
# libarchive) unless that build is there.  Prints a markdown table.
#
# usage: bench/embed-cuda.sh
# env:   CHUNKS, RUNS, LAYERS, BATCHES (fm batch sizes to try once each
#        besides the default: "8192 32768"), REBUILD=1, BUILD_ONLY=1,
#        DEVICE (cuda; cpu for a dry run of the fm side on a machine without GPU)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export PATH="/usr/local/cuda/bin:$PATH" FM_TOP=$top
B=build/gpu-check
chunks=${CHUNKS:-100000}
runs=${RUNS:-3}
layers=${LAYERS:-12}
peak=989.5e12

if [ ! -x $B/fm-embed ] || [ ! -x $B/tests/test_bert ] || [ "${REBUILD:-0}" = 1 ]; then
	mkdir -p $B/obj $B/tests
	blas=-lopenblas
	ldconfig -p | grep -q 'libopenblas\.so' || blas="-L$top/.devlibs -Wl,--disable-new-dtags,-rpath,$top/.devlibs -lopenblas"
	L="-L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64 $blas -lm -lpthread -lcublas -lcudart_static -ldl -lrt -lstdc++"
	CF="-Icommon -D_GNU_SOURCE -DFM_CUDA=1 -O2 -g"
	for k in kernels/*.cu; do
		nvcc -O2 -g -std=c++17 -gencode arch=compute_90,code=sm_90 -Icommon -DFM_CUDA=1 \
			-c -o $B/obj/cu_$(basename $k .cu).o $k &
	done
	for s in common/*.c; do
		case $s in common/docsource.c|common/chunker.c) continue ;; esac
		cc $CF -c -o $B/obj/$(basename $s .c).o $s &
	done
	wait
	rm -f $B/libfm.a && ar rcs $B/libfm.a $B/obj/*.o
	cc $CF -o $B/fm-embed tools/fm-embed.c $B/libfm.a $L
	cc $CF -o $B/tests/test_bert tests/unit/test_bert.c $B/libfm.a $L
fi
[ "${BUILD_ONLY:-0}" = 1 ] && exit 0

d=$B/embed-bench
mkdir -p $d
$B/tests/test_bert --write-gguf $d/rb6.gguf
python3 bench/st_bench.py layers $d/rb6.gguf "$layers" $d/rb.gguf
ntok=$(python3 bench/st_bench.py texts $d/rb.gguf "$chunks" $d/texts.txt)
echo "model: $layers layers; texts: $chunks lines, $ntok encoder tokens, $(wc -c <$d/texts.txt) bytes"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
fm_run() { # env... : prints tokens/s and GFLOP/s
	"$@" $B/fm-embed --queries -m $d/rb.gguf --device "${DEVICE:-cuda}" -v -o $d/fm.fme $d/texts.txt 2>$d/fm.err ||
		{ cat $d/fm.err >&2; exit 1; }
	grep -E 'device|tokens/s' $d/fm.err >&2
	sed -n 's/.*: \([0-9.]*\) tokens\/s, \([0-9.]*\) GFLOP\/s.*/\1 \2/p' $d/fm.err
}
fm_run env >/dev/null 2>&1   # warm-up: the GPU's clocks, the file cache
for bt in ${BATCHES:-8192 32768}; do
	echo "fm batch $bt: $(fm_run env FM_EMBED_BATCH_TOKENS=$bt 2>/dev/null)"
done
: >$d/fm.rates
i=0
while [ $i -lt "$runs" ]; do
	fm_run env >>$d/fm.rates
	i=$((i + 1))
done
cat $d/fm.rates | sed 's/^/fm run: tokens\/s GFLOP\/s /'
fm=$(cut -d' ' -f1 $d/fm.rates | median)
fmg=$(cut -d' ' -f2 $d/fm.rates | median)
PYTHONUNBUFFERED=1 python3 bench/st_bench.py bench $d/rb.gguf $d/texts.txt --runs "$runs" \
	--fm-list $B/fm-embed $d/fm.fme | tee $d/st.out
st=$(sed -n 's/^st median: \([0-9.]*\) tokens.*/\1/p' $d/st.out)

echo
echo "| encoder | tokens/s (median of $runs) | TFLOP/s | fraction of 989.5 TFLOP/s | vs sentence-transformers |"
echo "|---|---|---|---|---|"
# FLOPs per token from fm's own count (its GFLOP/s over its tokens/s), the same for both sides.
awk -v fm="$fm" -v fmg="$fmg" -v st="$st" -v peak=$peak 'BEGIN {
	fpt = fmg * 1e9 / fm
	printf "| fm-embed --device cuda | %.0f | %.1f | %.1f %% | %.2fx |\n", fm, fm * fpt / 1e12, 100 * fm * fpt / peak, fm / st
	printf "| sentence-transformers fp16 | %.0f | %.1f | %.1f %% | 1.00x |\n", st, st * fpt / 1e12, 100 * st * fpt / peak
	printf "\n%.1f MFLOP per token\n", fpt / 1e6 }'
