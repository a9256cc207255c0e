# mk/fuzz.mk: fuzzing and valgrind (tests/fuzz/, check-valgrind), included by the Makefile.
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
                 -DDESCENT_NO_CLONES $(SERVER_INC) -Itests/fuzz
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

$(FUZZ_OUT)/cobj/server/http/dashboard_blob.o: server/http/dashboard.html

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
	$(Q)$(MAKE) --no-print-directory B=$(B)/asan SAN=asan OPT="-O1 -g" fuzz-replay-bins
	$(Q)for t in $(FUZZ_NAMES); do \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    $(B)/asan/fuzz-replay/$$t tests/fuzz/corpus/$$t || exit 1; \
	done

fuzz-replay-bins: $(REPLAY_BINS)

$(REPLAY_BINS): $(B)/fuzz-replay/%: $(OBJ)/tests/fuzz/fuzz_%.o $(OBJ)/tests/fuzz/replay.o $(CORE_LIB)
	$(call link,$^,$(SERVER_LIBS))

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
