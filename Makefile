# StellarChat: `make run` to chat, `make test` to check. Both install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# `make run` is a local run on loopback: debug on unless you say otherwise (production sets
# DJANGO_DEBUG=0 with a real DJANGO_SECRET_KEY; see README).
RUN_ENV := DJANGO_DEBUG=$${DJANGO_DEBUG:-1}

.PHONY: run test install install-dev browser lint format migrate clean audit

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements.txt
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Browser tests drive Debian's Chromium (never a browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; \
	  else echo "!!! chromium is missing: sudo apt-get install -y chromium (browser tests will skip)"; fi; }

migrate: install
	$(RUN_ENV) $(BIN)/python manage.py migrate --noinput

run: migrate
	@echo ""
	@echo "  StellarChat is starting on http://$(HOST):$(PORT)/"
	@echo "  Create your account at http://$(HOST):$(PORT)/accounts/signup/"
	@echo "  (sign-up off? make an account with: $(BIN)/python manage.py createsuperuser)"
	@echo ""
	$(RUN_ENV) exec $(BIN)/daphne -b $(HOST) -p $(PORT) stellarchat.asgi:application

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Known vulnerabilities in the pinned requirements, from PyPI's advisory data (the same
# database as OSV). --no-deps/--disable-pip: the files are fully pinned, so nothing is
# resolved or installed (no torch download); --strict: a package that cannot be checked
# fails the audit instead of passing unchecked. AUDIT_IGNORE="--ignore-vuln ID ..." with a
# comment here saying why, only for advisories without a fixed release.
AUDIT_IGNORE ?=
audit: install-dev
	$(BIN)/pip-audit --strict --no-deps --disable-pip --progress-spinner off \
	  --vulnerability-service pypi $(AUDIT_IGNORE) \
	  --requirement requirements.txt --requirement requirements-dev.txt

test: install-dev browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DJANGO_DEBUG=1 $(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
