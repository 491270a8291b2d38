# Two commands do all the set-up on a fresh Debian 12 machine with Python 3.11:
#   make demo   creates .venv, installs and compiles extractor (make native), applies
#               testdata/demo onto ./rootfs
#   make test   also installs the peers the tests compare with (as root), then runs
#               ruff, mypy and the whole pytest suite, on the compiled build and on
#               the sources
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := umoci skopeo pigz zstd libarchive-tools util-linux time

.PHONY: all venv native demo test lint unit system-deps bench clean

all: test

$(STAMP): pyproject.toml
	@# Debian's python3 needs python3-venv for this; install it when we may.
	$(PYTHON) -m venv $(VENV) || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	@# compat: a path entry in a .pth file; the default import hook costs every start-up
	@# 15 ms of imports (pathlib, importlib.util)
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

venv: $(STAMP)

# The hot modules compiled with mypyc (extractor/native.py lists them), next to
# their sources; rebuilt whenever a source changes. The package falls back to
# the sources by itself if this build is older than they are.
NATIVE_STAMP := build/native/.built
$(NATIVE_STAMP): $(STAMP) setup.py $(wildcard extractor/*.py)
	@# A C compiler and Python's headers; Debian's python3 needs python3-dev for them.
	@if ! command -v cc >/dev/null || ! $(BIN)/python -c 'import os, sys, sysconfig; \
	  sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))'; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing: gcc python3-dev"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev >/dev/null; \
	  else echo "not root: cannot install gcc and python3-dev for the compiled build"; fi; \
	fi
	EXTRACTOR_MYPYC=1 $(BIN)/python setup.py -q build_ext --inplace --force \
	  -b build/native -t build/native 2>&1 | grep -v -e '^  warnings.warn' -e '_BetaConfiguration' || true
	$(BIN)/python -c 'import extractor.native as n, extractor, sys; sys.exit(not n.compiled())'
	touch $@

native: $(NATIVE_STAMP)

# The differential tests run umoci and GNU tar; install them when we may.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not root: skipping apt packages$$missing (their tests will be skipped)"; fi; \
	fi

demo: $(STAMP)
	@$(MAKE) --no-print-directory native || \
	  echo "extractor: no compiled build (see above); the demo runs on the sources"
	rm -rf rootfs
	$(BIN)/extractor apply rootfs testdata/demo/1-base.tar.gz testdata/demo/2-update.tar.zst testdata/demo/3-app.tar --report rootfs.report.json
	@echo "--- the tree (see rootfs.report.json for per-layer counts):"
	@cd rootfs && find . -mindepth 1 | sort | head -40
	@echo "--- the same stack as an OCI image: inspect, then unpack with verification"
	rm -rf build/demo-oci rootfs-oci && mkdir -p build
	$(BIN)/python testdata/make_demo.py --oci build/demo-oci
	$(BIN)/extractor inspect build/demo-oci
	$(BIN)/extractor unpack build/demo-oci rootfs-oci

lint: $(STAMP)
	$(BIN)/ruff check extractor tests benchmarks testdata setup.py
	$(BIN)/ruff format --check extractor tests benchmarks testdata setup.py
	$(BIN)/mypy --strict extractor

# The suite runs twice: on the compiled build, and on the sources alone (as
# where no C compiler is at hand), since mypyc's semantics can differ in corners.
unit: $(NATIVE_STAMP)
	$(BIN)/pytest -q
	EXTRACTOR_PURE=1 $(BIN)/pytest -q

test: $(STAMP) system-deps lint unit

bench: $(NATIVE_STAMP) system-deps
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) rootfs rootfs-oci build rootfs.report.json *.egg-info extractor/*.so
