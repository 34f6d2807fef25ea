# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime
EXAMPLE := examples/store_sales
# The forecast extra (statsforecast, which asks for pandas < 3) is tested in a virtualenv of its own: .venv keeps
# pandas 3, so both are tested.
FORECAST_VENV ?= .venv-forecast
FORECAST := $(FORECAST_VENV)/.installed

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

# Made inside `test`'s recipe (not as a recursive make: `make -n test` would run one), when pyproject.toml is newer.
FORECAST_SETUP := { test -x $(FORECAST_VENV)/bin/python || $(PYTHON) -m venv $(FORECAST_VENV); } \
	&& $(FORECAST_VENV)/bin/python -m pip install --quiet --upgrade pip \
	&& $(FORECAST_VENV)/bin/python -m pip install --quiet -e '.[test-forecast]' && touch $(FORECAST)

$(FORECAST): pyproject.toml
	$(FORECAST_SETUP)

install: $(INSTALLED)

demo: $(RUNTIME)
	$(BIN)/python $(EXAMPLE)/generate.py --stores 1000 --out $(EXAMPLE)/data
	cd $(EXAMPLE) && ../../$(BIN)/manymodels run weekly

lint: $(INSTALLED)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

# Two pytest processes side by side: the files marked `apart` (tests/conftest.py: real processes that mostly
# wait) beside the rest; then, in the second, the forecast extra's virtualenv is made and tests/extra run in it.
# The second's report follows the first's. Any of them failing fails the target.
test: lint
	{ $(BIN)/pytest -m apart -p no:cacheprovider --ignore=tests/extra; first=$$?; \
	  { test $(FORECAST) -nt pyproject.toml || { $(FORECAST_SETUP); }; } \
	  && $(FORECAST_VENV)/bin/pytest tests/extra -p no:cacheprovider; \
	  extra=$$?; test $$first -eq 0 && test $$extra -eq 0; } > .pytest-apart.log 2>&1 & apart=$$!; \
	$(BIN)/pytest -m "not apart" --ignore=tests/extra; rest=$$?; \
	wait $$apart; other=$$?; \
	echo "===== the tests run apart (pytest -m apart), then the forecast extra's (tests/extra) ====="; \
	cat .pytest-apart.log; \
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
	rm -rf $(VENV) $(FORECAST_VENV) $(EXAMPLE)/data $(EXAMPLE)/.manymodels .pytest_cache .mypy_cache .ruff_cache .pytest-apart.log
