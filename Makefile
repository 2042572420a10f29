# Every target sets up what it needs first: a virtualenv with the pinned dependencies. Except make demo
# and make smoke: standard-library scripts that need only python3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.txt apps/requirements.txt | cksum | cut -d' ' -f1)
# apps/ for the services; the root for the harness package that tests/, scripts/ and load/ share.
export PYTHONPATH := $(CURDIR)/apps:$(CURDIR)

GO ?= go
NPM ?= npm
HAVE_NPM := $(shell command -v $(NPM) 2>/dev/null)
# The shop page's tracing bundle (apps/web, docs/browser.md): built from the pinned package-lock.json.
WEB := apps/web
WEB_BUNDLE := $(WEB)/dist/tracing.js
HAVE_GO := $(shell command -v $(GO) 2>/dev/null)
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
COLLECTOR_RELEASE := $(shell sed -n 's/^  version: *//p' otel-collector/builder-config.yaml)
BUILDER := build/bin/builder-v$(COLLECTOR_RELEASE)
COLLECTOR := build/otelcol/otelcol-shop
# Prometheus as compose runs it: the release is .env's PROMETHEUS_VERSION (the image tag), and release
# 3.M.P is the Go module github.com/prometheus/prometheus v0.3MM.P.
PROMETHEUS_RELEASE := $(shell sed -n 's/^PROMETHEUS_VERSION=v//p' .env)
PROMETHEUS_MODULE := github.com/prometheus/prometheus@$(shell echo $(PROMETHEUS_RELEASE) | awk -F. '{printf "v0.%d.%d", $$1 * 100 + $$2, $$3}')
PROMETHEUS_DIR := build/prometheus-$(PROMETHEUS_RELEASE)
PROMETHEUS := $(PROMETHEUS_DIR)/prometheus

.PHONY: venv run web screenshot test test-fast check format lock clean collector prometheus prometheus-from-debian dashboards smoke bench bench-collector collector-drills bench-db-clients bench-parts load demo k8s-charts k8s-rules

venv: $(STAMP)

$(STAMP): requirements-dev.txt apps/requirements.txt
	@echo "==> setting up $(VENV) from the pinned requirements"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --disable-pip-version-check --quiet --requirement requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

## run: the three services in the foreground (Ctrl-C stops all three); the shop page at http://localhost:8000
run: $(STAMP) $(if $(HAVE_NPM),$(WEB_BUNDLE))
	$(BIN)/python -m shop.devrun

## test: the whole test suite, every tier (builds the Collector and Prometheus first where Go is installed,
## and the page's tracing bundle where npm is)
test: $(STAMP) $(if $(HAVE_GO),$(COLLECTOR) $(PROMETHEUS)) $(if $(HAVE_NPM),$(WEB_BUNDLE))
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-fast: the unit and in-process tiers only (no service processes, no Collector or Prometheus)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "unit or inprocess" $(PYTEST_ARGS)

## web: the shop page's tracing bundle (npm ci from package-lock.json, then esbuild; skipped when up to date)
web: $(WEB_BUNDLE)

$(WEB_BUNDLE): $(WEB)/package.json $(WEB)/package-lock.json $(wildcard $(WEB)/src/*.js)
	@echo "==> building the shop page's tracing bundle into $(WEB)/dist"
	cd $(WEB) && $(NPM) ci --no-audit --no-fund --loglevel=error && $(NPM) run --silent build
	@touch $@

## screenshot: refresh docs/images/shop-page.png, the README's picture, from the browser test's screenshot
screenshot: $(STAMP) $(WEB_BUNDLE) $(if $(HAVE_GO),$(COLLECTOR))
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_browser.py -k starts_at_the_click
	mkdir -p docs/images && cp build/artifacts/shop-page.png docs/images/shop-page.png

## collector: build the Collector from otel-collector/builder-config.yaml (skipped when up to date)
collector: $(COLLECTOR)

$(BUILDER):
	@echo "==> installing the OpenTelemetry Collector Builder v$(COLLECTOR_RELEASE)"
	@mkdir -p build/bin
	GOBIN=$(CURDIR)/build/bin.tmp $(GO) install go.opentelemetry.io/collector/cmd/builder@v$(COLLECTOR_RELEASE)
	mv build/bin.tmp/builder $@ && rmdir build/bin.tmp

$(COLLECTOR): otel-collector/builder-config.yaml | $(BUILDER)
	@echo "==> building the Collector $(COLLECTOR_RELEASE) into build/otelcol (a few minutes the first time)"
	$(BUILDER) --config otel-collector/builder-config.yaml
	@touch $@
	@echo "==> $(COLLECTOR) is ready"

## prometheus: build Prometheus and promtool (the release compose runs) where Go is installed; else Debian's
prometheus: $(if $(HAVE_GO),$(PROMETHEUS),prometheus-from-debian)

# The module's source is read-only in the module cache and has a go.work: build a copy, with GOWORK=off.
# Without the builtinassets tag (whose web UI needs npm) the API and rules work; the web UI pages do not.
$(PROMETHEUS):
	@echo "==> building Prometheus $(PROMETHEUS_RELEASE) and promtool into $(PROMETHEUS_DIR) (4-8 minutes the first time)"
	@rm -rf $(PROMETHEUS_DIR).src $(PROMETHEUS_DIR).tmp && mkdir -p build
	@source=$$($(GO) mod download -json $(PROMETHEUS_MODULE) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p') && \
	  test -n "$$source" && cp -R "$$source" $(PROMETHEUS_DIR).src && chmod -R u+w $(PROMETHEUS_DIR).src
	cd $(PROMETHEUS_DIR).src && GOWORK=off CGO_ENABLED=0 $(GO) build \
	  -ldflags "-X github.com/prometheus/common/version.Version=$$(cat VERSION) -X github.com/prometheus/common/version.Revision=$(PROMETHEUS_MODULE)" \
	  -o ../$(notdir $(PROMETHEUS_DIR)).tmp/ ./cmd/prometheus ./cmd/promtool
	@rm -rf $(PROMETHEUS_DIR) $(PROMETHEUS_DIR).src && mv $(PROMETHEUS_DIR).tmp $(PROMETHEUS_DIR)
	@echo "==> $$($(PROMETHEUS) --version 2>&1 | head -1)"

# For a user without Go: Debian's Prometheus, an older release than compose runs (the tests say which ran).
prometheus-from-debian:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then \
	  echo "==> $$(prometheus --version 2>&1 | head -1)"; \
	else \
	  echo "==> installing Prometheus from Debian's packages"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus; \
	fi

## check: formatting, lint and strict types
check: $(STAMP)
	$(BIN)/ruff format --check apps harness tests grafana scripts load
	$(BIN)/ruff check apps harness tests grafana scripts load
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format apps harness tests grafana scripts load
	$(BIN)/ruff check --fix apps harness tests grafana scripts load

## dashboards: regenerate grafana/dashboards/*.json from grafana/dashboards.py
dashboards: $(STAMP)
	$(BIN)/python grafana/dashboards.py

## bench: telemetry off, full and sampled, on SQLite and on PostgreSQL, side by side (needs wrk: apt-get install wrk)
bench: $(STAMP) $(COLLECTOR)
	@command -v wrk >/dev/null || { echo "==> installing wrk from Debian's packages"; $(SUDO) apt-get install -y -q wrk; }
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

## bench-db-clients: asyncpg with our spans vs contrib's asyncpg and SQLAlchemy instrumentations (BENCH_DB_CLIENTS_ARGS=--repeat 3)
bench-db-clients: $(STAMP)
	$(BIN)/python scripts/bench_db_clients.py $(BENCH_DB_CLIENTS_ARGS)

## bench-parts: µs per call of each part of the per-request telemetry path, contrib's and the lean one (BENCH_PARTS_ARGS=--repeat 5)
bench-parts: $(STAMP)
	$(BIN)/python scripts/bench_parts.py $(BENCH_PARTS_ARGS)

## bench-collector: spans/s one Collector core takes, one Collector vs two tiers (BENCH_COLLECTOR_ARGS=--repeat 3)
bench-collector: $(STAMP) $(COLLECTOR)
	$(BIN)/python scripts/bench_collector.py $(BENCH_COLLECTOR_ARGS)

## collector-drills: telemetry lost when the Collector is killed or Tempo is down, this checkout beside
## an earlier revision (COLLECTOR_DRILLS_ARGS, e.g. --before 3afc772; docs/reliability.md#before-and-after)
collector-drills: $(STAMP) $(COLLECTOR)
	$(BIN)/python scripts/collector_drills.py $(COLLECTOR_DRILLS_ARGS)

## load: shop traffic from Locust for the dashboards (RATE actions/s, DURATION, USERS, MIX; GATEWAY_URL)
RATE ?= 10
DURATION ?= 1m
USERS ?= 20
MIX ?=
GATEWAY_URL ?= http://localhost:8000
load: $(STAMP)
	$(BIN)/locust -f load/locustfile.py --headless --only-summary --host $(GATEWAY_URL) \
	  --users $(USERS) --spawn-rate $(USERS) --run-time $(DURATION) --stop-timeout 5 \
	  --rate $(RATE) $(if $(MIX),--mix $(MIX)) $(LOAD_ARGS)

## smoke: check every link of a running compose stack (docker compose up -d first); python3 only
smoke:
	@$(PYTHON) scripts/smoke.py

## demo: one order of each kind through a running gateway, with Grafana links to each trace and its logs; python3 only
demo:
	@$(PYTHON) scripts/demo.py $(DEMO_ARGS)

## k8s-charts: helm template deploy/kubernetes/helm's values from CHARTS (a directory of the charts by name),
## then validate offline (docs/scaling.md#kubernetes; HELM is the helm binary)
CHARTS ?=
HELM ?= helm
k8s-charts: $(STAMP)
	@test -n "$(CHARTS)" || { echo "usage: make k8s-charts CHARTS=<directory of the charts> [HELM=<helm>]"; exit 2; }
	$(BIN)/python scripts/k8s_charts.py render --charts $(CHARTS) --helm $(HELM) $(K8S_ARGS)

## k8s-rules: prometheus/rules/*.yml as PrometheusRule objects (make -s k8s-rules | kubectl apply -f -)
k8s-rules: $(STAMP)
	@$(BIN)/python scripts/k8s_charts.py rules

## lock: re-pin apps/requirements.txt from apps/requirements.in
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --disable-pip-version-check --quiet --requirement apps/requirements.in
	{ echo "# Generated from requirements.in by 'make lock': every runtime package, pinned."; \
	  .lock-venv/bin/pip freeze --all --exclude pip --exclude setuptools --exclude wheel; } > apps/requirements.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache data build $(WEB)/node_modules $(WEB)/dist
