# Two commands do everything on a fresh machine with Python >= 3.11:
#   make dev    embedded broker + worker + example handlers and events, results in the terminal
#   make test   the whole test suite (and ruff)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: dev test lint bench install browser

$(BIN)/signalbox: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,embedded,native]'
	touch $(BIN)/signalbox

# The matcher compiled with mypyc, beside the plain-Python sources it is used for only while
# they are unchanged (streams/native.py); without a C compiler it is skipped, not an error.
install: $(BIN)/signalbox
	$(BIN)/signalbox native build

dev: install
	$(BIN)/signalbox dev

lint: install
	$(BIN)/ruff check .

# Debian's chromium for the dashboard's browser tests, where missing and apt can (else they skip)
browser:
	.ci/install-browser

test: install lint browser
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

bench: install
	$(BIN)/python bench/bench_matcher.py
	$(BIN)/python bench/bench_e2e.py
