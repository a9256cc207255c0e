# ---- simulated hosts: scale-out in network namespaces (bench/cluster/) ------
#   make bench-cluster  one 10^7-parameter Adam instance sharded over 1, 2 and
#                       4 daemons, 4 workers, every daemon and worker a host
#                       of its own (a network namespace, its link shaped with
#                       tc); the table, $(B)/bench/cluster.tsv and a plot.
#                       Needs root and iproute2; skips, saying why, without.
#   CLUSTER_RATE=500mbit  each host's link (each way); CLUSTER_DELAY=0.2ms
#   CLUSTER_ARGS=...    more bench_cluster.py options (--quick, --seconds 8,
#                       --dtype float32, --shards 1,2,4, --n 1e7,
#                       --modes pipelined,roundtrip,sync, --clients raw)
#   BENCH_SVG=FILE      where the plot goes (docs/benchmarks-cluster.svg for
#                       the doc; default $(B)/bench/cluster.svg); gnuplot if
#                       present, else an SVG written by the script
# The worker (bench/cluster/cluster_worker.c) is also what
# tests/integration/test_netns_cluster.py runs, so `integration` builds it.
CLUSTER_WORKER := $(B)/bench/cluster_worker
CLUSTER_RATE   ?= 500mbit
CLUSTER_DELAY  ?= 0.2ms
CLUSTER_ARGS   ?=
CLUSTER_SVG     = $(if $(filter command line environment,$(origin BENCH_SVG)),$(BENCH_SVG),$(B)/bench/cluster.svg)

$(CLUSTER_WORKER): $(OBJ)/bench/cluster/cluster_worker.o $(LIB_A)
	@mkdir -p $(@D)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $(CLIENT_LIBS) -lpthread -o $@

.PHONY: bench-cluster
bench-cluster: $(DAEMON) $(CLUSTER_WORKER)
	$(Q)python3 bench/cluster/bench_cluster.py --daemon $(DAEMON) --worker $(CLUSTER_WORKER) \
	  --rate $(CLUSTER_RATE) --delay $(CLUSTER_DELAY) --out $(B)/bench/cluster.tsv --svg $(CLUSTER_SVG) $(CLUSTER_ARGS)

integration: $(CLUSTER_WORKER)
