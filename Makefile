# vlpbench: `make help` lists the targets.  Every target that runs code depends on `install`,
# so `make bench` and `make test` work on a fresh clone with nothing else typed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vlpbench-installed
# Threads used by measurements (recorded in every result); see README "Protocol".
THREADS ?= 1
PROFILE ?= default
# Profile of `make accuracy` (default: 3 seeds within 60 min on 2 cores; full: the bar-passing budget, for a GPU
# with ACCURACY_DEVICE=cuda; quick: one seed, fewer steps).
ACCURACY_PROFILE ?= default
ACCURACY_DEVICE ?= auto
# The study trains ACCURACY_JOBS runs at once, each a process with THREADS threads (2 x 1 fills 2 cores).
ACCURACY_JOBS ?= 2
# glibc returns large activations to the OS after every forward unless told not to, which doubles
# large-image timings on CPU (REFERENCE.md section 7).  Set here so it is in force when Python starts.
export GLIBC_TUNABLES ?= glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736

.DEFAULT_GOAL := help
.PHONY: help install test test-all bench bench-transformers compare accuracy report clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install vlpbench with its test extras (a no-op when nothing changed)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

test: install ## Run the test suite, slow tests left out (what CI runs)
	$(BIN)/python -m pytest -m "not slow" -q

test-all: install ## Run every test, slow ones included
	$(BIN)/python -m pytest -q

bench: install ## Embedder latency tables (Markdown, CSV, PNG, JSON) under reports/bench/
	@mkdir -p reports/bench
	$(BIN)/python -m pytest benchmarks/test_embedders.py -q -p no:cacheprovider \
		--benchmark-json=reports/bench/pytest-benchmark.json --benchmark-columns=median,iqr,rounds \
		--vlpbench-threads=$(THREADS) --vlpbench-profile=$(PROFILE)

bench-transformers: install ## Our ViLT-B/32 and CLIP ViT-B/32 against transformers' models, same run (ratios)
	$(BIN)/python -m pytest benchmarks/bench_vs_transformers.py -q -p no:cacheprovider --vlpbench-threads=$(THREADS)

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
