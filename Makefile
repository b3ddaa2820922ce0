# Two commands set everything up on a fresh machine: `make demo` (the main job) and `make test`.
# Every target creates .venv on first use; a stamp keeps later runs from reinstalling.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
EIE    := $(VENV)/bin/eie
STAMP  := $(VENV)/.installed
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: all venv test test-slow demo bench data doctor clean

all: test

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

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
test: $(STAMP)
	@$(MAKE) --no-print-directory -s data || echo "note: continuing without Fashion-MNIST"
	$(PY) -m pytest -q

test-slow: $(STAMP) data
	$(PY) -m pytest -q -m slow

demo: $(STAMP) data
	$(EIE) demo

bench: $(STAMP)
	$(PY) -m eie.cosim.bench

doctor: $(STAMP)
	$(EIE) doctor

clean:
	rm -rf build runs .pytest_cache
