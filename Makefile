# Two entry points for a fresh clone with only python3:  `make serve`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 5006

.PHONY: serve test test-load test-fast bench browser weights figures clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test,notebook]"
	touch $@

serve: $(STAMP)  ## run the app at http://localhost:$(PORT)/explorer
	$(BIN)/panel serve explorer --port $(PORT) --allow-websocket-origin=localhost:$(PORT)

browser:  ## Debian's chromium for the browser tests (needs root; never downloads a browser build)
	@command -v chromium >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -q && apt-get install -y -q chromium) >/dev/null; } || \
	  echo "chromium not installed: browser tests will be skipped"

test: $(STAMP) browser  ## the whole suite, as CI runs it
	$(BIN)/python -m pytest -q --timeout=600

test-load: $(STAMP) browser  ## the browser load test (8 sessions for 60 s) and the session-memory test (about 3.5 min)
	PRUNESCOPE_LOAD_TESTS=1 $(BIN)/python -m pytest -q --timeout=900 tests/ui/test_load_browser.py

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not ui and not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/latency.py
	$(BIN)/python benchmarks/models.py
	$(BIN)/python benchmarks/kernels.py
	$(BIN)/python benchmarks/app_startup.py

weights: $(STAMP)  ## retrain the shipped sample-model weights (deterministic, CPU)
	$(BIN)/python -m prunescope.sample_models.train --all

figures: $(STAMP)  ## regenerate docs/figures and docs/gallery.md (headless)
	$(BIN)/python -m prunescope.explorer.figures.gallery

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
