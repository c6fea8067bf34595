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

.PHONY: setup test test-fast test-gpu test-browser demo bench lint lock lectures site site-setup release autograde feedback integrity report hub hub-setup hub-trial clean help

help:
	@echo "make setup      create $(VENV) at the locked versions (requirements-lock.txt) with gd_lib, the course and dev extras, and bubblewrap (apt)"
	@echo "make test       run every CPU test (notebooks in quick mode included)"
	@echo "make test-fast  the quick inner-loop subset (no slow tests)"
	@echo "make test-gpu   the GPU tests (-m gpu), on a machine with CUDA"
	@echo "make test-browser  the browser tests (-m browser): installs Chromium, JupyterHub, the proxy"
	@echo "make site       the course website in out/site/ (lectures executed, cached; QUICK=1 for quick mode)"
	@echo "make hub        the course's JupyterHub for a class on this machine (see README)"
	@echo "make hub-trial  the same hub to try out: shared passwords, a scratch course in out/hub"
	@echo "make demo       the course pipeline end to end"
	@echo "make bench      step-time benchmarks against torch.optim"
	@echo "make lint       ruff: lint and format check (the same as the pre-commit hooks)"
	@echo "make lock       refresh requirements-lock.txt and requirements-gpu-lock.txt from pyproject.toml"
	@echo "make integrity A=<assignment>  near-identical answers and near-copies of library source (no score changes)"
	@echo "make report A=<assignment>  item analysis after grading: pass rate per check, classic mistakes, scores"

# Every package at the version of requirements-lock.txt (pip included): what CI passed with.
LOCK := requirements-lock.txt
PIP_LOCKED := $(PIP) install -q -c constraints.txt -c $(LOCK)
$(VENV)/.installed: pyproject.toml constraints.txt $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP_LOCKED) --upgrade pip
	$(PIP_LOCKED) "$(TORCH_SPEC)"
	$(PIP_LOCKED) -e ".[course,dev]"
	touch $@

# bubblewrap builds the grading sandbox (autograder/bwrap.py): Debian's package, installed when missing.
BWRAP ?= /usr/bin/bwrap
$(BWRAP):
	@if [ "$$(id -u)" != 0 ]; then echo "bubblewrap is missing: run 'apt-get install -y bubblewrap' as root" >&2; exit 1; fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends bubblewrap >/dev/null

setup: $(VENV)/.installed $(BWRAP)

# pytest exits 5 when it collected nothing: that is a failure, not a pass.
define run_pytest
	$(PY) -m pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc
endef

test: $(SETUP) site-setup
	@GD_QUICK=1 MPLBACKEND=Agg $(call run_pytest,-n $(PYTEST_WORKERS) --dist $(PYTEST_DIST) -m "not gpu and not browser")

test-fast: $(SETUP) site-setup
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

# Lint and format check (ruff, configured in pyproject.toml; .pre-commit-config.yaml runs the same).
LINT_PATHS ?= .
lint: $(SETUP)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)

# Refresh both locks from the ranges of pyproject.toml (tools/lock.py; README "A reproducible
# environment"), then `make setup` installs them and `make test` must pass before they are committed.
lock: $(SETUP)
	$(PY) tools/lock.py --torch "$(TORCH_SPEC)"

# --- the course: release, autograde, feedback (nbgrader, course/nbgrader_config.py) ---
ASSIGNMENTS := $(notdir $(wildcard solutions/[0-9]*))
A ?=
AUTOGRADE_ARGS ?=
NBGRADER := PATH="$(abspath $(VENV))/bin:$$PATH" $(abspath $(PY)) -m nbgrader

# Regenerate the student notebooks in assignments/ from solutions/ (all, or A=<assignment>).
# nbgrader runs from course/ (its config) in a subshell per assignment: the loop stays in the root.
release: $(SETUP)
	@for a in $(if $(A),$(A),$(ASSIGNMENTS)); do \
		echo "releasing $$a"; (cd course && $(NBGRADER) generate_assignment $$a --force --log-level=WARN) || exit 1; \
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

# The integrity report for the instructor: near-identical answers and near-copies of the library's
# source, ranked, lines side by side, in course/reports/$(A)/integrity.html (changes no score).
INTEGRITY_ARGS ?=
integrity: $(SETUP)
	@test -n "$(A)" || { echo "usage: make integrity A=<assignment>" >&2; exit 2; }
	$(PY) -m autograder integrity $(A) $(INTEGRITY_ARGS)

