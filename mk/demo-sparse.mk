# mk/demo-sparse.mk: the sparse demo (hashed-feature softmax regression on apt's package lists,
# W a sparse tensor in descentd, 4 worker processes, against torch directly), included by the Makefile.
#   make demo-sparse                   the full run; its report goes to $(B)/sparse-demo/
#   DEMO_SPARSE_REPORT=docs            writes the committed report (docs/sparse.*) instead
#   DEMO_SPARSE_ARGS=--quick           the shortened run (the test does that)
# The data: apt's Packages files (apt-get update first when there are none) and, for the long
# descriptions, Translation-en; when the system's lists have none (Acquire::Languages "none", as in
# Docker images), a copy of the lists with them is fetched into $(B)/sparse-demo/apt-lists (apt's own
# lists are left alone; offline, the demo runs on the short descriptions and says so).
DEMO_SPARSE_REPORT ?= $(B)/sparse-demo
DEMO_SPARSE_LISTS  := $(B)/sparse-demo/apt-lists

.PHONY: demo-sparse demo-sparse-deps
demo-sparse-deps: deps
	$(Q)SUDO=$$( [ "$$(id -u)" -ne 0 ] && echo sudo ); \
	if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then \
	  echo "demo-sparse: apt's package lists are empty: apt-get update"; $$SUDO apt-get update -qq; fi; \
	if ! ls /var/lib/apt/lists/*_Translation-en* >/dev/null 2>&1 && \
	   ! ls $(DEMO_SPARSE_LISTS)/*_Translation-en* >/dev/null 2>&1; then \
	  echo "demo-sparse: fetching the lists with Translation-en (long descriptions) into $(DEMO_SPARSE_LISTS)"; \
	  mkdir -p $(DEMO_SPARSE_LISTS)/partial; \
	  $$SUDO apt-get update -qq -o Dir::State::Lists=$(abspath $(DEMO_SPARSE_LISTS)) -o Acquire::Languages=en || \
	    echo "demo-sparse: could not fetch them; the demo uses the short descriptions only"; fi
	$(Q)/usr/bin/python3 -c "import torch, numpy" 2>/dev/null || { \
	  echo "demo-sparse: installing python3-torch python3-numpy"; \
	  SUDO=$$( [ "$$(id -u)" -ne 0 ] && echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3-torch python3-numpy; }

demo-sparse: demo-sparse-deps
	$(Q)$(MAKE) --no-print-directory $(DAEMON)
	$(Q)DESCENT_BUILD=$(B) /usr/bin/python3 client/examples/sparse_demo.py --out $(DEMO_SPARSE_REPORT) $(DEMO_SPARSE_ARGS)
