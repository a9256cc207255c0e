# descent: one non-recursive Makefile.
#
#   make            build the daemon, the client library and the CLI into build/
#   make run        install missing Debian packages, build, start descentd (data in ./var)
#   make test       install missing packages, build, run every test (unit, ASan+UBSan, integration)
#   make check-asan unit and integration tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench      benchmarks (ratios measured side by side in one run)
#   make fuzz       libFuzzer targets, each for a bounded time (tests/fuzz/README.md)
#   make check-valgrind  every integration module with descentd under valgrind
#   make demo       the seed's road trip on Fashion-MNIST
#   V=1             show the commands

B        ?= build
SAN      ?= 0
CC       ?= cc
V        ?= 0
Q        := $(if $(filter 1,$(V)),,@)
PKG      := pkg-config

PKGS_SERVER := libmicrohttpd jansson libuv zlib
PKGS_CLIENT := libcurl jansson
PKGS_TEST   := check

WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
STD      := -std=c11 -D_GNU_SOURCE -ffp-contract=off
OPT      ?= -O2 -g
SAN_ON   := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
SANFLAGS := $(if $(filter 1,$(SAN)),$(SAN_ON))
CFLAGS_ALL = $(STD) $(OPT) $(WARN) $(SANFLAGS) -MMD -MP -Iserver -Iclient
LDFLAGS_ALL = $(SANFLAGS)

pc_cflags = $(shell $(PKG) --cflags $(1) 2>/dev/null)
pc_libs   = $(shell $(PKG) --libs $(1) 2>/dev/null)

