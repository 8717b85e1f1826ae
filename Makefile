# `make run` and `make test` each set themselves up from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= run/notifier.toml
# The exact versions the suite passes with; every install is held to them.
CONSTRAINTS := constraints.txt
# The lowest versions setup.cfg allows, which `make test-compat` runs the
# unit suite on, in a virtualenv of its own.
LOWEST        := constraints-lowest.txt
COMPAT_VENV   := .venv-compat
COMPAT_STAMP  := $(COMPAT_VENV)/.installed
# What `make run` needs, and what the test targets need besides (the [test] extra).
STAMP      := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The in-memory suite: no sockets, processes, Redis, browser, PHP or Node.js.
UNIT := not integration and not redis and not browser and not php and not node
# The stock JavaScript clients the tests run (pusher-js, laravel-echo, the
# pusher Node library), pinned in tests/js/package-lock.json: installed into
# tests/js/node_modules again whenever the lock changes.
JS_DIR   := tests/js
JS_STAMP := $(JS_DIR)/node_modules/.installed

# command -> Debian package, installed by `make test` when the command is missing
TEST_TOOLS := chromium=chromium php=php-cli redis-server=redis-server node=nodejs npm=npm

.PHONY: venv run test test-unit test-compat lint docs screenshots test-tools clean

$(BIN)/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS) | $(BIN)/pip
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[test,docs]'
	touch $@

DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[docs]'
	touch $@

venv: $(STAMP)

$(CONFIG): | $(STAMP)
	$(BIN)/notifier config init $(CONFIG)

run: $(STAMP) $(CONFIG)
	@$(BIN)/notifier config howto --config $(CONFIG)
	exec $(BIN)/twistd -n --pidfile= notifier --config $(CONFIG)

