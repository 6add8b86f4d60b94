# The README's commands. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo dev serve test bench lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/personalization demo

dev: $(STAMP)
	$(BIN)/personalization dev

# The demo's write and read keys unless EVENTS_WRITE_KEYS / PERSONALIZE_READ_KEYS are set; the
# command alone refuses to start without a write key.
serve: $(STAMP)
	EVENTS_WRITE_KEYS="$${EVENTS_WRITE_KEYS:-demo-write-key}" \
	PERSONALIZE_READ_KEYS="$${PERSONALIZE_READ_KEYS:-demo-read-key}" $(BIN)/personalization serve

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache data/warehouse.duckdb .dagster_home
