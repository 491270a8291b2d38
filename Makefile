# Two commands do all the set-up on a fresh Debian 12 machine with Python 3.11:
#   make demo   creates .venv, installs extractor, applies testdata/demo onto ./rootfs
#   make test   also installs the peers the tests compare with (as root), then runs
#               ruff, mypy and the whole pytest suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := umoci skopeo pigz zstd libarchive-tools util-linux time

.PHONY: all venv demo test lint unit system-deps bench clean

all: test

$(STAMP): pyproject.toml
	@# Debian's python3 needs python3-venv for this; install it when we may.
	$(PYTHON) -m venv $(VENV) || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

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
	$(BIN)/ruff check extractor tests benchmarks testdata
	$(BIN)/ruff format --check extractor tests benchmarks testdata
	$(BIN)/mypy --strict extractor

unit: $(STAMP)
	$(BIN)/pytest -q

test: $(STAMP) system-deps lint unit

bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) rootfs rootfs-oci build rootfs.report.json *.egg-info
