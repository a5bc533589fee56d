# gptvq - plain Makefile. Targets:
#   make            library + CLI ($(B)/gptvq)
#   make test       fixtures, then unit/integration tests (optimised) + reader/tokenizer tests under ASan/UBSan
#   make fuzz       libFuzzer targets (clang)
#   make bench      benchmark binaries
CC      ?= gcc
CLANG   ?= clang
B       ?= build
BA      ?= build-asan
OPT     ?= -O2
# -ffp-contract=off: no fused multiply-adds the source does not ask for (gcc's
# ISO C mode default; clang's is "on"): quantized values must round exactly as
# the readers' dequantization (GGUF blocks, packed VQ) does.
CFLAGS  ?= $(OPT) -g -std=c11 -D_GNU_SOURCE -ffp-contract=off -Wall -Wextra -Wno-unused-parameter -fopenmp -Iinclude -Isrc
LDLIBS  := -lopenblas -llapacke -lpcre2-8 -lcjson -lm -fopenmp
ASAN    := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# Open MPI (mpirun -np N gptvq quantize): built in when mpicc is found
# (MPI=0: not); without it every run is one process (src/util/dist.c).
MPICC   ?= $(shell command -v mpicc 2>/dev/null)
MPI     ?= $(if $(MPICC),1,0)
ifeq ($(MPI),1)
CFLAGS  += -DGQ_MPI $(shell $(MPICC) --showme:compile)
LDLIBS  += $(shell $(MPICC) --showme:link)
endif

SRC     := $(sort $(wildcard src/*/*.c))
OBJ     := $(SRC:%.c=$(B)/%.o)
# CUDA plug-in $(B)/libgptvq_cuda.so (src/backend/cu_*.cu behind the C
# interface cuda_kernels.h), loaded by
# src/backend/cuda.c on --device cuda: built when nvcc is found (CUDA=0: not).
# Nothing else links a CUDA library.
CUDA    ?= $(if $(NVCC),1,0)
NVCC    ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc))
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
# -fmad=false: no fused multiply-adds, as the C code (ISO C mode: no FP
# contraction), so device and CPU VQ arithmetic round the same way.
NVFLAGS ?= -O2 -std=c++17 -fmad=false -Xcompiler -fPIC -gencode arch=compute_80,code=sm_80 \
           -gencode arch=compute_90,code=[sm_90,compute_90]
CUDA_SO := $(if $(filter 1,$(CUDA)),$(B)/libgptvq_cuda.so)
# NCCL (several ranks with --device cuda: cu_nccl.cu) when nccl.h is found
# beside CUDA or in /usr(/local)/include (NCCL=0: the plug-in says it lacks it).
NCCL_H  := $(firstword $(wildcard $(CUDA_HOME)/include/nccl.h /usr/local/include/nccl.h /usr/include/nccl.h))
NCCL    ?= $(if $(NCCL_H),1,0)
ifeq ($(NCCL),1)
NVFLAGS += -DGQ_NCCL -I$(dir $(NCCL_H))
NCCL_LIB := -lnccl
endif
AOBJ    := $(SRC:%.c=$(BA)/%.o)
TESTS   := $(sort $(wildcard tests/test_*.c))
TBIN    := $(TESTS:tests/%.c=$(B)/tests/%)
# Tests that also run under AddressSanitizer + UBSan (readers and tokenizers).
ASAN_TESTS := test_gguf test_gguf_write test_readers test_tokenizer test_fuzz_replay
ATBIN   := $(ASAN_TESTS:%=$(BA)/tests/%)
FUZZ    := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FBIN    := $(FUZZ:tests/fuzz/%.c=$(B)/fuzz/%)
BENCH   := $(sort $(wildcard bench/*.c))
BBIN    := $(BENCH:bench/%.c=$(B)/bench/%)

all: $(B)/gptvq $(CUDA_SO)

$(B)/%.o: %.c $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

CU_SRC  := $(sort $(wildcard src/backend/cu_*.cu))
CU_OBJ  := $(CU_SRC:%.cu=$(B)/%.o)
$(B)/src/backend/cu_%.o: src/backend/cu_%.cu src/backend/cu_common.cuh src/backend/cuda_kernels.h src/backend/vqform.h src/util/bits.h src/util/hostdev.h
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(B)/libgptvq_cuda.so: $(CU_OBJ)
	$(NVCC) $(NVFLAGS) -shared $^ -o $@ -L$(CUDA_HOME)/lib64 -Xlinker -rpath,$(CUDA_HOME)/lib64 -lcusolver -lcublas -lcudart $(NCCL_LIB)

$(BA)/%.o: %.c $(wildcard include/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -O1 $(ASAN) -c $< -o $@

$(B)/libgptvq.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BA)/libgptvq.a: $(AOBJ)
	@rm -f $@
	ar rcs $@ $^

TOOL_SRC = tools/gptvq.c tools/eval_cmds.c

$(B)/gptvq: $(TOOL_SRC) tools/cli.h $(B)/libgptvq.a
	$(CC) $(CFLAGS) -Itests $(TOOL_SRC) $(B)/libgptvq.a $(LDLIBS) -o $@

$(BA)/gptvq: $(TOOL_SRC) tools/cli.h $(BA)/libgptvq.a
	$(CC) $(CFLAGS) -Itests -O1 $(ASAN) $(TOOL_SRC) $(BA)/libgptvq.a $(LDLIBS) -o $@

$(B)/tests/%: tests/%.c $(wildcard tests/*.h) $(B)/libgptvq.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< $(B)/libgptvq.a $(LDLIBS) -o $@

$(BA)/tests/%: tests/%.c $(wildcard tests/*.h) $(BA)/libgptvq.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -O1 $(ASAN) $< $(BA)/libgptvq.a $(LDLIBS) -o $@

$(B)/fuzz/%: tests/fuzz/%.c $(SRC)
	@mkdir -p $(dir $@)
	$(CLANG) -O1 -g -std=c11 -D_GNU_SOURCE -Iinclude -Isrc -fopenmp -fsanitize=fuzzer,address,undefined $< $(SRC) $(LDLIBS) -o $@

$(B)/bench/%: bench/%.c $(wildcard bench/*.h) $(B)/libgptvq.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $< $(B)/libgptvq.a $(LDLIBS) -o $@

tests: $(TBIN) $(ATBIN) $(B)/gptvq $(BA)/gptvq $(CUDA_SO)
test: tests
	bash tests/setup_fixtures.sh
	B=$(B) BA=$(BA) bash tests/run.sh
fuzz: $(FBIN)
bench: $(BBIN) $(B)/gptvq

clean:
	rm -rf $(B) $(BA)

.PHONY: all test tests fuzz bench clean
.SECONDARY:
