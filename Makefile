# Everything a fresh machine needs goes through these targets: `make run`, `make test`, `make bench`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run run-proxy test fuzz lint bench loadtest check clean system-deps vendor

# Browser assets the admin serves itself (no CDN): fetched from the npm registry with npm's own
# client at a pinned version, unpacked into admin/static/vendor (not in git).
VENDOR := admin/static/vendor
UPLOT_VERSION := 1.6.32
VENDOR_STAMP := $(VENDOR)/.uplot-$(UPLOT_VERSION)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

$(VENDOR_STAMP):
	@command -v npm >/dev/null || { apt-get update && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y npm; }
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/.pack
	cd $(VENDOR)/.pack && npm pack --silent uplot@$(UPLOT_VERSION) >/dev/null
	tar -xzf $(VENDOR)/.pack/uplot-$(UPLOT_VERSION).tgz -C $(VENDOR)/.pack
	cp $(VENDOR)/.pack/package/dist/uPlot.iife.min.js $(VENDOR)/.pack/package/dist/uPlot.min.css \
	  $(VENDOR)/.pack/package/LICENSE $(VENDOR)/
	rm -rf $(VENDOR)/.pack
	touch $(VENDOR_STAMP)

vendor: $(VENDOR_STAMP)

run: $(STAMP) $(VENDOR_STAMP)
	$(BIN)/python -m dev.devstack

run-proxy: $(STAMP)
	$(BIN)/slb proxy -c config/slb.yaml

# Debian packages the tests need: Chromium and its driver for the web UI tests; PostgreSQL for
# the admin tests' second store engine (the tests start their own server: the package's own
# cluster service is not used).
system-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; }
	@command -v curl >/dev/null || { \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y curl; }

test: $(STAMP) $(VENDOR_STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/pytest

# The exchange fuzzer at release length (make test runs a few thousand examples; this, minutes).
fuzz: $(STAMP)
	SLB_FUZZ_EXAMPLES=50000 $(BIN)/pytest -p no:cacheprovider tests/fuzz --hypothesis-show-statistics

lint: $(STAMP)
	$(BIN)/ruff check .

check: $(STAMP)
	$(BIN)/slb check -c config/slb.yaml

# The comparison (SLB, reference proxy, nginx; ~7 min), then the apply and health benches.
# `make bench BENCH_ARGS=--quick` runs a 1-2 minute smoke comparison instead.
bench: $(STAMP)
	bash bench/run.sh $(BENCH_ARGS) --apply
	$(BIN)/python bench/health_bench.py
	$(BIN)/python bench/traffic_bench.py --micro
	$(BIN)/python bench/traffic_bench.py

loadtest: $(STAMP)
	$(BIN)/pip install -q -e '.[load]'
	bash loadtest/run.sh
	$(BIN)/python loadtest/release.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info $(VENDOR)
