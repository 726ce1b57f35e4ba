# The two commands of the README are `make demo` and `make test`; both set up .venv first.
VENV   ?= .venv
PYTHON ?= python3
STAMP  := $(VENV)/.installed-stamp

export BENTOML_DO_NOT_TRACK := True
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false
# glibc keeps large tensor buffers instead of returning them to the OS on every free (see README, "CPU speed").
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 68719476736

.PHONY: setup demo test lint bench clean browser

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev,spark]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/journey demo

lint: setup
	$(VENV)/bin/ruff check .

# The dashboard's browser test drives Debian's chromium; install it where it is missing (root or sudo). Without it
# (no apt, no rights) the test is skipped with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing chromium for the dashboard's browser test (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null ) \
	  || echo "chromium not installed: tests/integration/test_dashboard_browser.py will be skipped"; }

test: setup lint browser
	$(VENV)/bin/pytest -q

bench: setup
	$(VENV)/bin/python benchmarks/bench_prepare.py

clean:
	rm -rf work .pytest_cache .ruff_cache
