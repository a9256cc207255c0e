# descent: one non-recursive Makefile.
#
#   make            build the daemon, the client library and the CLI into build/
#   make run        install missing Debian packages, build, start descentd (data in ./var)
#   make test       install missing packages, build, run every test (unit, ASan+UBSan, integration)
#   make check-asan unit and integration tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench      benchmarks (ratios measured side by side in one run)
#   make fuzz       libFuzzer targets, each for a bounded time
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

.PHONY: all deps run test unit check-asan integration bench bench-kernels fuzz demo clean print-%
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

$(CLI): $(OBJ)/client/cli/descent.o $(LIB_A)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(CLIENT_LIBS) -o $@

$(UNIT_BIN): $(UNIT_OBJ) $(CORE_LIB) $(if $(CLIENT_LIB_SRC),$(LIB_A))
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(SERVER_LIBS) $(CLIENT_LIBS) $(TEST_LIBS) -o $@

# ---- set-up ----------------------------------------------------------------
deps:
	$(Q)tests/tools/deps.sh

run: deps
	$(Q)$(MAKE) --no-print-directory all
	@mkdir -p var
	exec $(DAEMON) --data-dir ./var

# ---- tests -----------------------------------------------------------------
unit: $(UNIT_BIN)
	$(Q)cd tests && ../$(UNIT_BIN)

integration: all
	$(Q)DESCENT_BUILD=$(B) python3 tests/integration/run.py

check-asan:
	$(Q)$(MAKE) --no-print-directory B=$(B)/asan SAN=1 OPT="-O1 -g" all $(B)/asan/tests/unit
	$(Q)cd tests && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ../$(B)/asan/tests/unit
	$(Q)DESCENT_BUILD=$(B)/asan ASAN_OPTIONS=detect_leaks=1 python3 tests/integration/run.py --quick

test: deps
	$(Q)$(MAKE) --no-print-directory all $(UNIT_BIN)
	$(Q)$(MAKE) --no-print-directory unit
	$(Q)$(MAKE) --no-print-directory integration
	$(Q)$(MAKE) --no-print-directory check-asan

clean:
	rm -rf build

print-%:
	@echo '$*=$($*)'

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
