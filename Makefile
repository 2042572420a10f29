# Every target sets up what it needs first: a virtualenv with the pinned dependencies.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.txt apps/requirements.txt | cksum | cut -d' ' -f1)
export PYTHONPATH := $(CURDIR)/apps

.PHONY: venv run test check format lock clean

venv: $(STAMP)

$(STAMP): requirements-dev.txt apps/requirements.txt
	@echo "==> setting up $(VENV) from the pinned requirements"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --disable-pip-version-check --quiet --requirement requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

## run: the three services in the foreground (Ctrl-C stops all three)
run: $(STAMP)
	$(BIN)/python -m shop.devrun

## test: the whole test suite
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## check: formatting, lint and strict types
check: $(STAMP)
	$(BIN)/ruff format --check apps tests
	$(BIN)/ruff check apps tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format apps tests
	$(BIN)/ruff check --fix apps tests

## lock: re-pin apps/requirements.txt from apps/requirements.in
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --disable-pip-version-check --quiet --requirement apps/requirements.in
	{ echo "# Generated from requirements.in by 'make lock': every runtime package, pinned."; \
	  .lock-venv/bin/pip freeze --all --exclude pip --exclude setuptools --exclude wheel; } > apps/requirements.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache data
