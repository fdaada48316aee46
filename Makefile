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

.PHONY: setup demo check lint test test-invariants check-oldest check-latest lock

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

# after the suite passed on a changed environment: write what .venv holds as the new lock
lock: setup
	{ echo "# The tested environment, exact versions (pip install -c $(LOCK)); written by make lock."; \
	  echo "# Change it only together with a green make check (README: Versions and contributing)."; \
	  $(BIN)/python -m pip freeze --all --exclude-editable | grep -v '^duet-cli'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

check: lint test
