# hashkit: `make demo` sets everything up and runs the main job on Fashion-MNIST;
# `make test` sets everything up and runs the linters and the test suite.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data browser demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,milvus,serve]'
	touch $@

# Fashion-MNIST from Debian's package when it is missing and we may install it.
data:
	@if [ -n "$$HASHKIT_DATA" ] || ls $(FASHION_MNIST)/train-images-idx3-ubyte* >/dev/null 2>&1; then \
	  echo "Fashion-MNIST: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -q && apt-get install -y -q dataset-fashion-mnist; \
	else \
	  echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (Debian)," \
	       "or put its four IDX files in a folder and set HASHKIT_DATA to that folder" >&2; \
	  exit 1; \
	fi

# Debian's chromium and its chromedriver for the page's browser test (Selenium uses them as they
# are; nothing is downloaded at test time).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
	  echo "chromium and chromedriver: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -q && apt-get install -y -q chromium chromium-driver; \
	else \
	  echo "the browser test needs chromium and chromedriver: run" \
	       "'sudo apt-get install chromium chromium-driver' (Debian)" >&2; \
	  exit 1; \
	fi

demo: setup data
	$(BIN)/hashkit train --data fashion-mnist --bits 32 --out $(DEMO)/model.pt
	$(BIN)/hashkit export-images --data fashion-mnist --part query --out $(DEMO)/images
	$(BIN)/hashkit export-images --data fashion-mnist --part database --out $(DEMO)/images
	$(BIN)/hashkit build-index $(DEMO)/images/database $(DEMO)/index.faiss --model $(DEMO)/model.pt
	$(BIN)/hashkit search $(DEMO)/index.faiss $$(find $(DEMO)/images/query -name '*.png' | sort | head -n 1) -k 10
	$(BIN)/hashkit search $(DEMO)/index.faiss $$(find $(DEMO)/images/database -name '*.png' | sort | head -n 1) -k 5
	$(BIN)/hashkit bench --bits 32 --model $(DEMO)/model.pt --out $(DEMO)/bench
	@echo "demo done: model $(DEMO)/model.pt, index $(DEMO)/index.faiss, report $(DEMO)/bench/bench.md"
	@echo "search it in a browser: $(BIN)/hashkit serve $(DEMO)/index.faiss  (then open http://127.0.0.1:8000/)"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint browser
	$(BIN)/pytest

clean:
	rm -rf $(VENV) $(DEMO)
