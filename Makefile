# Guided Descent — the front door.
#   make test   bootstraps .venv if missing, then runs every CPU test
#   make demo   bootstraps .venv if missing, then runs the course pipeline end to end
SHELL := /bin/bash
VENV ?= .venv
PY ?= $(VENV)/bin/python
# NO_SETUP=1 uses an existing environment as it is (e.g. a conda env with a CUDA torch: PY=python)
SETUP := $(if $(NO_SETUP),,setup)
PIP := $(VENV)/bin/pip
# torch is pinned through constraints.txt so that no dependency swaps in a CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_WORKERS ?= 2
# whole files per worker: module-scoped fixtures (a graded class, a grading run) are built once
PYTEST_DIST ?= loadfile
PYTEST_ARGS ?=

.PHONY: setup test test-fast test-gpu demo bench lectures release autograde feedback hub clean help

help:
	@echo "make setup      create $(VENV) and install gd_lib with the course and dev extras"
	@echo "make test       run every CPU test (notebooks in quick mode included)"
	@echo "make test-fast  the quick inner-loop subset (no slow tests)"
	@echo "make test-gpu   the GPU tests (-m gpu), on a machine with CUDA"
	@echo "make demo       the course pipeline end to end"
	@echo "make bench      step-time benchmarks against torch.optim"

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt "$(TORCH_SPEC)"
	$(PIP) install -q -c constraints.txt -e ".[course,dev]"
	touch $@

setup: $(VENV)/.installed

# pytest exits 5 when it collected nothing: that is a failure, not a pass.
define run_pytest
	$(PY) -m pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc
endef

test: $(SETUP)
	@GD_QUICK=1 MPLBACKEND=Agg $(call run_pytest,-n $(PYTEST_WORKERS) --dist $(PYTEST_DIST) -m "not gpu and not browser")

test-fast: $(SETUP)
	@GD_QUICK=1 MPLBACKEND=Agg $(call run_pytest,-n $(PYTEST_WORKERS) --dist $(PYTEST_DIST) -m "not gpu and not browser and not slow")

test-gpu: $(SETUP)
	@$(call run_pytest,-m gpu)

# The course pipeline end to end: the optimizers race (a plot), then release ->
# submissions -> sandboxed autograde -> feedback -> grade table, on a scratch course copy.
demo: $(SETUP)
	MPLBACKEND=Agg $(PY) -m gd_lib.demo --out out/demo
	$(PY) -m autograder.demo --out out/demo/course

bench: $(SETUP)
	$(PY) -m benchmarks

# --- the course: release, autograde, feedback (nbgrader, course/nbgrader_config.py) ---
ASSIGNMENTS := $(notdir $(wildcard solutions/[0-9]*))
A ?=
AUTOGRADE_ARGS ?=
NBGRADER := cd course && PATH="$(abspath $(VENV))/bin:$$PATH" $(abspath $(PY)) -m nbgrader

# Regenerate the student notebooks in assignments/ from solutions/ (all, or A=<assignment>).
release: $(SETUP)
	@for a in $(if $(A),$(A),$(ASSIGNMENTS)); do \
		echo "releasing $$a"; $(NBGRADER) generate_assignment $$a --force --log-level=WARN || exit 1; \
	done

# Grade every submission in course/submitted/<student>/$(A)/ into the gradebook (sandboxed, parallel).
autograde: $(SETUP)
	@test -n "$(A)" || { echo "usage: make autograde A=<assignment>" >&2; exit 2; }
	$(PY) -m autograder autograde $(A) $(AUTOGRADE_ARGS)

# Feedback HTML per student in course/feedback/, and the grade table in course/grades.csv.
feedback: $(SETUP)
	@test -n "$(A)" || { echo "usage: make feedback A=<assignment>" >&2; exit 2; }
	$(PY) -m autograder feedback $(A)
	$(PY) -m autograder export

# Execute every lecture (full mode; QUICK=1 for quick mode) into out/lectures/ as HTML.
QUICK ?=
LECTURE_TIMEOUT ?= 3600
lectures: $(SETUP)
	@mkdir -p out/lectures
	GD_QUICK=$(if $(QUICK),1,0) PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m jupyter nbconvert --to html --execute \
		--ExecutePreprocessor.timeout=$(LECTURE_TIMEOUT) --output-dir out/lectures lectures/[0-9]*.ipynb

# Filled by a later issue.
hub:
	@echo "make $@: not built yet (see the open issue: hub #8)" >&2; exit 2

clean:
	rm -rf out build *.egg-info .pytest_cache
