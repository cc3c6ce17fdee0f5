# slm-lsp: `make` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SAMPLE ?= examples/circle.py:6:12

.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# llama.cpp is compiled for this machine's CPU, without its AMX kernels on x86-64: some virtual
# machines advertise AMX and fault on its first instruction (SIGILL), and the small batches of
# code completion gain nothing from it. CMAKE_ARGS from the environment (CUDA, ...) come after.
ifeq ($(shell uname -m),x86_64)
NO_AMX = -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS ?= -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF '-DCMAKE_C_FLAGS=$(NO_AMX)' '-DCMAKE_CXX_FLAGS=$(NO_AMX)'
endif
LLAMA_SPEC = $(shell grep -o '"llama-cpp-python[^"]*"' pyproject.toml)

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# --no-cache-dir: a wheel that pip cached from an earlier build (other flags) is not reused.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $$CMAKE_ARGS" $(BIN)/pip install -q --no-cache-dir $(LLAMA_SPEC)
	$(BIN)/pip install -q -e '.[dev,finetune,bench]'
	touch $@

install: $(BIN)/.installed  ## create .venv and install slm-lsp with the dev tools, the finetune extra and the bench extra (matplotlib, for the session plot and its test) (builds llama.cpp: ~7 min on 2 cores; torch==2.13.0 is the CPU wheel)

demo: $(BIN)/.installed  ## print a completion for examples/circle.py, with timings (downloads the default model if none is set)
	$(BIN)/slm-lsp complete $(SAMPLE) --pull

lint: $(BIN)/.installed  ## ruff + mypy
	$(BIN)/ruff check slm_lsp finetune tests
	$(BIN)/mypy

test: lint  ## lint, then the whole test suite (real-model tests too when SLM_LSP_TEST_MODEL is set)
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed  ## typing replay and HumanEval on $$SLM_LSP_MODEL
	$(BIN)/slm-lsp bench typing slm_lsp/engine/prompt.py --lines 20
	$(BIN)/slm-lsp bench humaneval -n 60

# The team server: llama.cpp's llama-server from the llama.cpp inside the llama-cpp-python sdist
# that .venv runs, into .cache/llama-server/bin (bench team and its test find it there).
llama-server:  ## build llama-server for bench team (~30 min on 2 busy cores; CMAKE_ARGS=-DGGML_CUDA=ON for CUDA)
	LLAMA_CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" scripts/build-llama-server.sh

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

VSCODE = editors/vscode

# npm ci writes node_modules/.package-lock.json: reinstall when the lock file is newer.
$(VSCODE)/node_modules/.package-lock.json: $(VSCODE)/package-lock.json
	cd $(VSCODE) && npm ci

vscode: $(VSCODE)/node_modules/.package-lock.json  ## build and package the VS Code extension (.vsix)
	cd $(VSCODE) && npm run lint && npm run package
	@echo "install it: code --install-extension $(VSCODE)/slm-lsp-$$(cd $(VSCODE) && node -p 'require("./package.json").version').vsix"

.PHONY: vscode

.PHONY: help install demo lint test bench clean llama-server
