# Two entry points (see README "Quickstart"): `make demo` and `make check`.
# Both create .venv if needed and install duet with torch; nothing here needs a model hub.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo check lint test

$(BIN)/duet: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e ".[dev]"
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

check: lint test
