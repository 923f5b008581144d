# llm-from-zero: every set-up step lives here, so a fresh clone needs only `make demo` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LLAMA_STAMP := $(VENV)/.llama-installed-stamp
SERVICES_ENV := .lfz/services.env
WITH_SERVICES := set -a; . $(SERVICES_ENV); set +a;
CHROMIUM := /usr/bin/chromium
NPM_STAMP := node_modules/.installed-stamp

.PHONY: install services services-down migrate browser-deps test test-unit demo bench bench-embedded soak clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==25.3
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

# llama.cpp (llama-cpp-python, compiled here once; pip keeps the wheel) for the GGUF export's tests only.
$(LLAMA_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,llama]'
	touch $@

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

# Everything but the soak tests (marked `soak`: see `make soak`).
test: install $(LLAMA_STAMP) services migrate browser-deps
	$(WITH_SERVICES) $(PY) -m pytest -q -m "not soak"

# The outage tests: Kafka, PostgreSQL, then S3, stopped for 30 s in the middle of a training run, each on a private server
# of its own started through infra/services (the shared ones of `make services` keep running). Minutes each; -s
# shows the outage figures they measure.
soak: install services migrate
	$(WITH_SERVICES) $(PY) -m pytest -q -s -m soak

test-unit: install $(LLAMA_STAMP)
	$(PY) -m pytest -q tests/unit

# The whole product on this machine in about two minutes (embedded broker, SQLite and a folder under .lfz/; no
# Docker): train, evaluate and sample through the real event pipeline. Report and plot in lfz-demo-output/.
demo: install
	$(VENV)/bin/lfz demo

# Every benchmark (model, pipeline, gateway), one after the other, against the servers of `make services`: one JSON
# document, docs/benchmarks.json, and the figures section of docs/benchmarks.md. About three minutes on two quiet cores.
# BENCH_DATA is the training text (empty: ../shared/data/tinyshakespeare.txt when it exists, else pydoc_data.topics);
# BENCH_ARGS goes to `python -m bench all` as it is (e.g. BENCH_ARGS=--quick to check that everything runs).
BENCH_DATA ?=
BENCH_ARGS ?=
BENCH_CORPUS = $(if $(BENCH_DATA),--data $(BENCH_DATA))

# The model's benchmarks run first, before this target starts the servers: on two cores an idle Kafka broker's JVM
# beside the training threads took 15-20% off its speed (p50 step 29 ms without the servers, 33-41 ms with them).
BENCH_REPRODUCE = --reproduce "make bench$(if $(BENCH_DATA), BENCH_DATA=$(BENCH_DATA))"

bench: install
	$(PY) -m bench all --only model_train,model_generate $(BENCH_CORPUS) $(BENCH_REPRODUCE) $(BENCH_ARGS)
	$(MAKE) services migrate
	$(WITH_SERVICES) $(PY) -m bench all --only agents,gateway,data --merge $(BENCH_CORPUS) $(BENCH_REPRODUCE) $(BENCH_ARGS)

# The same on the embedded defaults each benchmark starts for itself (Tansu, SQLite, a folder): no servers needed.
bench-embedded: install
	$(PY) -m bench all --embedded $(BENCH_CORPUS) --json-out docs/benchmarks-embedded.json --section bench-embedded \
		--reproduce "make bench-embedded$(if $(BENCH_DATA), BENCH_DATA=$(BENCH_DATA))" $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .lfz
