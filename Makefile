# recbole_ortho — one-command install and test.
#   make install   creates .venv/ and installs the pinned stack + this package (editable)
#   make test      installs if needed, then runs the default test suite, checks the results pages and builds the docs
#   make docs      builds the documentation site into site/ (strict: a broken link fails)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed

.PHONY: install test test-slow docs clean

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
	# every published results page is what its run stores give (docs/analysis.md)
	OMP_NUM_THREADS=1 $(PY) -m recbole_ortho.analysis --check
	# the documentation site (docs/, mkdocs.yml), strictly: a broken link or a missing page fails
	$(PY) -m mkdocs build --strict --site-dir site

docs: install
	$(PY) -m mkdocs build --strict --site-dir site

test-slow: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) build site *.egg-info
