# The two set-up commands: `make run` and `make test`. Both create .venv on first use;
# `make test` also installs the Debian packages the tests run (scripts/install-test-packages.sh).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export IMG_DATA_LOCATION ?= var/uploaded_img_data/category

.PHONY: run test test-packages lint format bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/doodle run

test: test-packages $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest

test-packages:
	scripts/install-test-packages.sh

lint: $(STAMP)
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

bench: $(STAMP)
	$(BIN)/python bench/predict.py

clean:
	rm -rf var
