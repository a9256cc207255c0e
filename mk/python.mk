# mk/python.mk: the Python package's benchmark (bench/bench_python.py), part of `make bench`:
#   make bench-python    descent.Client with numpy/torch against raw http.client, and
#                        descent.torch.Adam.step() against torch.optim.Adam (Debian's
#                        /usr/bin/python3 with python3-torch; BENCH_QUICK=1 for a short run)
.PHONY: bench-python
bench-python: all
	$(Q)/usr/bin/python3 bench/bench_python.py $(if $(filter 1,$(BENCH_QUICK)),--quick,)
