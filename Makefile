# The commands a new user needs: `make demo`, `make app` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_RUN := demo_out/run
BROWSER_PACKAGES := chromium chromium-driver

.PHONY: demo app test bench venv browser clean

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,beam,app,sweep]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m fashion_tf.demo

# Serves the run `make demo` wrote on http://127.0.0.1:8501/ (ARGS="--port 8600" etc. passes more options).
app: $(STAMP)
	@test -d $(DEMO_RUN) || { echo "$(DEMO_RUN) not found: run 'make demo' first (about 7 minutes on 2 CPU cores)"; exit 2; }
	$(PY) -m fashion_tf.app --run-dir $(DEMO_RUN) $(ARGS)

# The browser tests need Chromium and chromedriver: installed here where apt-get runs as root (Debian/Ubuntu);
# elsewhere nothing is tried and those tests skip, saying why (FASHION_TF_REQUIRE_BROWSER=1 makes that a failure).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(BROWSER_PACKAGES) for the browser tests (apt-get)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null 2>&1; } || \
		echo "could not install $(BROWSER_PACKAGES): the browser tests will skip"; \
	fi

test: $(STAMP) browser
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf demo_out runs .pytest_cache
