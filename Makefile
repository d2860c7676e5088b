# vlpbench: `make help` lists the targets.  Every target that runs code depends on `install`,
# so `make bench` and `make test` work on a fresh clone with nothing else typed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vlpbench-installed
LINT_STAMP := $(VENV)/.vlpbench-lint-installed
# Threads used by measurements (recorded in every result); see README "Protocol".
THREADS ?= 1
PROFILE ?= default
# `make bench-transformers BF16=1` adds ours under CPU bf16 autocast (off by default: the slowest leg).
BF16 ?= 0
# Profile of `make accuracy` (default: 3 seeds, sized for 60 min on 2 cores; full: each model at the budget it
# was measured to pass the bar at, 15 thread-hours of CPU training, meant for ACCURACY_DEVICE=cuda; quick: one
# seed, fewer steps).
ACCURACY_PROFILE ?= default
ACCURACY_DEVICE ?= auto
# The study trains ACCURACY_JOBS runs at once, each a process with THREADS threads (2 x 1 fills 2 cores).
ACCURACY_JOBS ?= 2
# Backend of the region-feature embedders in `make bench` (torchvision, or detectron2 after install-detectron2).
BACKEND ?= torchvision
# detectron2 has no PyPI release.  install-detectron2 uses a prebuilt wheel from ../shared/wheels when there is
# one, otherwise builds it from its git source (about 25 minutes on 2 cores).
D2_WHEEL ?= $(firstword $(wildcard ../shared/wheels/detectron2-*.whl))
D2_GIT   ?= git+https://github.com/facebookresearch/detectron2.git
# glibc returns large activations to the OS after every forward unless told not to, which doubles
# large-image timings on CPU (measured: docs/reference.md section 7).  Set here so it is in force when Python starts.
export GLIBC_TUNABLES ?= glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736

.DEFAULT_GOAL := help
.PHONY: help install install-detectron2 test test-all lint format bench bench-transformers compare accuracy report clean

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install vlpbench with its test extras (a no-op when nothing changed)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

# From source: --no-build-isolation because detectron2's setup.py imports torch (absent from an isolated build
# env); setuptools<81 still ships pkg_resources, which detectron2's model_zoo imports (vlpbench does not use it).
install-detectron2: install ## Install detectron2 into .venv (region backend="detectron2"; shared wheel or git source)
	@if [ -n "$(D2_WHEEL)" ]; then \
		echo "installing $(D2_WHEEL)"; $(BIN)/python -m pip install -q "$(D2_WHEEL)"; \
	else \
		echo "no wheel in ../shared/wheels: building detectron2 from $(D2_GIT)"; \
		$(BIN)/python -m pip install -q "setuptools<81" wheel ninja && \
		MAX_JOBS=$${MAX_JOBS:-1} $(BIN)/python -m pip install -q --no-build-isolation "$(D2_GIT)"; \
	fi
	$(BIN)/python -c "from vlpbench.embedders.detectron2_backend import import_detectron2 as d; print('detectron2', d().__version__, 'imports')"

test: install ## Run the test suite, slow tests left out (what CI runs)
	$(BIN)/python -m pytest -m "not slow" -q

test-all: install ## Run every test, slow ones included
	$(BIN)/python -m pytest -q

lint: $(LINT_STAMP) ## ruff check, ruff format --check and mypy (settings in pyproject.toml; CI runs it after the tests)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

format: $(LINT_STAMP) ## ruff: apply the safe fixes and reformat the tree (tools/lint-fix.sh); then make lint passes
	PYTHON=$(BIN)/python bash tools/lint-fix.sh

$(LINT_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[lint]'
	@touch $@

bench: install ## Embedder latency tables (Markdown, CSV, PNG, JSON) under reports/bench/
	@mkdir -p reports/bench
	$(BIN)/python -m pytest benchmarks/test_embedders.py -q -p no:cacheprovider \
		--benchmark-json=reports/bench/pytest-benchmark.json --benchmark-columns=median,iqr,rounds \
		--vlpbench-threads=$(THREADS) --vlpbench-profile=$(PROFILE) --vlpbench-backend=$(BACKEND)

bench-transformers: install ## Our ViLT-B/32 and CLIP ViT-B/32 against transformers' models: interleaved ratios with a CI (BF16=1 adds a bf16 leg)
	VLPBENCH_BF16=$(BF16) $(BIN)/python -m pytest benchmarks/bench_vs_transformers.py -q -p no:cacheprovider --vlpbench-threads=$(THREADS)

compare: install ## Side-by-side breakdown of ViLT and CLIP (vlpbench compare --arch vilt,clip)
	$(BIN)/vlpbench compare --arch vilt,clip --threads $(THREADS)

report: install ## Build a report (Markdown, HTML, figures) from every run under reports/runs
	@ls -d reports/runs/*/ >/dev/null 2>&1 || { echo "no runs under reports/runs: run make bench or vlpbench compare first"; exit 2; }
	$(BIN)/vlpbench report $$(ls -d reports/runs/*/) --out reports/report/latest

accuracy: install ## Accuracy study under reports/accuracy/: detector, RN / CNN+MLP calibration, every class x 3 seeds, tables
	$(BIN)/python -m vlpbench study --profile $(ACCURACY_PROFILE) --out reports/accuracy \
		--jobs $(ACCURACY_JOBS) --threads $(THREADS) --device $(ACCURACY_DEVICE)

clean: ## Remove build artefacts (keeps .venv and reports)
	rm -rf build dist *.egg-info .pytest_cache
