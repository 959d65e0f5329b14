# Two commands do all set-up on a fresh machine: `make book` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CHAPTER ?=
PROFILE ?= auto

.PHONY: install book build test test-fast status run mutate clean

# Creates the venv if missing and installs the pinned requirements; reruns only when they change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Re-executes chapters whose results at `auto` (gpu with CUDA, else cpu) are stale or missing, then builds the site.
book: install
	$(PY) -m distillbook run --stale --profile auto
	$(PY) -m distillbook build

build: install
	$(PY) -m distillbook build

test: install
	$(PY) -m pytest

# The library units only: no notebook runs, no site build, no browser (tests marked slow).
test-fast: install
	$(PY) -m pytest -m "not slow"

status: install
	$(PY) -m distillbook status

run: install
	@test -n "$(CHAPTER)" || { echo "usage: make run CHAPTER=<id> [PROFILE=smoke|cpu|gpu|auto]"; exit 2; }
	$(PY) -m distillbook run $(CHAPTER) --profile $(PROFILE)

# Mutation testing of the losses, the speculative sampler, the diffusion samplers and claims.py (config in
# pyproject.toml): mutmut mutates a copy in mutants/, never src/, and lists the surviving mutants at the end.
mutate: install
	$(VENV)/bin/mutmut run --max-children 1
	$(VENV)/bin/mutmut results

clean:
	rm -rf _build runs mutants
