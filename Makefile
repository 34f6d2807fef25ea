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

# Two pytest processes side by side: the files marked `apart` (tests/conftest.py: real processes that mostly
# wait) beside the rest; the second's report follows the first's. Either failing fails the target.
test: lint
	$(BIN)/pytest -m apart -p no:cacheprovider > .pytest-apart.log 2>&1 & apart=$$!; \
	$(BIN)/pytest -m "not apart"; rest=$$?; \
	wait $$apart; other=$$?; \
	echo "===== the tests run apart (pytest -m apart) ====="; cat .pytest-apart.log; \
	test $$rest -eq 0 && test $$other -eq 0

# Benchmarks (not part of `make test`): needs the [bench] extra (pyspark for the seed pattern) and ../shared/bench.
bench: $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/train_bench.py
	$(BIN)/python bench/memory_bench.py
	$(BIN)/python bench/spark_bench.py
	$(BIN)/python bench/forecast_bench.py
	$(BIN)/python bench/forecast_speed.py

clean:
	rm -rf $(VENV) $(EXAMPLE)/data $(EXAMPLE)/.manymodels .pytest_cache .mypy_cache .ruff_cache .pytest-apart.log
