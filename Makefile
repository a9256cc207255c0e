# descent: one non-recursive Makefile.  This file is the build; the
# orchestration of benchmarks, fuzzing, valgrind and the demo lives in mk/*.mk.
#
#   make            build the daemon, the client library and the CLI into build/
#   make run        install missing Debian packages, build, start descentd (data in ./var);
#                   LISTEN=HOST:PORT picks the address (else DESCENT_LISTEN, else 127.0.0.1:8080)
#   make test       install missing packages, build, run every test (unit, client, integration,
#                   ASan+UBSan, ThreadSanitizer, fuzz corpora, a valgrind subset)
#   make check-asan unit and integration tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make check-tsan the daemon under ThreadSanitizer, against the concurrent integration modules
#   make check-openapi  proto/openapi.yaml against the OpenAPI 3.1 schema           mk/openapi.mk
#   make bench      benchmarks (ratios measured side by side in one run)      mk/bench.mk
#   make bench-cluster  scale-out over simulated hosts (network namespaces)    mk/bench-cluster.mk
#   make fuzz       libFuzzer targets, each for a bounded time                 mk/fuzz.mk
#   make check-valgrind  every integration module with descentd under valgrind mk/fuzz.mk
#   make demo       the road trip on Fashion-MNIST (report in build/demo/;     mk/demo.mk
#                   DEMO_REPORT=docs rewrites the committed docs/road-trip.*)
#   make install    PREFIX (/usr/local) and DESTDIR, as Debian packaging wants  mk/install.mk
#   V=1             show the commands

B        ?= build
SAN      ?= 0
CC       ?= cc
V        ?= 0
Q        := $(if $(filter 1,$(V)),,@)
PKG      := pkg-config

PKGS_SERVER := libmicrohttpd jansson libuv zlib raft
PKGS_CLIENT := libcurl jansson
PKGS_TEST   := check

WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
STD      := -std=c11 -D_GNU_SOURCE -ffp-contract=off
OPT      ?= -O2 -g
SAN_asan := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
SAN_tsan := -fsanitize=thread -fno-omit-frame-pointer -DDESCENT_NO_CLONES
SANFLAGS := $(if $(filter 1 asan,$(SAN)),$(SAN_asan),$(if $(filter tsan,$(SAN)),$(SAN_tsan)))
# Debug checks (lock-held assertions) are on in sanitizer builds.
DEBUG    := $(if $(SANFLAGS),-DDESCENT_DEBUG)

# The server's layers, lowest first; a file may include headers of its own
# layer and the layers before it (tests/tools/layers.sh checks it).
SERVER_LAYERS := base kernel state codec store http
SERVER_INC    := $(addprefix -Iserver/,$(SERVER_LAYERS)) -Iserver
CFLAGS_ALL = $(STD) $(OPT) $(WARN) $(SANFLAGS) $(DEBUG) -MMD -MP $(SERVER_INC) -Iclient
LDFLAGS_ALL = $(SANFLAGS)

, := ,
pc_cflags = $(shell $(PKG) --cflags $(1) 2>/dev/null)
pc_libs   = $(shell $(PKG) --libs $(1) 2>/dev/null)

SERVER_CFLAGS = $(call pc_cflags,$(PKGS_SERVER))
SERVER_LIBS   = $(call pc_libs,$(PKGS_SERVER)) -lpthread -lm
CLIENT_CFLAGS = $(call pc_cflags,$(PKGS_CLIENT))
CLIENT_LIBS   = $(call pc_libs,$(PKGS_CLIENT)) -lm
TEST_CFLAGS   = $(call pc_cflags,$(PKGS_TEST))
TEST_LIBS     = $(call pc_libs,$(PKGS_TEST))

