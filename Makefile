# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime
EXAMPLE := examples/store_sales

.PHONY: demo test lint install bench clean

# The runtime alone (what `make demo` needs: no test tools, no pyspark), or with the dev extra.
$(RUNTIME): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(INSTALLED): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

demo: $(RUNTIME)
	$(BIN)/python $(EXAMPLE)/generate.py --stores 1000 --out $(EXAMPLE)/data
	cd $(EXAMPLE) && ../../$(BIN)/manymodels run weekly

lint: $(INSTALLED)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# Benchmarks (not part of `make test`): needs the [bench] extra (pyspark for the seed pattern) and ../shared/bench.
bench: $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/train_bench.py
	$(BIN)/python bench/memory_bench.py
	$(BIN)/python bench/spark_bench.py

clean:
	rm -rf $(VENV) $(EXAMPLE)/data $(EXAMPLE)/.manymodels .pytest_cache .mypy_cache .ruff_cache
