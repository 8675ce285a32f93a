#!/bin/sh
# gpu-build.sh - build fm's CUDA library and GPU-side tools on a GPU machine
# that may lack libarchive (only fm-chunk needs it) and OpenBLAS (a copy
# carried in .devlibs is used then).  Sourced by the GPU scripts: sets B
# (the build directory), CF (C flags) and L (link flags).
export PATH="/usr/local/cuda/bin:$PATH"
B=${B:-build/gpu-check}
mkdir -p $B/obj $B/tests
blas=-lopenblas
ldconfig -p | grep -q 'libopenblas\.so' || blas="-L$PWD/.devlibs -Wl,--disable-new-dtags,-rpath,$PWD/.devlibs -lopenblas"
L="-L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64 $blas -lm -lpthread -lcublas -lcudart_static -ldl -lrt -lstdc++"
CF="-Icommon -D_GNU_SOURCE -DFM_CUDA=1 -O2 -g"
export B CF
# Run from a script that built $B already (decode-cuda.sh runs
# decode-profile.sh), it builds nothing again.
[ "${FM_BUILT:-}" = "$B" ] && return 0
# In parallel; xargs fails when any compile does.
ls common/*.c | grep -v -e docsource.c -e chunker.c | xargs -P 16 -I{} sh -c \
	'cc $CF -c -o $B/obj/$(basename {} .c).o {}' || exit 1
ls kernels/*.cu | xargs -P 16 -I{} sh -c 'nvcc -O2 -g -std=c++17 -gencode arch=compute_90,code=sm_90 \
	-Icommon -DFM_CUDA=1 -c -o $B/obj/cu_$(basename {} .cu).o {}' || exit 1
rm -f $B/libfm.a && ar rcs $B/libfm.a $B/obj/*.o || exit 1
for t in fm-decode fm-select fm-index fm-embed; do
	cc $CF -o $B/$t tools/$t.c $B/libfm.a $L || exit 1
done
export FM_BUILT=$B
