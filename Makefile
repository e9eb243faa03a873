# BrightRun: `make run` starts the local stack and the dashboard; `make test` runs every test.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# vLLM's CPU build, in its own environment (it pins its own torch and transformers).
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: install run test lint lock lock-upgrade postgres chromium migrate bench-quick vllm

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Every environment installs from its lock only (tools/lock.py): exact versions with hashes,
# transitive packages included, nothing resolved at install time. The build tools are
# installed first (requirements-build.lock): what has no wheel (llama-cpp-python,
# rouge_score) and the editable install build on them, not on the newest tools of the day
# fetched into an isolated build.
LOCKED := --require-hashes --no-deps -r
BUILT := --no-build-isolation $(LOCKED)

$(STAMP): requirements.lock requirements-build.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(LOCKED) requirements-build.lock
	$(BIN)/pip install -q $(BUILT) requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(DEV_STAMP): $(STAMP) requirements-dev.lock
	$(BIN)/pip install -q $(BUILT) requirements-dev.lock
	$(BIN)/pip check
	touch $@

install: $(STAMP)

$(VLLM_VENV)/bin/python:
	$(PY) -m venv $(VLLM_VENV)

# Its lock leaves out the CUDA builds of torchvision, torchaudio and torchcodec that vLLM
# asks for: they fail to import on a CPU machine, and vLLM serves text models without them.
$(VLLM_STAMP): requirements-vllm.lock | $(VLLM_VENV)/bin/python
	$(VLLM_VENV)/bin/pip install -q $(LOCKED) requirements-vllm.lock
	touch $@

# Real vLLM for the inference contract tests and `INFERENCE_ENGINE=vllm brightrun up`.
vllm: $(VLLM_STAMP)

# Bring the locks in line with the requirements*.txt files, keeping locked versions where
# they still fit; lock-upgrade moves every package to the newest version they admit.
lock: $(DEV_STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python tools/lock.py

lock-upgrade: $(DEV_STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python tools/lock.py --upgrade

migrate: install
	$(BIN)/brightrun db upgrade

run: install migrate
	$(BIN)/brightrun up

# The import layers (contracts in pyproject.toml): core never imports the dashboard or local,
# the trainer never imports the controller, and so on.
lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo

# PostgreSQL at 127.0.0.1:5432 is used by the state tests; start it when it is down.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; echo "PostgreSQL did not start"; exit 1

# The browser test drives Debian's chromium; never a browser downloaded by a test tool.
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# The inference contract runs against real vLLM too (a missing .venv-vllm fails those tests).
test: $(DEV_STAMP) $(VLLM_STAMP) postgres chromium lint
	$(BIN)/python -m pytest

bench-quick: $(DEV_STAMP)
	$(BIN)/python bench/trainer.py --quick
