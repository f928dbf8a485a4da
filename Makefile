# recbole_ortho — one-command install and test.
#   make install   creates .venv/ and installs the pinned stack + this package (editable)
#   make test      installs if needed, then runs the default test suite and checks the results pages
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed

.PHONY: install test test-slow clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -r requirements-nodeps.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import recbole, recbole_cdr, recbole_ortho; print('recbole_ortho installed in $(VENV)')"
	touch $(STAMP)

test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q
	# every published results page is what its run stores give (README "Results")
	OMP_NUM_THREADS=1 $(PY) -m recbole_ortho.analysis --check

test-slow: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) build *.egg-info
