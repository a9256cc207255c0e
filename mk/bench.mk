.PHONY: bench bench-kernels bench-sparse bench-durability
# mk/bench.mk: benchmarks (bench/, docs/benchmarks.md), included by the Makefile.
#   make bench          builds into $(B) (-O2; the kernels -O3) and runs every
#                       benchmark, then prints the table of ratios that
#                       bench_report makes of $(B)/bench/results.tsv
#   make bench-kernels  the kernels, bandwidth and torch.optim only
#   make bench-sparse   row pushes to sparse tensors only (bench_sparse, with
#                       torch's local sparse step in the same rounds through
#                       bench_sparse.py --serve)
#   make bench-durability  snapshot, log and three replicas (bench_durability)
#   BENCH_QUICK=1       fewer rounds and a shorter sweep (for trying changes)
#   BENCH_SVG=FILE      where the kernel plot goes (docs/benchmarks-kernels.svg
#                       for the doc); needs gnuplot (Debian: gnuplot-nox)
# The torch column runs when some python3 can import torch (Debian:
# python3-torch) and is skipped otherwise.
BENCH_DIR   := $(B)/bench
BENCH_OUT   := $(BENCH_DIR)/results.tsv
BENCH_SVG   ?= $(BENCH_DIR)/kernels.svg
BENCH_BINS  := $(addprefix $(BENCH_DIR)/,bench_kernels bench_wire bench_json bench_service bench_report bench_sparse bench_durability)
TORCH_PY    ?= $(shell for p in python3 /usr/bin/python3; do $$p -c 'import torch' >/dev/null 2>&1 && { echo $$p; break; }; done)
BENCH_QUICK ?= 0
BQ           = $(filter 1,$(BENCH_QUICK))
BENCH_KARGS ?= $(if $(BQ),--rounds 5 --sweep-max 1e7,--rounds 50)
BENCH_TARGS ?= $(if $(BQ),--rounds 2 --default-rounds 1,--rounds 5 --default-rounds 2)
BENCH_SARGS ?= $(if $(BQ),--seconds 1,--seconds 3)
BENCH_SPARGS ?= $(if $(BQ),--steps 30 --touch 2e5,--steps 100)
BENCH_DARGS ?= $(if $(BQ),--seconds 1 --sizes 1e3$(BENCH_COMMA)1e5,--seconds 3)
BENCH_COMMA := ,

# The bandwidth streams are vectorised like the kernels they bound.
$(OBJ)/bench/bench_kernels.o: OPT := -O3 -g -fno-math-errno -mprefer-vector-width=512
$(OBJ)/bench/bench_sparse.o: OPT := -O3 -g -fno-math-errno -mprefer-vector-width=512

$(BENCH_BINS): $(BENCH_DIR)/%: $(OBJ)/bench/%.o $(CORE_LIB)
	$(call link,$^,$(SERVER_LIBS) $(CLIENT_LIBS))

# The sharded step goes through libdescent.
$(BENCH_DIR)/bench_shards: $(OBJ)/bench/bench_shards.o $(LIB_A)
	$(call link,$^,$(CLIENT_LIBS))

define BENCH_SPARSE_RUN
	$(Q)$(if $(TORCH_PY),,echo "torch (sparse): not installed (apt-get install python3-torch); column skipped")
	$(Q)$(BENCH_DIR)/bench_sparse --daemon $(DAEMON) --out $(BENCH_OUT) $(BENCH_SPARGS) $(if $(TORCH_PY),--torch $(shell command -v $(TORCH_PY)))
endef

define BENCH_DURABILITY_RUN
	$(Q)$(BENCH_DIR)/bench_durability --daemon $(DAEMON) --out $(BENCH_OUT) --dir $(BENCH_DIR) $(BENCH_DARGS)
endef

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
	$(BENCH_SPARSE_RUN)
	$(BENCH_DURABILITY_RUN)
	$(Q)$(BENCH_DIR)/bench_report $(BENCH_OUT)
	$(Q)$(MAKE) --no-print-directory bench-python

bench-sparse: $(DAEMON) $(BENCH_DIR)/bench_sparse $(BENCH_DIR)/bench_report
	@rm -f $(BENCH_OUT)
	$(BENCH_SPARSE_RUN)
	$(Q)$(BENCH_DIR)/bench_report $(BENCH_OUT)

bench-durability: $(DAEMON) $(BENCH_DIR)/bench_durability $(BENCH_DIR)/bench_report
	@rm -f $(BENCH_OUT)
	$(BENCH_DURABILITY_RUN)
	$(Q)$(BENCH_DIR)/bench_report $(BENCH_OUT)

# The sparse row kernels alone (ns/row of coalesce and of each algorithm's
# apply, against a memory stream): make bench-sparse-kernels [SPARSE_ARGS=...]
.PHONY: bench-sparse-kernels
SPARSE_ARGS ?= $(if $(BQ),--rounds 5,--rounds 30)
$(BENCH_DIR)/bench_sparse_kernels: $(OBJ)/bench/bench_sparse_kernels.o $(CORE_LIB)
	$(call link,$^,$(SERVER_LIBS))
bench-sparse-kernels: $(BENCH_DIR)/bench_sparse_kernels
	$(Q)$(BENCH_DIR)/bench_sparse_kernels --out $(BENCH_OUT) $(SPARSE_ARGS)
