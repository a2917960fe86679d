# One command each: `make sweep` (the main job), `make test` (the whole suite). Both set themselves up.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned: an unpinned torch would pull several GB of CUDA packages.
export PIP_FIND_LINKS ?= /opt/wheels
export UV_FIND_LINKS ?= /opt/wheels
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup sweep train test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

sweep: setup  ## the default sweep: ppo_knobs on the torch pendulum, 2 workers, journal storage, W&B offline
	$(VENV)/bin/workbench sweep ppo_knobs --workers 2

train: setup  ## one default training run (torch pendulum)
	$(VENV)/bin/workbench train

test: setup  ## every test, slow ones included (what CI runs)
	$(PY) -m pytest -q --timeout=900; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

test-fast: setup  ## skip the slow learning and multi-process tests
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) outputs multirun
