# mmdat: `make demo` runs the main job, `make test` the test suite. Both set up the
# environment (tools/setup_env.sh) on first use; a second set-up takes seconds.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-all
setup:
	@MMDAT_VENV=$(VENV) bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py $(DEMO_ARGS)

test: setup
	$(PY) -m pytest tests -q -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest tests -q $(PYTEST_ARGS)
