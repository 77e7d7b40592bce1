# The one entry point: make run, make test, make lint.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch, installed first where the environment has no
# torch; GPU hosts install their own CUDA build beforehand (or set this).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

# PostgreSQL and Redis for the second test pass (make test-services).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# The suite runs in two parts: everything but the browser tests spread over
# TEST_WORKERS processes (pytest-xdist), then the browser tests one by one,
# as they share one stack of real processes.
# Each of them runs torch on TEST_THREADS threads: two processes of two
# threads on two cores spin against each other and take twice as long.
TEST_WORKERS ?= 2
TEST_THREADS ?= 1
PYTEST_ARGS ?=
define run_suite
	$(1) OMP_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest -n $(TEST_WORKERS) --ignore=tests/e2e $(PYTEST_ARGS)
	$(1) $(PY) -m pytest tests/e2e $(PYTEST_ARGS)
endef

.PHONY: help install translations model migrate run test test-services lint chromium clean bench train-bench knowledge-bench soak

help:
	@echo "make run            set up (first time) and start every process on http://127.0.0.1:8000"
	@echo "make test           set up (first time) and run the whole test suite"
	@echo "make test-services  the suite against PostgreSQL and Redis (TEST_DATABASE_URL, TEST_REDIS_URL)"
	@echo "make bench          the engine against transformers generate (BENCH_ARGS=...)"
	@echo "make train-bench    fine-tune and distill the default model on the demo data (TRAIN_BENCH_ARGS=...)"
	@echo "make knowledge-bench  retrieval and grounded answers on the demo help center (KNOWLEDGE_BENCH_ARGS=...)"
	@echo "make soak           500 idle chat sockets and 64 streaming chats against a stack of its own (SOAK_ARGS=...)"
	@echo "make lint           ruff, mypy, Django's system checks and the migrations check"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -c 'import torch' 2>/dev/null \
		|| $(PY) -m pip install --quiet --disable-pip-version-check '$(TORCH_SPEC)'
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,postgres]'
	$(PY) manage.py translations_compile
	@touch $@

install: $(STAMP)

# The translation catalogues (locale/*/LC_MESSAGES/*.mo) from their .po
# files, with polib: only those missing or older than their .po.
translations: install
	@$(PY) manage.py translations_compile

migrate: install
	$(PY) manage.py migrate --noinput

model: migrate
	$(PY) manage.py default_model

run: model translations
	$(PY) -m chatsite.launcher

chromium:
	@if command -v chromium >/dev/null 2>&1 && fc-list :lang=zh 2>/dev/null | grep -q .; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium and a Chinese font for the browser tests..."; \
		dpkg --configure -a >/dev/null 2>&1 || true; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --fix-broken chromium fonts-wqy-zenhei >/dev/null; \
	elif command -v chromium >/dev/null 2>&1; then \
		echo "note: no Chinese font installed; screenshots of Chinese pages show boxes (apt-get install fonts-wqy-zenhei)."; \
	else \
		echo "error: the browser tests need Chromium at /usr/bin/chromium."; \
		echo "       Install it (Debian/Ubuntu: sudo apt-get install chromium) and run make test again."; \
		exit 1; \
	fi

test: install chromium translations
	$(PY) manage.py default_model --no-register
	$(call run_suite,)

test-services: install chromium translations
	$(PY) manage.py default_model --no-register
	$(call run_suite,DATABASE_URL='$(TEST_DATABASE_URL)' REDIS_URL='$(TEST_REDIS_URL)')

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy chatsite chat models_admin inference tools
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

BENCH_ARGS ?=
bench: install model
	$(PY) -m tools.engine_bench $(BENCH_ARGS)
	$(PY) -m tools.filter_bench $(FILTER_BENCH_ARGS)
	$(PY) -m tools.controls_bench $(CONTROLS_BENCH_ARGS)

# Fine-tune and distill the default model on the demo dataset (about 30
# minutes on 2 cores); TRAIN_BENCH_ARGS as for python -m tools.train_bench.
train-bench: install model
	$(PY) -m tools.train_bench $(TRAIN_BENCH_ARGS)

# Knowledge retrieval and grounded answers on the demo help center
# (about 2 minutes on 2 cores); KNOWLEDGE_BENCH_ARGS as for python -m tools.knowledge_bench.
knowledge-bench: install model
	$(PY) -m tools.knowledge_bench $(KNOWLEDGE_BENCH_ARGS)

# Hold idle chat sockets and run streaming chats against a stack of its own
# (a tiny model); SOAK_ARGS as for python -m tools.soak.
SOAK_ARGS ?=
soak: install model
	$(PY) -m tools.soak $(SOAK_ARGS)