# The item analysis for the instructor, after grading: pass rate of each check across the class, the
# classic mistakes diagnosed and how often, the score histogram, in course/reports/$(A)/report.html
# (reads the grader's results and the gradebook; changes no score).
REPORT_ARGS ?=
report: $(SETUP)
	@test -n "$(A)" || { echo "usage: make report A=<assignment>" >&2; exit 2; }
	$(PY) -m autograder report $(A) $(REPORT_ARGS)

# Execute every lecture (full mode; QUICK=1 for quick mode; STEP_SCALE=0.01 for full mode with its
# training loops cut to 1 %) into out/lectures/ as HTML and executed notebooks, printing each one's
# time. Each cell gets the timeout its notebook names for the mode (gd_lib.notebooks: minutes);
# LECTURE_TIMEOUT=<seconds> overrides it, LECTURES=lectures/04_mup.ipynb picks lectures.
QUICK ?=
STEP_SCALE ?=
LECTURE_TIMEOUT ?=
LECTURES ?= $(wildcard lectures/[0-9]*.ipynb)
lectures: $(SETUP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m gd_lib.notebooks --out out/lectures $(if $(QUICK),--quick) \
		$(if $(STEP_SCALE),--step-scale $(STEP_SCALE)) $(if $(LECTURE_TIMEOUT),--timeout $(LECTURE_TIMEOUT)) $(LECTURES)

# --- the course website (site/: Sphinx + MyST-NB + the book theme; README "The course website") ---
# The lectures run in quick mode with QUICK=1, else in full mode when CUDA is there and quick mode when not;
# jupyter-cache (in $(SITE_WORK)/cache) keeps their outputs, so an unchanged lecture does not run again.
SITE_OUT ?= out/site
SITE_WORK ?= out/site-build
# where the lectures' "open on the hub" links go: the hub, and the repository nbgitpuller pulls into it
SITE_HUB ?= http://127.0.0.1:$(HUB_PORT)
SITE_REPO ?= $(or $(shell git remote get-url origin 2>/dev/null),https://github.com/CHANGE-ME/guided-descent)
SITE_BRANCH ?= main
SITE_ARGS ?=
SITE_MATHJAX := $(SITE_WORK)/npm/node_modules/mathjax/es5/tex-chtml-full.js
SITE_SETUP := $(if $(NO_SETUP),,$(VENV)/.site-installed) $(SITE_MATHJAX)

$(VENV)/.site-installed: pyproject.toml constraints.txt $(LOCK) | $(SETUP)
	$(PIP_LOCKED) -e ".[course,dev,site]"
	touch $@

# MathJax from the npm registry, at the version site/package-lock.json pins, served by the site itself.
$(SITE_MATHJAX): site/package.json site/package-lock.json
	mkdir -p $(SITE_WORK)/npm
	cp site/package.json site/package-lock.json $(SITE_WORK)/npm/
	cd $(SITE_WORK)/npm && npm ci --no-audit --no-fund --loglevel=error
	touch $@

site-setup: $(SITE_SETUP)

site: site-setup
	@$(PY) site/build.py --out $(SITE_OUT) --work $(SITE_WORK) \
		--mode $(if $(QUICK),quick,auto) --timeout $(or $(LECTURE_TIMEOUT),900) \
		--hub-url "$(SITE_HUB)" --repository "$(SITE_REPO)" --branch "$(SITE_BRANCH)" $(SITE_ARGS)

# --- the course's JupyterHub (course/hub/) and the browser tests ---
# `make hub` runs the hub for a class on this machine: the machine's Unix accounts log in (PAM),
# each server runs as its user. Run it as root, from an environment every user can read (README).
HUB_AUTH ?= pam
HUB_SPAWNER ?= local
HUB_IP ?= 127.0.0.1
HUB_PORT ?= 8000
HUB_STATE ?= /srv/jupyterhub
HUB_INSTRUCTORS ?= instructor
HUB_STUDENTS ?=
NBGRADER_EXCHANGE ?= /srv/nbgrader/exchange
COURSE_ROOT ?= $(CURDIR)
HUB_PASSWORD ?=
HUB_ADMIN_PASSWORD ?=
CHP := .hub/node_modules/.bin/configurable-http-proxy
HUB_ENV = GD_HUB_AUTH="$(HUB_AUTH)" GD_HUB_SPAWNER="$(HUB_SPAWNER)" GD_HUB_IP="$(HUB_IP)" GD_HUB_PORT="$(HUB_PORT)" \
	GD_HUB_STATE="$(HUB_STATE)" GD_HUB_INSTRUCTORS="$(HUB_INSTRUCTORS)" GD_HUB_STUDENTS="$(HUB_STUDENTS)" \
	GD_NBGRADER_EXCHANGE="$(NBGRADER_EXCHANGE)" GD_COURSE_ROOT="$(abspath $(COURSE_ROOT))" \
	GD_HUB_PASSWORD="$(HUB_PASSWORD)" GD_HUB_ADMIN_PASSWORD="$(HUB_ADMIN_PASSWORD)" GD_HUB_CHP="$(abspath $(CHP))" \
	PATH="$(abspath $(VENV))/bin:$$PATH"

# JupyterHub and Playwright (the hub extra), pinned with torch's constraints like everything else.
$(VENV)/.hub-installed: pyproject.toml constraints.txt $(LOCK) | $(SETUP)
	$(PIP_LOCKED) -e ".[course,dev,hub]"
	touch $@

# configurable-http-proxy from the npm registry, at the version course/hub/package-lock.json pins.
$(CHP): course/hub/package.json course/hub/package-lock.json
	mkdir -p .hub
	cp course/hub/package.json course/hub/package-lock.json .hub/
	cd .hub && npm ci --no-audit --no-fund --loglevel=error
	touch $@

hub-setup: $(if $(NO_SETUP),,$(VENV)/.hub-installed) $(CHP)

hub: hub-setup
	@$(HUB_ENV) $(PY) -m jupyterhub -f course/hub/jupyterhub_config.py

# The same hub to try out, without Unix accounts: shared passwords (generated into
# out/hub/passwords.txt unless given), every server under this account, a scratch course.
hub-trial: hub-setup
	@mkdir -p out/hub/course-root/course
	@test -d out/hub/course-root/solutions || cp -r solutions out/hub/course-root/solutions
	@cp course/nbgrader_config.py out/hub/course-root/course/
	@test -f out/hub/passwords.txt || printf 'student password: %s\ninstructor password: %s\n' \
		"$$($(PY) -c 'import secrets; print(secrets.token_hex(6))')" \
		"$$($(PY) -c 'import secrets; print(secrets.token_hex(16))')" > out/hub/passwords.txt
	@echo "JupyterHub on http://$(HUB_IP):$(HUB_PORT): log in as '$(HUB_INSTRUCTORS)' (instructor) or any other name (student)"
	@cat out/hub/passwords.txt
	@$(MAKE) --no-print-directory hub HUB_AUTH=shared-password HUB_SPAWNER=simple HUB_STATE=$(CURDIR)/out/hub/state \
		NBGRADER_EXCHANGE=$(CURDIR)/out/hub/exchange COURSE_ROOT=$(CURDIR)/out/hub/course-root \
		HUB_PASSWORD="$$(sed -n 's/^student password: //p' out/hub/passwords.txt)" \
		HUB_ADMIN_PASSWORD="$$(sed -n 's/^instructor password: //p' out/hub/passwords.txt)"

# Debian's Chromium, for the browser tests (Playwright drives it; it never downloads a browser of its own).
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" != 0 ]; then echo "Chromium is missing: run 'apt-get install -y chromium' as root" >&2; exit 1; fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null

BROWSER_SCREENSHOTS ?= out/browser-screenshots
BROWSER_TESTS := $(wildcard tests/test_browser_*.py)
# The site's browser test reads the site `make site` built (quick mode: QUICK=1), with the same settings.
test-browser: hub-setup $(CHROMIUM)
	@$(MAKE) --no-print-directory site QUICK=1
	@echo "browser screenshots: $(abspath $(BROWSER_SCREENSHOTS))"
	@GD_QUICK=1 GD_BROWSER_REQUIRED=1 GD_CHROMIUM=$(CHROMIUM) GD_BROWSER_SCREENSHOTS=$(abspath $(BROWSER_SCREENSHOTS)) \
		GD_SITE_DIR=$(abspath $(SITE_OUT)) GD_SITE_HUB_URL="$(SITE_HUB)" GD_SITE_REPOSITORY="$(SITE_REPO)" GD_SITE_BRANCH="$(SITE_BRANCH)" \
		$(PY) -m pytest -m browser -s $(BROWSER_TESTS) $(PYTEST_ARGS); rc=$$?; \
	echo "browser screenshots in $(abspath $(BROWSER_SCREENSHOTS)):"; \
	find $(abspath $(BROWSER_SCREENSHOTS)) -name '*.png' 2>/dev/null | sort | sed 's|^$(abspath $(BROWSER_SCREENSHOTS))/|  |'; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

clean:
	rm -rf out build *.egg-info .pytest_cache
