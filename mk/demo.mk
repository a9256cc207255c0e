# mk/demo.mk: the road trip demo (Fashion-MNIST through descent), included by the Makefile.
#   make demo                   the full road trip; its report goes to $(B)/demo/
#   DEMO_REPORT=docs            writes the committed report (docs/road-trip.*) instead
#   DEMO_ARGS=--quick           a shortened run (the test does that)
DEMO_REPORT ?= $(B)/demo
DEMO_WORKER := $(B)/bin/fmnist_worker
DEMO_OBJ    := $(OBJ)/client/examples/fmnist.o $(OBJ)/client/examples/fmnist_worker.o
$(OBJ)/client/examples/%.o: OPT := -O2 -g -O3

$(DEMO_WORKER): $(DEMO_OBJ) $(LIB_A)
	$(call link,$^,$(CLIENT_LIBS) -lz)

.PHONY: demo demo-deps
demo-deps: deps
	$(Q)[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || { \
	  echo "demo: installing dataset-fashion-mnist"; \
	  SUDO=$$( [ "$$(id -u)" -ne 0 ] && echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist; }

demo: demo-deps
	$(Q)$(MAKE) --no-print-directory $(DAEMON) $(DEMO_WORKER)
	$(Q)DESCENT_BUILD=$(B) python3 client/examples/road_trip.py --out $(DEMO_REPORT) $(DEMO_ARGS)
