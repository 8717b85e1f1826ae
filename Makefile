# `make run` and `make test` each set themselves up from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= run/notifier.toml

# command -> Debian package, installed by `make test` when the command is missing
TEST_TOOLS := chromium=chromium php=php-cli redis-server=redis-server

.PHONY: venv run test test-tools clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
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

test: $(STAMP) test-tools
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) run *.egg-info .pytest_cache .hypothesis
