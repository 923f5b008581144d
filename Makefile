# llm-from-zero: every set-up step lives here, so a fresh clone needs only `make demo` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SERVICES_ENV := .lfz/services.env
WITH_SERVICES := set -a; . $(SERVICES_ENV); set +a;
CHROMIUM := /usr/bin/chromium
NPM_STAMP := node_modules/.installed-stamp

.PHONY: install services services-down migrate browser-deps test test-unit demo bench soak clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==25.3
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

# Real Kafka (KRaft), PostgreSQL and an S3 server on loopback; idempotent. Writes $(SERVICES_ENV).
services: install
	infra/services/up.sh

services-down:
	infra/services/down.sh

migrate: services
	$(WITH_SERVICES) $(PY) -m infra.db migrate

# The dashboard's browser tests (tests/browser): Debian's Chromium, since Playwright cannot download a browser
# here, and the charting library the gateway serves at /vendor/uplot, pinned in package-lock.json.
$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

browser-deps: $(CHROMIUM) $(NPM_STAMP)

test: install services migrate browser-deps
	$(WITH_SERVICES) $(PY) -m pytest -q

test-unit: install
	$(PY) -m pytest -q tests/unit

# The whole product on this machine in about two minutes (embedded broker, SQLite and a folder under .lfz/; no
# Docker): train, evaluate and sample through the real event pipeline. Report and plot in lfz-demo-output/.
demo: install
	$(VENV)/bin/lfz demo

clean:
	rm -rf $(VENV) .lfz
