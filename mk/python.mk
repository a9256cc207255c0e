# mk/python.mk: the Python package's targets (bench-python; the lead hooks it into `make bench`).
.PHONY: bench-python
bench-python: all
	/usr/bin/python3 bench/bench_python.py $(if $(QUICK),--quick,)
