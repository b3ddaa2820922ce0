# Two commands set everything up on a fresh machine: `make demo` (the main job) and `make test`.
# Every target creates .venv on first use; a stamp keeps later runs from reinstalling.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
EIE    := $(VENV)/bin/eie
STAMP  := $(VENV)/.installed
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: all venv modules test test-slow demo bench data doctor clean

all: test

venv: modules

# A strict editable install: a tree of links under build/__editable__ that editors and static tools can
# follow (no import hook). It lists modules, so it is redone when a module appears or disappears.
MODULES := $(sort $(wildcard eie/*.py eie/cli/*.py hw/*.py sw/*.py cosim/*.py))
INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=strict

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(INSTALL) -e '.[dev]'
	echo "$(MODULES)" > $(VENV)/.modules
	touch $@

# Re-link when the module list changed since the last install (cheap: no dependency is reinstalled).
modules: $(STAMP)
	@echo "$(MODULES)" | cmp -s - $(VENV)/.modules || \
	  { $(INSTALL) --no-deps -e . && echo "$(MODULES)" > $(VENV)/.modules; }

# Fashion-MNIST comes from Debian's package; installed only when missing (needs root, as on CI machines).
data:
	@if [ -f $(FASHION_DIR)/t10k-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) && \
	  echo "installed dataset-fashion-mnist"; \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist'" >&2; exit 1; fi

# The tests use scikit-learn's digits and generated data; Fashion-MNIST is installed when possible so that
# `eie doctor` finds everything, but its absence does not fail the tests.
test: modules
	@$(MAKE) --no-print-directory -s data || echo "note: continuing without Fashion-MNIST"
	$(PY) -m pytest -q

test-slow: modules data
	$(PY) -m pytest -q -m slow

demo: modules data
	$(EIE) demo

# The chip and simulator benchmarks, then EIE's nine benchmark layers at 64 PEs (issue 11); both print their
# targets, and the target fails if either has a failing target.
bench: modules
	@status=0; $(PY) -m eie.cosim.bench || status=1; \
	  $(EIE) bench --suite eie --out runs/bench-eie --force || status=1; exit $$status

# Each known mutant of the RTL, reference and encoder on a copy of the tree: caught or survived by the fast
# tier (no Verilator build). `python tests/mutants.py --tier full` runs `make test`'s selection instead.
.PHONY: mutants
mutants: modules
	$(PY) tests/mutants.py

# Every formal proof of the blocks, the chip and the tiny chip end to end (issue 23: SymbiYosys from the dev
# extra's wheels) within a time budget; a table of block, property, engine, depth, PASS/FAIL/UNKNOWN and seconds;
# traces (VCD) and a failure's replayable case (python -m eie.cosim.formal --replay <case>) in runs/formal. The
# fast subset runs in `make test` (tests/test_formal.py); `python tests/mutants.py --tier formal` runs the fast
# subset and the chip proofs on the RTL mutants.
.PHONY: formal
formal: modules
	$(PY) -m eie.cosim.formal --budget 840 --out runs/formal

# The 2-PE and the 16-PE chip placed and routed on an ECP5 at 150 MHz (eie synth --ecp5 --freq 150; work
# folders in runs/synth), beside the issue's targets: 2 PEs >= 150 MHz, 16 PEs >= 100 MHz (aim 150) and the
# 16-PE flow under 20 minutes. Every target is printed PASS or FAIL; the target fails if any did.
.PHONY: synth
synth: modules
	$(INSTALL) -e '.[synth]'
	$(PY) -m eie.cosim.synth

doctor: modules
	$(EIE) doctor

clean:
	rm -rf runs .pytest_cache   # build/ holds the editable install's links