# ---- sources ---------------------------------------------------------------
SERVER_MAIN    := server/main.c
SERVER_SRC     := $(filter-out $(SERVER_MAIN),$(wildcard server/*.c $(SERVER_LAYERS:%=server/%/*.c)))
SERVER_ASM     := $(wildcard $(SERVER_LAYERS:%=server/%/*.S))
CLIENT_LIB_SRC := $(wildcard client/lib/*.c)
CLI_SRC        := $(wildcard client/cli/*.c)
UNIT_SRC       := $(wildcard tests/unit/*.c)
CLIENT_TEST_SRC := $(wildcard tests/client/*.c)

OBJ        := $(B)/obj
objs        = $(patsubst %.S,$(OBJ)/%.o,$(patsubst %.c,$(OBJ)/%.o,$(1)))
SERVER_OBJ := $(call objs,$(SERVER_SRC) $(SERVER_ASM))
CLIENT_OBJ := $(call objs,$(CLIENT_LIB_SRC))
CLIENT_PIC := $(CLIENT_LIB_SRC:%.c=$(OBJ)/pic/%.o)

CORE_LIB   := $(B)/lib/libdescentd.a
DAEMON     := $(B)/bin/descentd
CLI        := $(B)/bin/descent
LIB_A      := $(B)/lib/libdescent.a
LIB_SO     := $(B)/lib/libdescent.so
UNIT_BIN   := $(B)/tests/unit
CLIENT_TEST_BIN := $(B)/tests/client_test

.PHONY: all deps deps-test run test unit client-test integration check-asan check-tsan check-layers clean print-%
all: $(DAEMON) $(LIB_A) $(LIB_SO) $(CLI)

# ---- compiling: one template ----------------------------------------------
# Every object comes from this rule; a directory adds its packages' flags.
$(OBJ)/server/%.o:       XFLAGS = $(SERVER_CFLAGS)
$(OBJ)/client/lib/%.o:   XFLAGS = $(CLIENT_CFLAGS) -fvisibility=hidden
$(OBJ)/pic/%.o:          XFLAGS = $(CLIENT_CFLAGS) -fPIC -fvisibility=hidden
$(OBJ)/client/%.o:       XFLAGS = $(CLIENT_CFLAGS)
$(OBJ)/tests/%.o:        XFLAGS = $(SERVER_CFLAGS) $(CLIENT_CFLAGS) $(TEST_CFLAGS)
$(OBJ)/bench/%.o:        XFLAGS = $(SERVER_CFLAGS) $(CLIENT_CFLAGS)
# The kernels: vectorised, and only the fmaf() calls fused.
$(OBJ)/server/kernel/optim_kernels.o $(OBJ)/server/kernel/optim_sparse.o: OPT := -O3 -g -fno-math-errno -mprefer-vector-width=512

$(OBJ)/%.o: %.c
	@mkdir -p $(@D)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) $(XFLAGS) -c $< -o $@

$(OBJ)/pic/%.o: %.c
	@mkdir -p $(@D)
	$(if $(Q),@echo "  CC      $< (pic)")
	$(Q)$(CC) $(CFLAGS_ALL) $(XFLAGS) -c $< -o $@

# Assembly blobs (the dashboard page, embedded with .incbin).
$(OBJ)/%.o: %.S
	@mkdir -p $(@D)
	$(if $(Q),@echo "  AS      $<")
	$(Q)$(CC) $(SANFLAGS) -c $< -o $@
$(OBJ)/server/http/dashboard_blob.o: server/http/dashboard.html

# ---- linking ---------------------------------------------------------------
# link(output, inputs, libs)
define link
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) $(1) $(2) -o $@
endef
define archive
	@mkdir -p $(@D)
	$(if $(Q),@echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^
endef

$(CORE_LIB): $(SERVER_OBJ)
	$(archive)
$(LIB_A): $(CLIENT_OBJ)
	$(archive)
$(DAEMON): $(OBJ)/server/main.o $(CORE_LIB)
	$(call link,$^,$(SERVER_LIBS))
$(LIB_SO): $(CLIENT_PIC) client/libdescent.map
	$(call link,-shared -Wl$(,)--version-script=client/libdescent.map -Wl$(,)-soname$(,)libdescent.so $(CLIENT_PIC),$(CLIENT_LIBS))
$(CLI): $(call objs,$(CLI_SRC)) $(LIB_A)
	$(call link,$^,$(CLIENT_LIBS))
$(CLIENT_TEST_BIN): $(call objs,$(CLIENT_TEST_SRC)) $(LIB_A)
	$(call link,$^,$(CLIENT_LIBS) $(TEST_LIBS) -lpthread)
$(UNIT_BIN): $(call objs,$(UNIT_SRC)) $(CORE_LIB) $(LIB_A)
	$(call link,$^,$(SERVER_LIBS) $(CLIENT_LIBS) $(TEST_LIBS))
include mk/demo.mk mk/demo-sparse.mk mk/bench.mk mk/fuzz.mk mk/openapi.mk mk/install.mk mk/python.mk mk/bench-cluster.mk

# ---- set-up ----------------------------------------------------------------
deps:
	$(Q)tests/tools/deps.sh

deps-test:
	$(Q)tests/tools/deps.sh test

LISTEN ?= $(or $(DESCENT_LISTEN),127.0.0.1:8080)
run: deps
	$(Q)$(MAKE) --no-print-directory all
	@mkdir -p var
	exec $(DAEMON) --data-dir ./var --listen $(LISTEN)

# ---- tests -----------------------------------------------------------------
unit: $(UNIT_BIN)
	$(Q)cd tests && ../$(UNIT_BIN)

client-test: $(CLIENT_TEST_BIN) $(DAEMON)
	$(Q)DESCENTD=$(DAEMON) $(CLIENT_TEST_BIN)

integration: all $(DEMO_WORKER)
	$(Q)DESCENT_BUILD=$(B) python3 tests/integration/run.py

# The layers as drawn in docs/architecture.md (and proof that the check can
# fail: the same files in the opposite order must be refused), and no long
# functions.
check-layers:
	$(Q)tests/tools/layers.sh $(SERVER_LAYERS)
	$(Q)! tests/tools/layers.sh $(shell echo $(SERVER_LAYERS) | tr ' ' '\n' | tac) >/dev/null 2>&1 || \
	  { echo "check-layers: the reversed order passed: the check cannot fail"; exit 1; }
	$(Q)python3 tests/tools/fnlength.py

# Under ASan every module runs but those whose daemon work the others already
# cover (the demo, the browser, torch's client-side math, install, documents).
ASAN_SKIP ?= test_demo,test_dashboard,test_torch_optim,test_torch_example,test_install,test_openapi_doc,test_openapi_check,test_py_docs,test_netns_cluster
check-asan:
	$(Q)$(MAKE) --no-print-directory B=$(B)/asan SAN=asan OPT="-O1 -g" all $(B)/asan/tests/unit
	$(Q)cd tests && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ../$(B)/asan/tests/unit
	$(Q)DESCENT_BUILD=$(B)/asan ASAN_OPTIONS=detect_leaks=1 python3 tests/integration/run.py --quick --skip $(ASAN_SKIP)

# ThreadSanitizer: the daemon (kernel clones off: TSan's runtime crashes on
# ifunc resolvers) against the modules whose requests run concurrently.
TSAN_MODULES ?= test_async test_sync test_longpoll test_idempotency test_durability test_history_check test_connections test_replicas_failover test_replicas_sync test_log test_log_faults
check-tsan:
	$(Q)$(MAKE) --no-print-directory B=$(B)/tsan SAN=tsan OPT="-O1 -g" all
	$(Q)DESCENT_BUILD=$(B)/tsan TSAN_OPTIONS="exitcode=66 second_deadlock_stack=1" \
	  python3 tests/integration/run.py --quick $(TSAN_MODULES)

test: deps-test
	$(Q)$(MAKE) --no-print-directory all $(UNIT_BIN) check-layers check-openapi
	$(Q)$(MAKE) --no-print-directory unit
	$(Q)$(MAKE) --no-print-directory client-test
	$(Q)$(MAKE) --no-print-directory integration
	$(Q)$(MAKE) --no-print-directory check-asan
	$(Q)$(MAKE) --no-print-directory check-tsan
	$(Q)$(MAKE) --no-print-directory fuzz-replay
	$(Q)$(MAKE) --no-print-directory check-valgrind-subset

clean:
	rm -rf build

print-%:
	@echo '$*=$($*)'

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