# ---- sources -------------------------------------------------------------
SERVER_MAIN := server/main.c
SERVER_SRC  := $(filter-out $(SERVER_MAIN),$(wildcard server/*.c))
CLIENT_LIB_SRC := $(wildcard client/lib/*.c)
CLI_SRC     := client/cli/descent.c
UNIT_SRC    := $(wildcard tests/unit/*.c)

OBJ := $(B)/obj
SERVER_ASM  := $(wildcard server/*.S)
SERVER_OBJ := $(SERVER_SRC:%.c=$(OBJ)/%.o) $(SERVER_ASM:%.S=$(OBJ)/%.o)
CLIENT_OBJ := $(CLIENT_LIB_SRC:%.c=$(OBJ)/%.o)
CLIENT_PIC := $(CLIENT_LIB_SRC:%.c=$(OBJ)/pic/%.o)
UNIT_OBJ   := $(UNIT_SRC:%.c=$(OBJ)/%.o)

CORE_LIB   := $(B)/lib/libdescentd.a
DAEMON     := $(B)/bin/descentd
CLI        := $(B)/bin/descent
LIB_A      := $(B)/lib/libdescent.a
LIB_SO     := $(B)/lib/libdescent.so
UNIT_BIN   := $(B)/tests/unit

SERVER_CFLAGS = $(call pc_cflags,$(PKGS_SERVER))
SERVER_LIBS   = $(call pc_libs,$(PKGS_SERVER)) -lpthread -lm
CLIENT_CFLAGS = $(call pc_cflags,$(PKGS_CLIENT))
CLIENT_LIBS   = $(call pc_libs,$(PKGS_CLIENT)) -lm
TEST_CFLAGS   = $(call pc_cflags,$(PKGS_TEST))
TEST_LIBS     = $(call pc_libs,$(PKGS_TEST))

.PHONY: all deps deps-test demo-deps run test unit check-asan integration bench bench-kernels fuzz demo clean print-%
CLIENT_TARGETS := $(if $(CLIENT_LIB_SRC),$(LIB_A) $(LIB_SO)) $(if $(wildcard $(CLI_SRC)),$(CLI))
all: $(DAEMON) $(CLIENT_TARGETS)

# The kernels: vectorised, and only the fmaf() calls fused.
$(OBJ)/server/optim_kernels.o: OPT := -O3 -g -fno-math-errno -mprefer-vector-width=512

$(OBJ)/server/%.o: server/%.c
	@mkdir -p $(@D)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) $(SERVER_CFLAGS) -c $< -o $@

# Assembly blobs (the dashboard page, embedded with .incbin).
$(OBJ)/server/%.o: server/%.S
	@mkdir -p $(@D)
	$(if $(Q),@echo "  AS      $<")
	$(Q)$(CC) $(SANFLAGS) -c $< -o $@
$(OBJ)/server/dashboard_blob.o: server/dashboard.html

$(OBJ)/client/lib/%.o: client/lib/%.c
	@mkdir -p $(@D)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) $(CLIENT_CFLAGS) -fvisibility=hidden -c $< -o $@

$(OBJ)/pic/client/lib/%.o: client/lib/%.c
	@mkdir -p $(@D)
	$(if $(Q),@echo "  CC      $< (pic)")
	$(Q)$(CC) $(CFLAGS_ALL) $(CLIENT_CFLAGS) -fPIC -fvisibility=hidden -c $< -o $@

$(OBJ)/client/cli/%.o: client/cli/%.c
	@mkdir -p $(@D)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) $(CLIENT_CFLAGS) -c $< -o $@

$(OBJ)/tests/%.o: tests/%.c
	@mkdir -p $(@D)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) $(SERVER_CFLAGS) $(CLIENT_CFLAGS) $(TEST_CFLAGS) -c $< -o $@

$(OBJ)/bench/%.o: bench/%.c
	@mkdir -p $(@D)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) $(SERVER_CFLAGS) $(CLIENT_CFLAGS) -c $< -o $@

$(CORE_LIB): $(SERVER_OBJ)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(DAEMON): $(OBJ)/server/main.o $(CORE_LIB)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(SERVER_LIBS) -o $@

$(LIB_A): $(CLIENT_OBJ)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIB_SO): $(CLIENT_PIC) client/libdescent.map
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) -shared $(LDFLAGS_ALL) -Wl,--version-script=client/libdescent.map -Wl,-soname,libdescent.so $(CLIENT_PIC) $(CLIENT_LIBS) -o $@

# ---- client: the descent CLI and the libdescent tests (tests/client/) -------
#   make client-test    builds tests/client/ against libdescent.a and runs it:
#                       Check suites that start real daemons on port 0
CLI_OBJ         := $(patsubst %.c,$(OBJ)/%.o,$(wildcard client/cli/*.c))
CLIENT_TEST_SRC := $(wildcard tests/client/*.c)
CLIENT_TEST_BIN := $(B)/tests/client_test

$(CLI): $(CLI_OBJ) $(LIB_A)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(CLIENT_LIBS) -o $@

$(CLIENT_TEST_BIN): $(CLIENT_TEST_SRC:%.c=$(OBJ)/%.o) $(LIB_A)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(CLIENT_LIBS) $(TEST_LIBS) -lpthread -o $@

.PHONY: client-test
client-test: $(CLIENT_TEST_BIN) $(DAEMON)
	$(Q)DESCENTD=$(DAEMON) $(CLIENT_TEST_BIN)

$(UNIT_BIN): $(UNIT_OBJ) $(CORE_LIB) $(if $(CLIENT_LIB_SRC),$(LIB_A))
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(SERVER_LIBS) $(CLIENT_LIBS) $(TEST_LIBS) -o $@

# ---- the road trip demo (issue: Fashion-MNIST through descent) ----------------
DEMO_WORKER := $(B)/bin/fmnist_worker
DEMO_OBJ := $(OBJ)/client/examples/fmnist.o $(OBJ)/client/examples/fmnist_worker.o

$(OBJ)/client/examples/%.o: client/examples/%.c
	@mkdir -p $(@D)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) -O3 $(CLIENT_CFLAGS) -c $< -o $@

$(DEMO_WORKER): $(DEMO_OBJ) $(LIB_A)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(CLIENT_LIBS) -lz -o $@

demo-deps: deps
	$(Q)[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || { \
	  echo "demo: installing dataset-fashion-mnist"; \
	  SUDO=$$( [ "$$(id -u)" -ne 0 ] && echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; }

# DEMO_ARGS=--quick runs a shortened road trip (the test does that).
demo: demo-deps
	$(Q)$(MAKE) --no-print-directory $(DAEMON) $(DEMO_WORKER)
	$(Q)DESCENT_BUILD=$(B) python3 client/examples/road_trip.py $(DEMO_ARGS)

# ---- benchmarks (bench/, docs/benchmarks.md) -------------------------------
#   make bench          builds into $(B) (-O2; the kernels -O3) and runs every
#                       benchmark, then prints the table of ratios that
#                       bench_report makes of $(B)/bench/results.tsv
#   make bench-kernels  the kernels, bandwidth and torch.optim only
#   BENCH_QUICK=1       fewer rounds and a shorter sweep (for trying changes)
#   BENCH_SVG=FILE      where the kernel plot goes (docs/benchmarks-kernels.svg
#                       for the doc); needs gnuplot (Debian: gnuplot-nox)
# The torch column runs when some python3 can import torch (Debian:
# python3-torch) and is skipped otherwise.
BENCH_DIR   := $(B)/bench
BENCH_OUT   := $(BENCH_DIR)/results.tsv
BENCH_SVG   ?= $(BENCH_DIR)/kernels.svg
BENCH_BINS  := $(addprefix $(BENCH_DIR)/,bench_kernels bench_wire bench_json bench_service bench_report)
TORCH_PY    ?= $(shell for p in python3 /usr/bin/python3; do $$p -c 'import torch' >/dev/null 2>&1 && { echo $$p; break; }; done)
BENCH_QUICK ?= 0
BQ           = $(filter 1,$(BENCH_QUICK))
BENCH_KARGS ?= $(if $(BQ),--rounds 5 --sweep-max 1e7,--rounds 50)
BENCH_TARGS ?= $(if $(BQ),--rounds 2 --default-rounds 1,--rounds 5 --default-rounds 2)
BENCH_SARGS ?= $(if $(BQ),--seconds 1,--seconds 3)

# The bandwidth streams are vectorised like the kernels they bound.
$(OBJ)/bench/bench_kernels.o: OPT := -O3 -g -fno-math-errno -mprefer-vector-width=512

$(BENCH_BINS): $(BENCH_DIR)/%: $(OBJ)/bench/%.o $(CORE_LIB)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(SERVER_LIBS) $(CLIENT_LIBS) -o $@

# The sharded step goes through libdescent.
$(BENCH_DIR)/bench_shards: $(OBJ)/bench/bench_shards.o $(LIB_A)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(CLIENT_LIBS) -o $@

define BENCH_KERNELS_RUN
	$(Q)$(BENCH_DIR)/bench_kernels --out $(BENCH_OUT) --sweep $(BENCH_DIR)/sweep.dat $(BENCH_KARGS)
	$(Q)$(if $(TORCH_PY),$(TORCH_PY) bench/bench_torch.py --out $(BENCH_OUT) --sweep $(BENCH_DIR)/torch_sweep.dat $(BENCH_TARGS),echo "torch: not installed (apt-get install python3-torch); column skipped")
	$(Q)if command -v gnuplot >/dev/null 2>&1; then \
	  gnuplot -e "data='$(BENCH_DIR)/sweep.dat'; torch='$$([ -s $(BENCH_DIR)/torch_sweep.dat ] && echo $(BENCH_DIR)/torch_sweep.dat)'; out='$(BENCH_SVG)'" bench/kernels.gp && echo "plot: $(BENCH_SVG)"; \
	else echo "plot: skipped (apt-get install gnuplot-nox)"; fi
endef

bench-kernels: $(BENCH_DIR)/bench_kernels $(BENCH_DIR)/bench_report
	@rm -f $(BENCH_OUT) $(BENCH_DIR)/torch_sweep.dat
	$(BENCH_KERNELS_RUN)
	$(Q)$(BENCH_DIR)/bench_report $(BENCH_OUT)

bench: $(DAEMON) $(BENCH_BINS) $(BENCH_DIR)/bench_shards
	@rm -f $(BENCH_OUT) $(BENCH_DIR)/torch_sweep.dat
	$(BENCH_KERNELS_RUN)
	$(Q)$(BENCH_DIR)/bench_wire --daemon $(DAEMON) --out $(BENCH_OUT)
	$(Q)$(BENCH_DIR)/bench_json --out $(BENCH_OUT)
	$(Q)$(BENCH_DIR)/bench_service --daemon $(DAEMON) --out $(BENCH_OUT) $(BENCH_SARGS)
	$(Q)$(BENCH_DIR)/bench_shards --daemon $(DAEMON) --out $(BENCH_OUT)
	$(Q)$(BENCH_DIR)/bench_report $(BENCH_OUT)

# ---- set-up ----------------------------------------------------------------
deps:
	$(Q)tests/tools/deps.sh

deps-test:
	$(Q)tests/tools/deps.sh test

run: deps
	$(Q)$(MAKE) --no-print-directory all
	@mkdir -p var
	exec $(DAEMON) --data-dir ./var

# ---- tests -----------------------------------------------------------------
unit: $(UNIT_BIN)
	$(Q)cd tests && ../$(UNIT_BIN)

integration: all $(DEMO_WORKER)
	$(Q)DESCENT_BUILD=$(B) python3 tests/integration/run.py

check-asan:
	$(Q)$(MAKE) --no-print-directory B=$(B)/asan SAN=1 OPT="-O1 -g" all $(B)/asan/tests/unit
	$(Q)cd tests && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ../$(B)/asan/tests/unit
	$(Q)DESCENT_BUILD=$(B)/asan ASAN_OPTIONS=detect_leaks=1 python3 tests/integration/run.py --quick

test: deps-test
	$(Q)$(MAKE) --no-print-directory all $(UNIT_BIN)
	$(Q)$(MAKE) --no-print-directory unit
	$(Q)$(MAKE) --no-print-directory client-test
	$(Q)$(MAKE) --no-print-directory integration
	$(Q)$(MAKE) --no-print-directory check-asan
	$(Q)$(MAKE) --no-print-directory fuzz-replay
	$(Q)$(MAKE) --no-print-directory check-valgrind-subset

# ---- fuzzing and valgrind (tests/fuzz/, check-valgrind) --------------------
# Every decoder of untrusted bytes has a libFuzzer target tests/fuzz/fuzz_NAME.c
# with its seeds in tests/fuzz/corpus/NAME/ (tests/fuzz/README.md lists them).
#   make fuzz           builds each target with clang (-fsanitize=fuzzer,address,
#                       undefined) into $(B)/fuzz/ and runs it for FUZZ_SECONDS
#                       (default 30) from the seeds; new inputs go to
#                       $(B)/fuzz/new/NAME/ (never into the committed corpus),
#                       crashes to $(B)/fuzz/crash/NAME/, and any crash fails.
#                       FUZZ_TARGETS="json float" runs only those.
#   make fuzz-replay    the same sources with tests/fuzz/replay.c's main, built
#                       with $(CC) under ASan+UBSan in $(B)/asan, fed every seed:
#                       a few seconds, part of `make test`.
#   make check-valgrind every integration module once with descentd under
#                       valgrind (non-sanitized $(B), DESCENT_QUICK=1): no leak,
#                       no error.
# `make test` runs fuzz-replay (~10 s once check-asan has built $(B)/asan) and
# check-valgrind-subset, not the whole check-valgrind: every module under
# valgrind takes 1.5 minutes on an idle 2-core machine and 4 when others
# build beside it, on top of a make test that already uses most of its
# ~10-minute budget.  VALGRIND_SUBSET (creation and every body kind, async
# pushes from many workers, state export/import and replacement: the paths
# that allocate and free the most) takes 20-50 s; `make check-valgrind` runs
# every module (and is what to run after touching memory ownership).
FUZZ_NAMES    := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS  ?= $(FUZZ_NAMES)
FUZZ_SECONDS  ?= 30
FUZZ_CLANG    ?= $(firstword $(shell command -v clang-14 clang 2>/dev/null) clang)
FUZZ_OUT      := $(B)/fuzz
FUZZ_CFLAGS   := $(STD) -O1 -g -Wall -Wextra -Wno-unused-parameter -fno-omit-frame-pointer \
                 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all \
                 -DDESCENT_NO_CLONES -Iserver -Itests/fuzz
FUZZ_CORE_OBJ := $(SERVER_SRC:%.c=$(FUZZ_OUT)/cobj/%.o) $(SERVER_ASM:%.S=$(FUZZ_OUT)/cobj/%.o)
FUZZ_BINS     := $(FUZZ_NAMES:%=$(FUZZ_OUT)/%)
REPLAY_BINS   := $(FUZZ_NAMES:%=$(B)/fuzz-replay/%)
VALGRIND_LOGS := $(abspath $(B))/valgrind
VALGRIND      := valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect \
                 --error-exitcode=99 --num-callers=30 --log-file=$(VALGRIND_LOGS)/%p.log
VALGRIND_SUBSET ?= test_api_basics test_async test_state

.PHONY: fuzz fuzz-build fuzz-replay fuzz-replay-bins check-valgrind check-valgrind-subset

$(FUZZ_OUT)/cobj/%.o: %.c
	@mkdir -p $(@D)
	$(if $(Q),@echo "  CLANG   $<")
	$(Q)$(FUZZ_CLANG) $(FUZZ_CFLAGS) -MMD -MP $(SERVER_CFLAGS) -c $< -o $@

$(FUZZ_OUT)/cobj/%.o: %.S
	@mkdir -p $(@D)
	$(Q)$(FUZZ_CLANG) -c $< -o $@

$(FUZZ_OUT)/cobj/server/dashboard_blob.o: server/dashboard.html

$(FUZZ_OUT)/libcore.a: $(FUZZ_CORE_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

$(FUZZ_BINS): $(FUZZ_OUT)/%: $(FUZZ_OUT)/cobj/tests/fuzz/fuzz_%.o $(FUZZ_OUT)/libcore.a
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(FUZZ_CLANG) -fsanitize=fuzzer,address,undefined $^ $(SERVER_LIBS) -o $@

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	$(Q)for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_OUT)/new/$$t $(FUZZ_OUT)/crash/$$t; \
	  dict=""; [ -f tests/fuzz/$$t.dict ] && dict="-dict=tests/fuzz/$$t.dict"; \
	  echo "  FUZZ    $$t ($(FUZZ_SECONDS)s)"; \
	  if ! $(FUZZ_OUT)/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	       -print_final_stats=1 $$dict -artifact_prefix=$(FUZZ_OUT)/crash/$$t/ \
	       $(FUZZ_OUT)/new/$$t tests/fuzz/corpus/$$t > $(FUZZ_OUT)/$$t.log 2>&1; then \
	    tail -n 60 $(FUZZ_OUT)/$$t.log; \
	    echo "fuzz: $$t failed; the input is in $(FUZZ_OUT)/crash/$$t/ (log: $(FUZZ_OUT)/$$t.log)"; \
	    exit 1; \
	  fi; \
	  grep -E '^stat::number_of_executed_runs|^#[0-9]+.*DONE' $(FUZZ_OUT)/$$t.log | tail -n 1; \
	done

# Replay: objects of the ASan+UBSan build ($(B)/asan, shared with check-asan).
fuzz-replay:
	$(Q)$(MAKE) --no-print-directory B=$(B)/asan SAN=1 OPT="-O1 -g" fuzz-replay-bins
	$(Q)for t in $(FUZZ_NAMES); do \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    $(B)/asan/fuzz-replay/$$t tests/fuzz/corpus/$$t || exit 1; \
	done

fuzz-replay-bins: $(REPLAY_BINS)

$(REPLAY_BINS): $(B)/fuzz-replay/%: $(OBJ)/tests/fuzz/fuzz_%.o $(OBJ)/tests/fuzz/replay.o $(CORE_LIB)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(SERVER_LIBS) -o $@

# valgrind writes to $(B)/valgrind/PID.log (the daemon's own log stays clean
# for the tests that read it); a daemon with errors also exits 99, failing
# its test, and every report with errors is printed at the end.
define VALGRIND_RUN
	@rm -rf $(VALGRIND_LOGS) && mkdir -p $(VALGRIND_LOGS)
	$(Q)DESCENT_BUILD=$(B) DESCENT_WRAPPER="$(VALGRIND)" python3 tests/integration/run.py --quick -j 2 $(1); \
	rc=$$?; bad=$$(grep -l 'ERROR SUMMARY: [1-9]' $(VALGRIND_LOGS)/*.log 2>/dev/null); \
	for f in $$bad; do echo "== $$f"; cat $$f; done; \
	echo "valgrind: $$(ls $(VALGRIND_LOGS) | wc -l) daemons, $$(echo $$bad | wc -w) with errors"; \
	[ $$rc -eq 0 ] && [ -z "$$bad" ]
endef

check-valgrind: all
	$(call VALGRIND_RUN,)

check-valgrind-subset: $(DAEMON)
	$(call VALGRIND_RUN,$(VALGRIND_SUBSET))

-include $(shell find $(FUZZ_OUT)/cobj -name '*.d' 2>/dev/null)
# ---- end of fuzzing and valgrind -------------------------------------------

clean:
	rm -rf build

print-%:
	@echo '$*=$($*)'

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
-include mk/bench-cluster.mk
