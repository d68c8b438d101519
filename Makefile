# The README's commands. Everything a fresh machine needs is installed from here.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
UV := python3 -m uv
# Use the machine's Python; never download an interpreter.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Installed packages come with their bytecode (pip's default, not uv's), and install
# compiles src/ too: where PYTHONDONTWRITEBYTECODE is set no process writes its own,
# so every start (each CLI call, each `serve` an end-to-end test runs) compiled the
# whole import graph from source again, about 3 s of CPU.
export UV_COMPILE_BYTECODE := 1
PYTEST_ARGS ?=

.PHONY: help uv install run test lint format bench clean

help:
	@echo "make run      start cryptodesk on http://127.0.0.1:8000 (embedded defaults)"
	@echo "make test     install everything, then lint, type-check and run the test suite"
	@echo "make install  create/update .venv with the project (.venv/bin/cryptodesk)"
	@echo "make lint     ruff + mypy"
	@echo "make bench    run benchmarks/, write benchmarks/results/ and BENCHMARKS.md"

uv:
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

install: uv
	$(UV) sync --frozen --python python3
	$(BIN)/python -m compileall -q -j0 src

run: install
	$(BIN)/cryptodesk db upgrade
	exec $(BIN)/cryptodesk serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install
	bash scripts/system-deps.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadgroup --cov --cov-report=term --cov-fail-under=85 $(PYTEST_ARGS)

bench: install
	bash scripts/system-deps.sh
	$(UV) sync --frozen --python python3 --group bench
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf .cryptodesk .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache htmlcov