test-tools:
	@for pair in $(TEST_TOOLS); do \
	  cmd=$${pair%%=*}; pkg=$${pair#*=}; \
	  if ! command -v $$cmd >/dev/null 2>&1; then missing="$$missing $$pkg"; fi; \
	done; \
	if command -v php >/dev/null 2>&1 && ! php -m 2>/dev/null | grep -qx curl; then missing="$$missing php-curl"; fi; \
	if ! command -v php >/dev/null 2>&1; then missing="$$missing php-curl"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# `npm ci`: exactly what the lock holds, node_modules made anew.
$(JS_STAMP): $(JS_DIR)/package-lock.json $(JS_DIR)/package.json | test-tools
	npm ci --prefix $(JS_DIR) --no-audit --no-fund
	touch $@

test: $(TEST_STAMP) test-tools $(JS_STAMP) lint docs test-compat
	$(BIN)/python -m pytest
	$(MAKE) soak-short

test-unit: $(TEST_STAMP)
	$(BIN)/python -m pytest -m "$(UNIT)"

$(COMPAT_VENV)/bin/pip:
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/pip install -q --upgrade pip

$(COMPAT_STAMP): setup.cfg pyproject.toml $(LOWEST) | $(COMPAT_VENV)/bin/pip
	$(COMPAT_VENV)/bin/pip install -q -c $(LOWEST) -e '.[test]'
	touch $@

# The unit suite on the lowest versions of the dependencies setup.cfg allows.
test-compat: $(COMPAT_STAMP)
	$(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider -m "$(UNIT)"

lint: $(TEST_STAMP)
	$(BIN)/ruff check notifier tests soak; status=$$?; $(BIN)/mypy notifier && exit $$status

# The console's screenshots in docs/, taken again by its tests in Chromium
# (otherwise they take them into a temporary folder).
screenshots: $(TEST_STAMP) test-tools
	UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/http/test_console.py

# The documentation site (docs/), built as it is published: any warning fails.
docs: $(DOCS_STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

clean:
	rm -rf $(VENV) $(COMPAT_VENV) run *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache docs/_build \
	  $(JS_DIR)/node_modules

# `make bench`: notifier against Nchan (one nginx worker) on loopback, with
# the benchmark of bench/: a Go load generator (bench/loadgen, built here with
# Debian's Go and gorilla/websocket) and a driver (bench/harness.py) that
# starts each server from its profile (bench/targets); the goals, method and
# latest table are in docs/performance.rst.
#   make bench REPEAT=1 SCENARIOS="ws1k sse"   subset, one run per target
#   make bench SCENARIOS="ws1k pusher1k"       notifier's Pusher face (/app/{key}) against its native
#                                              WebSocket: pusher10k, pusher1k, pusher-idle (notifier only)
#   make bench PYPY=1                          notifier on PyPy as a third target (bench/pypy_venv.sh)
#   make bench UPDATE_DOCS=1                   write the table into docs/performance.rst
#   make bench SCALE=0.1                       smoke run with a tenth of the messages
REPEAT      ?= 3
SCENARIOS   ?=
PYPY        ?=
SCALE       ?= 1
UPDATE_DOCS ?=
BENCH_OUT   ?=
BENCH_OPTS  ?=
PYPY_VENV   := /tmp/pypy-venv
# command or file -> Debian package, installed by `make bench` when missing
BENCH_TOOLS := go=golang-go \
  /usr/share/gocode/src/github.com/gorilla/websocket=golang-github-gorilla-websocket-dev \
  nginx=nginx /usr/lib/nginx/modules/ngx_nchan_module.so=libnginx-mod-nchan

.PHONY: bench bench-centers

# `make bench-centers`: the operator API paging through one publisher's
# 100,000 centers (bench/centers_page.py; CENTERS=... for another count)
CENTERS ?= 100000
bench-centers: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" python3 bench/centers_page.py --centers $(CENTERS)

bench: $(STAMP)
	@for pair in $(BENCH_TOOLS); do \
	  what=$${pair%%=*}; pkg=$${pair#*=}; \
	  case $$what in /*) test -e $$what ;; *) command -v $$what >/dev/null 2>&1 ;; esac || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	$(if $(PYPY),bench/pypy_venv.sh $(PYPY_VENV))
	bench/loadgen/build.sh
	cd bench/loadgen && GOPROXY=off GOSUMDB=off GOFLAGS=-mod=mod go test ./...
	PATH="$(CURDIR)/$(BIN):$$PATH" python3 bench/compare.py --repeat $(REPEAT) \
	  $(if $(SCENARIOS),--scenarios "$(SCENARIOS)") $(if $(PYPY),--pypy) \
	  $(if $(filter-out 1,$(SCALE)),--scale $(SCALE)) $(if $(UPDATE_DOCS),--update-docs docs/performance.rst) \
	  $(if $(BENCH_OUT),--out $(BENCH_OUT)) $(if $(BENCH_OPTS),--bench-opts "$(BENCH_OPTS)")

# `make soak`: load and faults at the same time, with figures (soak/; the
# method, what is checked and the figures of a 30-minute run are in
# docs/reliability.rst). Three daemons on Redis with Sentinel and one on a
# durable SQLite file, all started here; subscribers of every transport
# coming and going, publishes retried with their Idempotency-Key, and
# faults on a schedule drawn from SEED. The report (text, and an HTML page
# with charts) goes to OUT; the exit status is non-zero on any failed check.
#   make soak                          30 minutes, SEED=1, report in run/soak/
#   make soak DURATION=10m SEED=7 OUT=run/soak-7
#   make soak-short                    2 minutes, smaller load, every fault kind,
#                                      fails on any loss or duplicate (run/soak-short/)
# Run it as root: the SQLite file is put on a small tmpfs of its own (else a
# full disk is simulated with RLIMIT_FSIZE; docs/reliability.rst).
DURATION ?= 30m
SEED     ?= 1
OUT      ?=

.PHONY: soak soak-short soak-tools

soak-tools:
	@command -v redis-server >/dev/null 2>&1 || { echo "installing redis-server"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

soak: $(TEST_STAMP) soak-tools
	$(BIN)/python -m soak --duration $(DURATION) --seed $(SEED) --out $(or $(OUT),run/soak)

soak-short: $(TEST_STAMP) soak-tools
	$(BIN)/python -m soak --short --seed $(SEED) --out $(or $(OUT),run/soak-short) \
	  $(if $(filter command line,$(origin DURATION)),--duration $(DURATION))
