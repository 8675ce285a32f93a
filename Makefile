# fm - Makefile.  `make` builds every tool into $(BUILD)/, with CUDA when nvcc
# is found (override with CUDA=0 or CUDA=1); `make check` runs the whole test
# suite, then again under ASan+UBSan; `make install PREFIX=... DESTDIR=...`.
# Nothing here probes the GPU: a CUDA build runs on machines without one.

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DESTDIR ?=
BUILD   ?= build

CC      ?= cc
NVCC    ?= nvcc
CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(shell command -v $(NVCC) 2>/dev/null)))
CUDA_ARCH ?= 90
CUDA    ?= $(if $(shell command -v $(NVCC) 2>/dev/null),1,0)

CFLAGS  ?= -O2 -g
WARN    = -Wall -Wextra -Wshadow -Wno-unused-parameter -Wvla -Werror=implicit-function-declaration
CPPFLAGS += -Icommon -D_GNU_SOURCE
LDLIBS  = -larchive -lopenblas -lm -lpthread
# SAN=address,undefined instruments compile and link, whatever CFLAGS says.
SAN     ?=
SANFLAGS = $(if $(SAN),-fsanitize=$(SAN) -fno-omit-frame-pointer -fno-sanitize-recover=all)

TOOLS   = $(patsubst tools/%.c,%,$(wildcard tools/fm-*.c))
LIB_SRC = $(wildcard common/*.c)
LIB_OBJ = $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
ifeq ($(CUDA),1)
CU_SRC  = $(wildcard kernels/*.cu)
LIB_OBJ += $(CU_SRC:%.cu=$(BUILD)/obj/%.o)
CPPFLAGS += -DFM_CUDA=1
LDLIBS  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart_static -ldl -lrt -lstdc++
NVFLAGS ?= -O2 -g -std=c++17 -gencode arch=compute_$(CUDA_ARCH),code=sm_$(CUDA_ARCH) -Icommon
endif
TEST_SRC = $(wildcard tests/unit/test_*.c)
TESTS   = $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC = $(wildcard tests/fuzz/fuzz_*.c)
REPLAYS = $(FUZZ_SRC:tests/fuzz/fuzz_%.c=$(BUILD)/tests/replay_%)
MAN1    = $(wildcard man/*.1)
MAN5    = $(wildcard man/*.5)
MAN7    = $(wildcard man/*.7)

all: $(TOOLS:%=$(BUILD)/%)

$(BUILD)/libfm.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/obj/%.o: %.c $(wildcard common/*.h)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(SANFLAGS) $(WARN) -c -o $@ $<

$(BUILD)/obj/%.o: %.cu $(wildcard common/*.h kernels/*.cuh)
	@mkdir -p $(@D)
	$(NVCC) $(NVFLAGS) -DFM_CUDA=1 -c -o $@ $<

$(BUILD)/fm-%: $(BUILD)/obj/tools/fm-%.o $(BUILD)/libfm.a
	$(CC) $(LDFLAGS) $(SANFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libfm.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $(SANFLAGS) -o $@ $^ $(LDLIBS)

# The libFuzzer harnesses, linked with a plain main() that replays a corpus.
$(BUILD)/tests/replay_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/replay.o $(BUILD)/libfm.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $(SANFLAGS) -o $@ $^ $(LDLIBS)

# The fault-injection library for the command-line tests (never sanitized:
# it is preloaded into sanitized and plain tools alike).
$(BUILD)/tests/libfault.so: tests/fault/fault.c
	@mkdir -p $(@D)
	$(CC) -O1 -g -fPIC -shared -o $@ $< -ldl

# libFuzzer builds (clang), for running a fuzzer by hand: make fuzz-gguf.
# Each harness is built from only the parser it exercises.
FUZZ_gguf_SRC      = common/gguf.c common/fm_error.c
FUZZ_chunkfile_SRC = common/chunkfile.c common/recstream.c common/checksum.c common/fm_error.c
FUZZ_indexfile_SRC = common/indexfile.c common/checksum.c common/gguf.c common/fm_error.c
FUZZ_embedfile_SRC = common/embedfile.c common/recstream.c common/checksum.c common/fm_error.c common/gguf.c
FUZZ_selection_SRC = common/lsa.c common/chunkfile.c common/recstream.c common/select.c common/gguf.c common/checksum.c common/fm_error.c -lopenblas
fuzz-%: tests/fuzz/fuzz_%.c
	@mkdir -p $(BUILD)/fuzz
	clang $(CPPFLAGS) -g -O1 -fsanitize=fuzzer,address,undefined -o $(BUILD)/fuzz/fuzz_$* \
		tests/fuzz/fuzz_$*.c $(FUZZ_$*_SRC) -lm -lpthread
	@echo "run: $(BUILD)/fuzz/fuzz_$* tests/fuzz/corpus/$*"

deps:
	@scripts/install-deps

check: deps
	@$(MAKE) --no-print-directory check-build
	@tests/run-all $(BUILD)
	@$(MAKE) --no-print-directory check-asan

check-build: all $(TESTS) $(REPLAYS) $(BUILD)/tests/libfault.so

# The same suite under AddressSanitizer and UndefinedBehaviorSanitizer (CPU build).
check-asan:
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/asan CUDA=0 CFLAGS="-O1 -g" SAN=address,undefined check-build
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 tests/run-all $(BUILD)/asan

# The main job on the bundled example (README quick start).
demo: deps
	@$(MAKE) --no-print-directory all
	@examples/run $(BUILD)

install: all
	mkdir -p $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7
	for t in $(TOOLS); do install -m 755 $(BUILD)/$$t $(DESTDIR)$(BINDIR)/$$t; done
	for m in $(MAN1); do install -m 644 $$m $(DESTDIR)$(MANDIR)/man1/; done
	for m in $(MAN5); do install -m 644 $$m $(DESTDIR)$(MANDIR)/man5/; done
	for m in $(MAN7); do install -m 644 $$m $(DESTDIR)$(MANDIR)/man7/; done

uninstall:
	for t in $(TOOLS); do rm -f $(DESTDIR)$(BINDIR)/$$t; done
	for m in $(notdir $(MAN1)); do rm -f $(DESTDIR)$(MANDIR)/man1/$$m; done
	for m in $(notdir $(MAN5)); do rm -f $(DESTDIR)$(MANDIR)/man5/$$m; done
	for m in $(notdir $(MAN7)); do rm -f $(DESTDIR)$(MANDIR)/man7/$$m; done

clean:
	rm -rf $(BUILD)

.PHONY: all deps check check-build check-asan demo install uninstall clean
.SECONDARY:
